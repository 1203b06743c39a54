"""Rule verify_capture: stop tcpdump, fetch the capture, check it against the generator's sequence."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab.steps import machinery, results  # noqa: E402

machinery.run_step(snakemake, lambda sm, log: results.verify_capture(
    sm.params.trial, sm.params.settings, sm.input.arm, sm.input.generator, sm.input.connectivity,
    sm.output.capture, log))
