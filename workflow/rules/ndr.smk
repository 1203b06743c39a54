# The zero-loss rate search (RFC 2544 throughput): `snakemake --cores 1 ndr --config ...`.
# One search per payload size (and attach mode, collector, pattern); the logic is in
# workflow/xdplab/ndr.py, the method in docs/ndr.md.
#
# Each step of a search is a checkpoint, results/<exp>/ndr/<search>/step~<k>.json: it reads
# the previous step and the trial that step asked for, and decides the next trial (or ends
# the search).  Each trial is a normal trial of the trial rules (trials/<point>/rep~0, its
# duration ndr_probe_s or ndr_confirm_s in its point's name), so it is cached like any
# other: a finished search reruns nothing, and a grid trial at the same point is reused.


include: "ndr_common.smk"


wildcard_constraints:
    search=ndr_search.SEARCH_PATTERN,
    k=r"\d+",


checkpoint ndr_step:
    input:
        unpack(ndr_step_input),
    output:
        step=f"{NDR_DIR}/step~{{k}}.json",
    log:
        f"{NDR_DIR}/logs/step~{{k}}.log",
    params:
        search=ndr_base,
        ndr=NDR_PARAMS.as_dict(),
    script:
        "../scripts/ndr_step.py"


rule ndr_table:
    input:
        steps=lambda wildcards: [ndr_last_step(s) for s in NDR_SEARCHES],
    output:
        csv=report(
            f"{RESULTS}/ndr.csv", caption="../report/ndr.rst", category=REPORT_CATEGORY, subcategory="Zero-loss rate"
        ),
        probes=f"{RESULTS}/ndr_probes.csv",
        md=f"{RESULTS}/ndr.md",
    log:
        f"{RESULTS}/logs/ndr_table.log",
    params:
        experiment=EXP,
    script:
        "../scripts/ndr_table.py"


rule ndr_figure:
    input:
        csv=rules.ndr_table.output.csv,
        probes=rules.ndr_table.output.probes,
    output:
        svg=report(
            f"{RESULTS}/ndr.svg", caption="../report/ndr.rst", category=REPORT_CATEGORY, subcategory="Zero-loss rate"
        ),
        png=f"{RESULTS}/ndr.png",
    log:
        f"{RESULTS}/logs/ndr_figure.log",
    params:
        experiment=EXP,
    script:
        "../scripts/ndr_figure.py"


rule ndr:
    input:
        rules.ndr_table.output.csv,
        rules.ndr_figure.output.svg,
        rules.ndr_figure.output.png,
