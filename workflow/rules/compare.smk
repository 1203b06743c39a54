# Comparing programs under test (A/B), when `program` lists two or more: each program
# against the first one configured, per grid point and metric (workflow/xdplab/compare.py):
# the difference of means with its 95 % confidence interval, the test of significance and
# a one-line verdict, as compare.csv / .md / .tex, and a figure.  Trials of the programs
# run interleaved in the seeded random order, like every grid dimension.

COMPARE_DIR = f"{RESULTS}/compare"


rule compare:
    input:
        csv=rules.aggregate.output.csv,
    output:
        csv=report(
            f"{COMPARE_DIR}/compare.csv",
            caption="../report/compare.rst",
            category=REPORT_CATEGORY,
            subcategory="Programs compared",
        ),
        md=f"{COMPARE_DIR}/compare.md",
        tex=f"{COMPARE_DIR}/compare.tex",
        svg=report(
            f"{COMPARE_DIR}/compare.svg",
            caption="../report/compare.rst",
            category=REPORT_CATEGORY,
            subcategory="Programs compared",
        ),
        png=f"{COMPARE_DIR}/compare.png",
        pdf=f"{COMPARE_DIR}/compare.pdf",
    log:
        f"{RESULTS}/logs/compare.log",
    params:
        programs=SETTINGS["program"],
    script:
        "../scripts/compare.py"


# What `all` adds for a comparison: nothing with one program.
COMPARE_TARGETS = rules.compare.output if len(SETTINGS["program"]) > 1 else []
