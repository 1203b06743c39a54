"""Rule check_connectivity: the agent's health, SSH to the source, a ping over the test link."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: steps.check_connectivity(
    sm.input.testbed, sm.output.connectivity, log))
