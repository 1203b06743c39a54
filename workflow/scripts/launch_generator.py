"""Rule launch_generator: upload the generator to the source host with fabric and run it."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: steps.launch_generator(
    sm.params.trial, sm.params.settings, sm.input.arm, sm.input.connectivity, sm.output.generator, log))
