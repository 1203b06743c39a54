"""Rule preflight: bring the testbed up (or take a lab's hosts), check every host in full
(xdplab.steps.connectivity) and run the pre-flight check (xdplab.preflight), writing its
record; nothing else runs."""
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import trials  # noqa: E402
from xdplab.steps import connectivity, machinery  # noqa: E402


def check(sm, log):
    desc = connectivity.bring_up(trials.lab_with_credentials(dict(sm.params.testbed), sm.config), log)
    scratch = Path(sm.params.scratch)
    try:
        connectivity.check_connectivity(desc, str(scratch / "connectivity.json"), log,
                                        preflight_run=dict(sm.params.run), preflight_record=sm.params.record)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"pre-flight record: {sm.params.record}", echo=True)


machinery.run_step(snakemake, check)
