"""Rule aggregate: one row per trial into summary.csv, a readable summary.md and
summary.html, and the configuration as run (config.yaml); one row per (trial, source)
and (trial, interface) into sources.csv and ifaces.csv; the statistics over repeats
per grid point into points.csv, points.md and points.tex."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import breakdown, report, stats, steps  # noqa: E402


def aggregate(sm, log):
    df = report.write_summary(sm.input.trials, sm.output.csv, sm.output.md, sm.params.experiment,
                              html_out=sm.output.html, config_out=sm.output.config,
                              settings=sm.params.settings)
    breakdown.write_breakdown(sm.input.trials, sm.output.sources, sm.output.ifaces)
    # A pool's testbeds are pooled in points.csv only when the user says they are equivalent.
    settings = sm.params.settings
    stats.write_points(df, sm.output.points, sm.output.points_md, sm.output.points_tex,
                       per_testbed=bool(settings.get("testbeds")) and (
                           settings.get("testbed_as_dimension") or not settings.get("testbeds_equivalent")))


steps.run_step(snakemake, aggregate)
