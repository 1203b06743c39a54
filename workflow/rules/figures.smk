# The experiment's summary figure, for `snakemake --report` and for a quick look.


rule figures:
    input:
        csv=rules.aggregate.output.csv,
    output:
        svg=report(f"{RESULTS}/summary.svg", caption="../report/summary.rst", category=REPORT_CATEGORY, subcategory="Summary figure"),
        png=f"{RESULTS}/summary.png",
    params:
        experiment=EXP,
    log:
        f"{RESULTS}/logs/figures.log",
    script:
        "../scripts/figures.py"
