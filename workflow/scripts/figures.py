"""Rule figures: the experiment's summary figure (SVG for papers, PNG for a quick look)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import figures, steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: figures.plot_summary(
    sm.input.csv, [sm.output.svg, sm.output.png], sm.params.experiment))
