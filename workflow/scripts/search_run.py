"""Rule search_run: one search (RFC 9971, MLRsearch) run to its end in this job, each trial
run in this process by the trial rules' steps (xdplab.steps.inprocess) and chosen by FD.io
CSIT's controller (xdplab.mlr).  Writes the search's record, search.json."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import mlr, ndr, preflight, steps, trials  # noqa: E402
from xdplab.config import validate_config  # noqa: E402
from xdplab.frames import frame_bytes  # noqa: E402
from xdplab.steps.inprocess import Sequence  # noqa: E402


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
    seq = Sequence(settings, f"results/{settings['experiment']}", sm.input.get("build"), sm.params.code,
                   str(out_dir / "connectivity.json"), sm.params.sequence["sources"], log)

    def say(line):
        log(line)
        print(f"xdplab: search, {size}: {line}", file=sys.stderr, flush=True)

    goals = ", ".join(f"{g.name} (loss <= {g.loss_pct:g} %)" for g in p.goals)
    say(f"{goals} between {p.min_pps} and {p.max_pps} pps, width {p.goals[0].width_pct:g} %")
    started = time.monotonic()
    try:
        seq.check(trials.lab_with_credentials(dict(sm.params.sequence["testbed"]), sm.config),
                  sm.params.sequence["environment"], preflight.run_settings(settings),
                  sm.params.sequence["preflight_record"])

        def run_trial(pps, duration_s, rep):
            return seq.run(mlr_point(base, pps, duration_s), rep)

        result = mlr.search(p, run_trial, say)
    finally:
        seq.close()
        Path(out_dir / "connectivity.json").unlink(missing_ok=True)
    wall = round(time.monotonic() - started, 3)
    for g in result["goals"]:
        bounds = (f"lower bound {g['lower_bound_pps']} pps, upper bound {g['upper_bound_pps']} pps, "
                  f"conditional throughput {g['conditional_throughput_pps']} pps")
        say(f"{g['goal']}: {bounds}; {g['result']}" + (f" ({g['irregular_why']})" if g["irregular_why"] else ""))
    measured = [t for t in seq.timings]
    steps.write_json(sm.output.record, {
        "search": sm.wildcards.search, "settings": base, "params": sm.params.mlr, "result": result,
        "wall_s": wall, "timings": measured, "method": "RFC 9971 MLRsearch, FD.io CSIT's controller MLRsearch 1.2.1"})


def mlr_point(base, pps, duration_s):
    return trials.point_name(dict(base, target_pps=int(pps), duration_s=int(duration_s)))


steps.run_step(snakemake, run)
