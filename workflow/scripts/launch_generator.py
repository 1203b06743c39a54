"""Rule launch_generator: upload the generator to the source host with fabric and run it."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab.steps import machinery, traffic  # noqa: E402

machinery.run_step(snakemake, lambda sm, log: traffic.launch_generator(
    sm.params.trial, sm.params.settings, sm.input.arm, sm.input.connectivity, sm.output.generator, log))
