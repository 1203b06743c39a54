"""Rule figures: the experiment's summary figure, the figures over the grid (mean and 95 %
CI per point), each as SVG and PNG for the report, and each trial's time series (SVG).  One
job for all of them (matplotlib is imported once, and only if a figure must be drawn: one
whose inputs did not change is its copy, xdplab.figurecache)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import figurecache, steps  # noqa: E402


def figures():
    from xdplab import figures   # matplotlib: ~0.8 s

    return figures


def draw(sm, log):
    csv, exp = sm.input.csv, sm.params.experiment
    drawn = []
    summary = [sm.output.svg, sm.output.png]
    if figurecache.draw_if_changed([csv], summary, exp, lambda: figures().plot_summary(csv, summary, exp)):
        drawn += summary
    # The grid's figures, by the names of xdplab.figures.FIGURES: outputs {name}_svg, {name}_png.
    for name in [k[:-len("_png")] for k in sm.output.keys() if k.endswith("_png")]:
        paths = [sm.output[f"{name}_svg"], sm.output[f"{name}_png"]]
        if figurecache.draw_if_changed([csv], paths, f"{name} {exp}",
                                       lambda: figures().plot_figures(csv, {name: paths}, exp)):
            drawn += paths
    log("drew " + (", ".join(drawn) if drawn else "no figure of the experiment: its summary.csv is unchanged"))
    new = 0
    for ts, svg in zip(sm.input.timeseries, sm.output.timeseries_svg):
        title = f"xdplab trial {str(Path(ts).parent).split('/trials/', 1)[-1]}"
        new += figurecache.draw_if_changed([ts], [svg], title, lambda: figures().plot_timeseries(ts, [svg], title))
    log(f"drew the time series of {new} trial(s), kept {len(sm.input.timeseries) - new} unchanged (timeseries.svg)")


steps.run_step(snakemake, draw)
