"""Rule build_collector: compile and verify the XDP collector on the DUT; write its manifest."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab.steps import arm, machinery  # noqa: E402

machinery.run_step(snakemake, lambda sm, log: arm.build_collector(
    sm.input.source, sm.input.header, sm.input.connectivity, sm.params.port, sm.output[0], log,
    sm.params.collector))
