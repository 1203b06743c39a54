"""Rule gather_results: read the agent's counters for the trial window, disarm, close the books."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab.steps import machinery, results  # noqa: E402

machinery.run_step(snakemake, lambda sm, log: results.gather_results(
    sm.params.trial, sm.params.settings, sm.input.arm, sm.input.generator, sm.input.capture,
    sm.input.connectivity, sm.output.trial, log))
