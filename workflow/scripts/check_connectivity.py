"""Rule check_connectivity: bring the testbed up (or take a lab's hosts), then the agent's
health, SSH to every source, a ping over each test link."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: steps.check_connectivity(
    steps.bring_up(dict(sm.params.testbed), log), sm.output.connectivity, log))
