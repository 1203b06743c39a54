# The experiment packed for a paper or a colleague: `snakemake --cores 1 archive
# --config ...` writes results/<experiment>/<experiment>-<UTC date>.tar.gz from the
# finished trials of the current configuration, the tables and the figures (the paper's
# PDFs too: rule paper_figures, figures.smk).  Its
# inputs are theirs: with the trials done it runs no trial and needs no privileges.
# The hosts' environment is asked for live (the embedded testbed is up only during a
# run, or after it with keep_testbed=true; otherwise the manifest says so).
import time  # noqa: E402


rule archive:
    input:
        trials=rules.aggregate.input.trials,
        tables=rules.aggregate.output,
        figures=rules.figures.output,
        paper_figures=rules.paper_figures.output,
    output:
        archive=f"{RESULTS}/{EXP}-{time.strftime('%Y-%m-%d', time.gmtime())}.tar.gz",
    log:
        f"{RESULTS}/logs/archive.log",
    localrule: True
    params:
        experiment=EXP,
        settings=SETTINGS,
        pcaps=SETTINGS.get("archive_pcaps", False),
        repo=workflow.basedir,
    script:
        "../scripts/archive.py"
