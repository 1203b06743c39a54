"""Rule latency_run: the latency trials after one search (docs/latency.md): an idle rate,
10, 50 and 90 % of its PDR and its NDR (xdplab.latency.plan, from the search's lower
bounds), each a normal trial of latency_trial_s seconds, run in this process as the search's
trials are (xdplab.steps.inprocess), on the search's testbed when a pool has several
(xdplab.steps.pooled).  Writes the plan with its trials, latency.json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import latency, steps  # noqa: E402
from xdplab.ndr import trial_point  # noqa: E402
from xdplab.config import validate_config  # noqa: E402
from xdplab.steps.pooled import job_testbed, program_of  # noqa: E402


def goal_rates(search: dict) -> tuple:
    """(PDR, NDR) in packets/s, the lower bounds of the search's first goal with a loss
    ratio above 0 and of its goal with loss ratio 0 (None where a goal is absent or found no bound)."""
    goals = search["result"]["goals"]
    ndr = next((g["lower_bound_pps"] for g in goals if g["loss_pct"] == 0), None)
    pdr = next((g["lower_bound_pps"] for g in goals if g["loss_pct"] > 0), None)
    return pdr, ndr


def run(sm, log):
    search = steps.read_json(sm.input.search)
    base = dict(sm.params.base)
    settings = validate_config(sm.config).values
    pdr, ndr = goal_rates(search)
    entries = latency.plan(pdr, ndr)
    todo = [e for e in entries if e["target_pps"] is not None]
    out_dir = Path(sm.output.plan).parent

    def say(line):
        log(line)
        print(f"xdplab: latency, {base['packet_size']} B payload: {line}", file=sys.stderr, flush=True)

    # With a pool: the testbed the search ran on (its PDR is that testbed's), when free.
    with job_testbed(sm, settings, str(out_dir / "connectivity.json"), log, search.get("testbed_name")) as tb:
        say(f"PDR {pdr} pps, NDR {ndr} pps: " + ", ".join(f"{e['load']} {e['target_pps']} pps" for e in todo)
            + f", {sm.params.duration_s} s each" + (f", on testbed {tb.name}" if tb.name else ""))
        points = [trial_point(base, e["target_pps"], sm.params.duration_s) for e in todo]
        if todo:
            tb.ready(points[0], program_of(sm.input))
        for e, point in zip(todo, points):
            summary, info = tb.run(point, 0)
            e["trial"] = info["trial"]
            say(f"{e['load']}: {e['target_pps']} pps: p50 {summary.get('latency_p50_us')} us, "
                f"p99 {summary.get('latency_p99_us')} us, lost {summary.get('lost')}"
                + (" [cached]" if info["cached"] else ""))
    steps.write_json(sm.output.plan, {"search": sm.wildcards.search, "settings": base, "testbed_name": tb.name,
                                      "duration_s": sm.params.duration_s, "trials": entries})


steps.run_step(snakemake, run)
