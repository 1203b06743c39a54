# The experiment's summary figure, for `snakemake --report` and for a quick look.


rule figures:
    input:
        csv=rules.aggregate.output.csv,
    output:
        svg=report(RESULTS + "/summary.svg", caption="../report/summary.rst", category="Summary"),
        png=RESULTS + "/summary.png",
    params:
        experiment=EXP,
    log:
        RESULTS + "/logs/figures.log",
    script:
        "../scripts/figures.py"
