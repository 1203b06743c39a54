"""Rule testbed_up: bring up the embedded two-namespace testbed (a healthy one is reused)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: steps.testbed_up(dict(sm.params.testbed), sm.output.testbed, log))
