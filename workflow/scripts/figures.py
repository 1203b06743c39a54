"""Rule figures: the experiment's summary figure, the figures over the grid (mean and 95 %
CI per point), each as SVG and PNG for the report and as PDF for a one- and a two-column
paper figure, and each trial's time series (SVG).  One job for all of them (matplotlib is
imported once)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import figures, steps  # noqa: E402


def draw(sm, log):
    figures.plot_summary(sm.input.csv, [sm.output.svg, sm.output.png], sm.params.experiment)
    grid = {name: [sm.output[f"{name}_{kind}"] for kind in ("svg", "png", "1col", "2col")]
            for name in figures.FIGURES}
    figures.plot_figures(sm.input.csv, grid, sm.params.experiment)
    log("wrote " + ", ".join([sm.output.svg, sm.output.png] + [p for ps in grid.values() for p in ps]))
    for csv, svg in zip(sm.input.timeseries, sm.output.timeseries_svg):
        trial = str(Path(csv).parent)
        figures.plot_timeseries(csv, [svg], f"xdplab trial {trial.split('/trials/', 1)[-1]}")
    log(f"wrote the time series of {len(sm.input.timeseries)} trial(s) (timeseries.svg)")


steps.run_step(snakemake, draw)
