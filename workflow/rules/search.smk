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

from types import SimpleNamespace  # noqa: E402

from xdplab import mlr  # noqa: E402

MLR_PARAMS = mlr.Params.from_settings(SETTINGS)
SEARCHES = mlr.searches(SETTINGS, MLR_PARAMS)
SEARCH_DIR = f"{RESULTS}/search/{{search}}"


wildcard_constraints:
    search=r"size~\d+_[^/]+_mlr~[0-9a-f]{8}",


def search_base(wildcards):
    try:
        return SEARCHES[wildcards.search]
    except KeyError:
        raise WorkflowError(
            f"xdplab: {wildcards.search} is not a search of this configuration (these are: {', '.join(SEARCHES)})"
        ) from None


def search_manifest(wildcards):
    """The build the search's trials need (as manifest_of for one of its trials)."""
    base = search_base(wildcards)
    return manifest_of(SimpleNamespace(point=trials.point_name(dict(base, target_pps=1000, duration_s=1))))


SEARCH_SEQUENCE = dict(
    testbed=CONNECTIVITY_TESTBED,
    environment=f"results/build/{TESTBED_ID}/environment.json",
    sources=f"results/build/{TESTBED_ID}/sources_checked.json",
    preflight_record=PREFLIGHT_RECORD,
)


rule search_run:
    input:
        build=search_manifest,
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
