"""Rule aggregate: one row per trial into summary.csv, and a readable summary.md."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import report, steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: report.write_summary(
    sm.input.trials, sm.output.csv, sm.output.md, sm.params.experiment))
