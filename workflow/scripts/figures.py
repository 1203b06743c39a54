"""Rules figures, grid_figures and timeseries_figure: the experiment's summary figure, the
figures over the grid (mean and 95 % CI per point), and a trial's time series; each as SVG
for papers and PNG for a quick look."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import figures, steps  # noqa: E402


def draw(sm, log):
    if sm.rule == "figures":
        figures.plot_summary(sm.input.csv, [sm.output.svg, sm.output.png], sm.params.experiment)
        outs = [sm.output.svg, sm.output.png]
    elif sm.rule == "grid_figures":
        outs = {name: [sm.output[f"{name}_svg"], sm.output[f"{name}_png"]] for name in figures.FIGURES}
        figures.plot_figures(sm.input.csv, outs, sm.params.experiment)
        outs = [p for paths in outs.values() for p in paths]
    else:
        figures.plot_timeseries(sm.input.csv, [sm.output.svg, sm.output.png], sm.params.title)
        outs = [sm.output.svg, sm.output.png]
    log("wrote " + ", ".join(outs))


steps.run_step(snakemake, draw)
