"""Rule check_connectivity: bring the testbed up (or take a lab's hosts), then the agent's
health, SSH to every source, a ping over each test link.  The first check of an
invocation also records each host's environment for the archive; the later ones (one
before each trial) see that each source's SSH server answers, and keep what the first
found of the sources (xdplab.steps.connectivity)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import preflight, trials  # noqa: E402
from xdplab.config import validate_config  # noqa: E402
from xdplab.steps import connectivity, machinery  # noqa: E402


def check(sm, log):
    # A lab's credentials, what the pre-flight checks against (the run's rates and sizes) and
    # where its record goes are read from the configuration, not rule parameters: a change
    # would rerun the check and every trial after it (common.smk, testbed.smk).
    settings = validate_config(sm.config).values
    desc = connectivity.bring_up(trials.lab_with_credentials(dict(sm.params.testbed), sm.config), log)
    connectivity.check_connectivity(desc, sm.output.connectivity, log, sources_record=sm.params.sources,
                                    preflight_run=preflight.run_settings(settings),
                                    preflight_record=preflight.record_path(settings),
                                    compile_meanwhile=connectivity.collector_builds(settings))
    connectivity.record_environment_once(desc, sm.params.environment, log)


machinery.run_step(snakemake, check)
