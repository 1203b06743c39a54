"""Rule paper_figures: the figures over the grid as PDFs sized for a one- and a two-column
paper (<stem>.1col.pdf, <stem>.2col.pdf: xdplab.figures.PAPER_WIDTHS_IN, PAPER_STYLE), drawn
only when summary.csv changed (xdplab.figurecache)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import figurecache, steps  # noqa: E402


def draw(sm, log):
    csv, exp = sm.input.csv, sm.params.experiment
    drawn = []
    # By the names of xdplab.figures.FIGURES: outputs {name}_1col, {name}_2col.
    for name in [k[:-len("_1col")] for k in sm.output.keys() if k.endswith("_1col")]:
        paths = [sm.output[f"{name}_1col"], sm.output[f"{name}_2col"]]

        def plot(paths=paths, name=name):
            from xdplab import figures   # matplotlib: ~0.8 s

            figures.plot_figures(csv, {name: paths}, exp)

        if figurecache.draw_if_changed([csv], paths, f"{name} {exp} paper", plot):
            drawn += paths
    log("drew " + (", ".join(drawn) if drawn else "no figure: summary.csv is unchanged"))


steps.run_step(snakemake, draw)
