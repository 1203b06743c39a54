"""The steps run once per trial (check_connectivity, arm_collector, launch_generator,
verify_capture, gather_results), from their rules' shell commands:

    python workflow/scripts/step.py <log> <job JSON>

(workflow/xdplab/stepjob.py says why not `script:`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import stepjob  # noqa: E402

stepjob.main(sys.argv[1:])
