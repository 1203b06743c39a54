# The experiment's figures, for `snakemake --report` and for a paper: the summary figure
# (summary.svg, the one `make run` and the README show), the figures over the grid
# (figures/*.svg and .png: mean over repeats with its 95 % CI, the numbers of points.csv;
# and each as a one- and a two-column paper figure, figures/*.1col.pdf and *.2col.pdf, about
# 0.5 s each here, mostly fontTools subsetting the embedded font),
# and one time-series figure per trial (timeseries.svg), next to its timeseries.csv.


FIGURE_DIR = f"{RESULTS}/figures"


# One job draws them all: matplotlib's import alone costs about a second, so a job per
# figure (or per trial) would add that much to every trial of a sweep.
rule figures:
    input:
        csv=rules.aggregate.output.csv,
        timeseries=[f"{d}/timeseries.csv" for d in TRIAL_DIRS],
    output:
        svg=report(
            f"{RESULTS}/summary.svg",
            caption="../report/summary.rst",
            category=REPORT_CATEGORY,
            subcategory="Summary figure",
        ),
        png=f"{RESULTS}/summary.png",
        # {name}_svg / _png / _1col / _2col for each name of xdplab.figures.FIGURES
        rate_svg=report(
            f"{FIGURE_DIR}/achieved_vs_offered.svg",
            caption="../report/fig_rate.rst",
            category=REPORT_CATEGORY,
            subcategory="Figures",
        ),
        rate_png=f"{FIGURE_DIR}/achieved_vs_offered.png",
        rate_1col=f"{FIGURE_DIR}/achieved_vs_offered.1col.pdf",
        rate_2col=f"{FIGURE_DIR}/achieved_vs_offered.2col.pdf",
        loss_svg=report(
            f"{FIGURE_DIR}/loss_vs_offered.svg",
            caption="../report/fig_loss.rst",
            category=REPORT_CATEGORY,
            subcategory="Figures",
        ),
        loss_png=f"{FIGURE_DIR}/loss_vs_offered.png",
        loss_1col=f"{FIGURE_DIR}/loss_vs_offered.1col.pdf",
        loss_2col=f"{FIGURE_DIR}/loss_vs_offered.2col.pdf",
        xdp_cost_svg=report(
            f"{FIGURE_DIR}/xdp_ns_vs_size.svg",
            caption="../report/fig_xdp_cost.rst",
            category=REPORT_CATEGORY,
            subcategory="Figures",
        ),
        xdp_cost_png=f"{FIGURE_DIR}/xdp_ns_vs_size.png",
        xdp_cost_1col=f"{FIGURE_DIR}/xdp_ns_vs_size.1col.pdf",
        xdp_cost_2col=f"{FIGURE_DIR}/xdp_ns_vs_size.2col.pdf",
        latency_svg=report(
            f"{FIGURE_DIR}/latency_vs_offered.svg",
            caption="../report/fig_latency.rst",
            category=REPORT_CATEGORY,
            subcategory="Figures",
        ),
        latency_png=f"{FIGURE_DIR}/latency_vs_offered.png",
        latency_1col=f"{FIGURE_DIR}/latency_vs_offered.1col.pdf",
        latency_2col=f"{FIGURE_DIR}/latency_vs_offered.2col.pdf",
        # each trial's time series, next to its timeseries.csv: SVG only (any browser shows
        # it; a PNG too would add ~0.06 s per trial to every run's figures job)
        timeseries_svg=[
            report(
                f"{d}/timeseries.svg",
                caption="../report/timeseries.rst",
                category=REPORT_CATEGORY,
                subcategory="Time series per trial",
                labels={"trial": d.split("/trials/", 1)[1]},
            )
            for d in TRIAL_DIRS
        ],
    log:
        f"{RESULTS}/logs/figures.log",
    params:
        experiment=EXP,
    script:
        "../scripts/figures.py"
