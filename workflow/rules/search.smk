# The search (RFC 9971, MLRsearch): `snakemake --cores 1 search --config ...` finds NDR and
# PDR (search_loss_pct) of each payload size (and attach mode, collector, pattern) in one
# search; `snakemake --cores 1 latency` then measures latency at fractions of them.  The
# method is in docs/search.md, the logic in workflow/xdplab/mlr.py.
#
# A search is one job, search_run: the next trial depends on the last one's result, and as
# rules each trial would cost five jobs and a checkpoint, about 4 s beside its 1 s of
# traffic.  The job runs the trial rules' own steps in one process
# (workflow/xdplab/steps/inprocess.py) and writes each trial where the rules do
# (trials/<point>/rep~<n>, cached like any other).  The same holds for latency_run.


include: "search_common.smk"


wildcard_constraints:
    search=r"size~\d+_[^/]+_mlr~[0-9a-f]{8}",


rule search_run:
    input:
        unpack(search_inputs),
    output:
        record=f"{SEARCH_DIR}/search.json",
    log:
        f"{SEARCH_DIR}/logs/search_run.log",
    resources:
        testbed=1,
    params:
        base=search_base,
        mlr=MLR_PARAMS.as_dict(),
        code=TRIAL_CODE,
        sequence=SEARCH_SEQUENCE,
    script:
        "../scripts/search_run.py"


rule search_table:
    input:
        records=expand(f"{SEARCH_DIR}/search.json", search=list(SEARCHES)),
    output:
        csv=report(
            f"{RESULTS}/search.csv", caption="../report/search.rst", category=REPORT_CATEGORY, subcategory="Search"
        ),
        trials=f"{RESULTS}/search_trials.csv",
        md=f"{RESULTS}/search.md",
    log:
        f"{RESULTS}/logs/search_table.log",
    script:
        "../scripts/search_table.py"


rule search_figure:
    input:
        records=rules.search_table.input.records,
    output:
        svg=report(
            f"{RESULTS}/search.svg", caption="../report/search.rst", category=REPORT_CATEGORY, subcategory="Search"
        ),
        png=f"{RESULTS}/search.png",
    log:
        f"{RESULTS}/logs/search_figure.log",
    script:
        "../scripts/search_figure.py"


rule search:
    input:
        rules.search_table.output.csv,
        rules.search_figure.output.svg,


# Latency at fractions of the found rate (docs/latency.md): after each search, trials of
# latency_trial_s seconds at an idle rate, 10, 50 and 90 % of PDR and at NDR, run in one job
# as the search's (their rates come from its result).
rule latency_run:
    input:
        unpack(search_inputs),
        search=f"{SEARCH_DIR}/search.json",
    output:
        plan=f"{SEARCH_DIR}/latency.json",
    log:
        f"{SEARCH_DIR}/logs/latency_run.log",
    resources:
        testbed=1,
    params:
        base=search_base,
        duration_s=SETTINGS["latency_trial_s"],
        code=TRIAL_CODE,
        sequence=SEARCH_SEQUENCE,
    script:
        "../scripts/latency_run.py"


rule latency_table:
    input:
        unpack(latency_inputs),
    output:
        csv=report(
            f"{RESULTS}/latency.csv", caption="../report/latency.rst", category=REPORT_CATEGORY, subcategory="Search"
        ),
        md=f"{RESULTS}/latency.md",
    log:
        f"{RESULTS}/logs/latency_table.log",
    params:
        experiment=EXP,
    script:
        "../scripts/latency_table.py"


rule latency_figure:
    input:
        csv=rules.latency_table.output.csv,
    output:
        svg=report(
            f"{RESULTS}/latency.svg", caption="../report/latency.rst", category=REPORT_CATEGORY, subcategory="Search"
        ),
        png=f"{RESULTS}/latency.png",
    log:
        f"{RESULTS}/logs/latency_figure.log",
    script:
        "../scripts/latency_figure.py"


rule latency:
    input:
        rules.latency_table.output.csv,
        rules.latency_figure.output.svg,
