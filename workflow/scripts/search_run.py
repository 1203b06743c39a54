"""Rule search_run: one search (RFC 9971, MLRsearch) run to its end in this job, each trial
run in this process by the trial rules' steps (xdplab.steps.inprocess) and chosen by FD.io
CSIT's controller (xdplab.mlr).  With a pool of testbeds, on one testbed of it held for the
whole search, never above that testbed's calibrated source ceiling (xdplab.steps.pooled).
Writes the search's record, search.json."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import mlr, ndr, steps  # noqa: E402
from xdplab.config import validate_config  # noqa: E402
from xdplab.frames import frame_bytes  # noqa: E402
from xdplab.steps.pooled import job_testbed, program_of  # noqa: E402


def run(sm, log):
    p = mlr.Params(**{k: v for k, v in sm.params.mlr.items() if k != "goals"},
                   goals=tuple(mlr.Goal(**g) for g in sm.params.mlr["goals"]))
    if p.problems():   # before the testbed is touched
        raise steps.StepError("invalid configuration for snakemake search:\n  " + "\n  ".join(p.problems()))
    base = dict(sm.params.base)
    if ndr.unsearchable(base):   # no counts at XDP: every trial would pass
        raise steps.StepError(f"xdplab: search {sm.wildcards.search}: {ndr.unsearchable(base)}")
    settings = validate_config(sm.config).values
    out_dir = Path(sm.output.record).parent
    size = f"{base['packet_size']} B payload ({frame_bytes(base['packet_size'])} B frames)"

    def say(line):
        log(line)
        print(f"xdplab: search, {size}: {line}", file=sys.stderr, flush=True)

    started = time.monotonic()
    # With a pool: a testbed of it (the point's own with testbed_as_dimension), held for
    # the whole search, whose calibrated source ceiling caps Max Load.
    with job_testbed(sm, settings, str(out_dir / "connectivity.json"), log, base.get("testbed_name")) as tb:
        ceiling = tb.ready(ndr.trial_point(base, p.min_pps, 1), program_of(sm.input))
        goals = ", ".join(f"{g.name} (loss <= {g.loss_pct:g} %)" for g in p.goals)
        where = f" on testbed {tb.name}" if tb.name else ""
        say(f"{goals} between {p.min_pps} and {p.max_pps} pps, width {p.goals[0].width_pct:g} %{where}")
        result = mlr.search(p, lambda pps, duration_s, rep: tb.run(ndr.trial_point(base, pps, duration_s), rep), say,
                            source_ceiling_pps=ceiling and ceiling["ceiling_pps"])
        measured = list(tb.seq.timings)
    wall = round(time.monotonic() - started, 3)
    for g in result["goals"]:
        bounds = (f"lower bound {g['lower_bound_pps']} pps, upper bound {g['upper_bound_pps']} pps, "
                  f"conditional throughput {g['conditional_throughput_pps']} pps")
        say(f"{g['goal']}: {bounds}; {g['result']}" + (f" ({g['irregular_why']})" if g["irregular_why"] else ""))
    steps.write_json(sm.output.record, {
        "search": sm.wildcards.search, "settings": base, "params": sm.params.mlr, "result": result,
        "testbed_name": tb.name, "source_ceiling": ceiling,
        "wall_s": wall, "timings": measured, "method": "RFC 9971 MLRsearch, FD.io CSIT's controller MLRsearch 1.2.1"})


steps.run_step(snakemake, run)
