"""Rule aggregate: one row per trial into summary.csv, a readable summary.md and
summary.html, and the configuration as run (config.yaml)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import report, steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: report.write_summary(
    sm.input.trials, sm.output.csv, sm.output.md, sm.params.experiment,
    html_out=sm.output.html, config_out=sm.output.config, settings=sm.params.settings))
