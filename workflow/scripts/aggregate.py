"""Rule aggregate: one row per trial into summary.csv and a readable summary.md; one row per
(trial, source) and (trial, interface) into sources.csv and ifaces.csv."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import breakdown, report, steps  # noqa: E402


def aggregate(sm, log):
    report.write_summary(sm.input.trials, sm.output.csv, sm.output.md, sm.params.experiment)
    breakdown.write_breakdown(sm.input.trials, sm.output.sources, sm.output.ifaces)


steps.run_step(snakemake, aggregate)
