"""Rule arm_collector: attach the collector, start the ring-buffer consumer and tcpdump."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab.steps import arm, machinery  # noqa: E402

machinery.run_step(snakemake, lambda sm, log: arm.arm_collector(
    sm.params.trial, sm.params.settings, sm.input.build, sm.input.connectivity, sm.output.arm, log))
