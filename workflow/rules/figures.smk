# The experiment's figures, for `snakemake --report` and for a paper: the summary figure
# (summary.svg, the one `make run` and the README show), the figures over the grid
# (figures/*.svg and .png: mean over repeats with its 95 % CI, the numbers of points.csv),
# and one time-series figure per trial (timeseries.svg), next to its timeseries.csv.
# The same grid figures sized for a one- and a two-column paper (figures/*.1col.pdf and
# *.2col.pdf) are rule paper_figures's: made for an archive (archive.smk) or when asked
# (`snakemake --cores 1 paper_figures --config ...`), not by every run: the eight PDFs took
# 3.6 s of a one-trial run's 7.7 s figures job here, half of it fontTools subsetting the
# embedded fonts (benchmarks/README.md).
# A figure whose inputs and drawing code are those of the copy kept in
# .snakemake/xdplab-figures/ is that copy, not drawn again (xdplab.figurecache): a sweep
# that grows redraws the grid, not every finished trial's time series.


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
        # {name}_svg / _png for each name of xdplab.figures.FIGURES
        rate_svg=report(
            f"{FIGURE_DIR}/achieved_vs_offered.svg",
            caption="../report/fig_rate.rst",
            category=REPORT_CATEGORY,
            subcategory="Figures",
        ),
        rate_png=f"{FIGURE_DIR}/achieved_vs_offered.png",
        loss_svg=report(
            f"{FIGURE_DIR}/loss_vs_offered.svg",
            caption="../report/fig_loss.rst",
            category=REPORT_CATEGORY,
            subcategory="Figures",
        ),
        loss_png=f"{FIGURE_DIR}/loss_vs_offered.png",
        xdp_cost_svg=report(
            f"{FIGURE_DIR}/xdp_ns_vs_size.svg",
            caption="../report/fig_xdp_cost.rst",
            category=REPORT_CATEGORY,
            subcategory="Figures",
        ),
        xdp_cost_png=f"{FIGURE_DIR}/xdp_ns_vs_size.png",
        latency_svg=report(
            f"{FIGURE_DIR}/latency_vs_offered.svg",
            caption="../report/fig_latency.rst",
            category=REPORT_CATEGORY,
            subcategory="Figures",
        ),
        latency_png=f"{FIGURE_DIR}/latency_vs_offered.png",
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


# The grid's figures for a paper: no title (the caption says it), PAPER_STYLE's type sizes,
# fonts embedded (xdplab.figures).  Its own job, so that a run does not pay for them.
rule paper_figures:
    input:
        csv=rules.aggregate.output.csv,
    output:
        # {name}_1col / _2col for each name of xdplab.figures.FIGURES
        rate_1col=f"{FIGURE_DIR}/achieved_vs_offered.1col.pdf",
        rate_2col=f"{FIGURE_DIR}/achieved_vs_offered.2col.pdf",
        loss_1col=f"{FIGURE_DIR}/loss_vs_offered.1col.pdf",
        loss_2col=f"{FIGURE_DIR}/loss_vs_offered.2col.pdf",
        xdp_cost_1col=f"{FIGURE_DIR}/xdp_ns_vs_size.1col.pdf",
        xdp_cost_2col=f"{FIGURE_DIR}/xdp_ns_vs_size.2col.pdf",
        latency_1col=f"{FIGURE_DIR}/latency_vs_offered.1col.pdf",
        latency_2col=f"{FIGURE_DIR}/latency_vs_offered.2col.pdf",
    log:
        f"{RESULTS}/logs/paper_figures.log",
    params:
        experiment=EXP,
    script:
        "../scripts/paper_figures.py"
