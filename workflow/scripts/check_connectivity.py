"""Rule check_connectivity: ping over the test link, SSH to the source, the agent's health."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: steps.check_connectivity(sm.input.testbed, sm.output[0], log))
