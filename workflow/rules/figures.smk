# The experiment's figures, for `snakemake --report` and for a paper: the summary figure
# (summary.svg, the one `make run` and the README show), the figures over the grid
# (figures/*.svg and .png: mean over repeats with its 95 % CI, the numbers of points.csv),
# and one time-series figure per trial, next to its timeseries.csv.

FIGURE_DIR = f"{RESULTS}/figures"
# Which directories hold a trial (a regular expression): the time-series rule draws
# <trial dir>/timeseries.csv of any directory it matches.  Adjust to the trial layout.
# rule all asks for them with expand(rules.timeseries_figure.output, trial_dir=[...]).
TIMESERIES_TRIAL_DIR = r"results/[^/]+/trials/.+/rep~\d+"


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


rule grid_figures:
    input:
        csv=rules.aggregate.output.csv,
    output:
        # {name}_svg / {name}_png for each name of xdplab.figures.FIGURES
        rate_svg=report(f"{FIGURE_DIR}/achieved_vs_offered.svg", caption="../report/fig_rate.rst", category=REPORT_CATEGORY, subcategory="Figures"),
        rate_png=f"{FIGURE_DIR}/achieved_vs_offered.png",
        loss_svg=report(f"{FIGURE_DIR}/loss_vs_offered.svg", caption="../report/fig_loss.rst", category=REPORT_CATEGORY, subcategory="Figures"),
        loss_png=f"{FIGURE_DIR}/loss_vs_offered.png",
        xdp_cost_svg=report(f"{FIGURE_DIR}/xdp_ns_vs_size.svg", caption="../report/fig_xdp_cost.rst", category=REPORT_CATEGORY, subcategory="Figures"),
        xdp_cost_png=f"{FIGURE_DIR}/xdp_ns_vs_size.png",
        latency_svg=report(f"{FIGURE_DIR}/latency_vs_offered.svg", caption="../report/fig_latency.rst", category=REPORT_CATEGORY, subcategory="Figures"),
        latency_png=f"{FIGURE_DIR}/latency_vs_offered.png",
    params:
        experiment=EXP,
    log:
        f"{RESULTS}/logs/grid_figures.log",
    script:
        "../scripts/figures.py"


rule timeseries_figure:
    input:
        csv="{trial_dir}/timeseries.csv",
    output:
        svg=report("{trial_dir}/timeseries.svg", caption="../report/timeseries.rst", category=REPORT_CATEGORY,
                   subcategory="Time series per trial", labels={"trial": "{trial_dir}"}),
        png="{trial_dir}/timeseries.png",
    wildcard_constraints:
        trial_dir=TIMESERIES_TRIAL_DIR,
    params:
        title=lambda wildcards: f"xdplab trial {wildcards.trial_dir}",
    log:
        "{trial_dir}/logs/timeseries_figure.log",
    script:
        "../scripts/figures.py"
