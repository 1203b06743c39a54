# Aggregate every trial of the experiment into summary.csv, summary.md, summary.html and
# the configuration as run (config.yaml); the last three and the figure (figures.smk)
# are what `snakemake --report report.html` gathers, under the experiment's name.

# The terminal shows xdplab's own lines (the workflow profile, profiles/default, quiets
# Snakemake's job banners); the log file in .snakemake/log/ keeps everything; a run with
# nothing to do prints the table again.  This adjusts Snakemake's own logging handlers:
# xdplab.snakemake_internals says what it relies on (workflow.dryrun among them).
from xdplab import snakemake_internals  # noqa: E402

snakemake_internals.tune_snakemake_logging(RESULTS, dryrun=lambda: workflow.dryrun)

REPORT_CATEGORY = f"Experiment {EXP}"


report: "../report/workflow.rst"


rule aggregate:
    input:
        trials=[f"{d}/trial.json" for d in TRIAL_DIRS],
    output:
        csv=report(
            f"{RESULTS}/summary.csv",
            caption="../report/summary_csv.rst",
            category=REPORT_CATEGORY,
            subcategory="Summary table",
        ),
        md=f"{RESULTS}/summary.md",
        sources=f"{RESULTS}/sources.csv",
        ifaces=f"{RESULTS}/ifaces.csv",
        html=report(
            f"{RESULTS}/summary.html",
            caption="../report/summary_table.rst",
            category=REPORT_CATEGORY,
            subcategory="Summary table",
        ),
        config=report(
            f"{RESULTS}/config.yaml",
            caption="../report/config.rst",
            category=REPORT_CATEGORY,
            subcategory="Configuration as run",
        ),
        points=report(
            f"{RESULTS}/points.csv",
            caption="../report/points_csv.rst",
            category=REPORT_CATEGORY,
            subcategory="Means with confidence intervals",
        ),
        points_md=f"{RESULTS}/points.md",
        points_tex=f"{RESULTS}/points.tex",
    log:
        f"{RESULTS}/logs/aggregate.log",
    params:
        experiment=EXP,
        settings=SETTINGS,
    script:
        "../scripts/aggregate.py"
