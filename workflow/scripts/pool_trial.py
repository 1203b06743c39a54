"""Rule pool_trial (workflow/rules/pool.smk): one trial of a sweep spread over a pool of
testbeds, as one job.  It takes a free testbed of the pool and readies it
(xdplab.steps.pooled: checked, the trial's program built or checked on its DUT, its source
ceiling known), and runs the trial with the trial rules' own steps in this process
(xdplab.steps.inprocess), written where the rules write it; trial.json says which testbed
ran it and when.  The testbed is free again when this process ends, however it ends."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps, trials  # noqa: E402
from xdplab.config import validate_config  # noqa: E402
from xdplab.steps.pooled import TakenTestbed, program_of  # noqa: E402


def run(sm, log):
    settings = validate_config(sm.config).values
    point, rep = sm.wildcards.point, int(sm.wildcards.rep)
    # With testbed_as_dimension the point names its testbed: that one, when it is free.
    with TakenTestbed(settings, sm.params.code, log, named=trials.parse_point(point).get("testbed_name")) as tb:
        tb.ready(point, program_of(sm.input))
        summary, _ = tb.run(point, rep)
        log(f"trial {point}/rep~{rep} on testbed {tb.name}: lost {summary.get('lost')}, "
            f"unexplained {summary.get('unexplained')}", echo=True)


steps.run_step(snakemake, run)
