"""Checkpoint ndr_step: one step of a zero-loss search.  Reads the previous step and the
trial it asked for, adds that trial to the search's history, and decides the next trial
(its point, so that the trial rules run it) or the result (workflow/xdplab/ndr.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import ndr, steps  # noqa: E402
from xdplab.frames import frame_bytes, mbps  # noqa: E402


def describe(search: dict, n: dict | None, result: dict | None, lo_hi: str) -> str:
    size = f"{search['packet_size']} B payload ({frame_bytes(search['packet_size'])} B frames)"
    if n is not None:
        what = "probe" if n["kind"] == ndr.PROBE else "long trial (confirmation)"
        return f"xdplab: zero-loss search, {size}: next, a {what} at {n['pps']} pps for {n['duration_s']} s{lo_hi}"
    if result["ndr_pps"] is None:
        return (f"xdplab: zero-loss search, {size}: no rate passed, down to {result['fail_pps']} pps "
                f"(limited by {result['limited_by']})")
    rates = (f"{mbps(result['ndr_pps'], search['packet_size'], 2):,.1f} Mbit/s L2, "
             f"{mbps(result['ndr_pps'], search['packet_size'], 1):,.1f} Mbit/s L1")
    return (f"xdplab: zero-loss search, {size}: {result['ndr_pps']} pps ({rates}), confirmed over "
            f"{result['confirm_s']} s ({result['confirm_sent']} sent, {result['confirm_lost']} lost); "
            f"limited by {result['limited_by']}")


def bounds(history: list[dict]) -> str:
    passed = [e["pps"] for e in history if e["outcome"] == ndr.PASS]
    failed = [e["pps"] for e in history if e["outcome"] != ndr.PASS]
    parts = ([f"passed up to {max(passed)}"] if passed else []) + ([f"failed from {min(failed)}"] if failed else [])
    return f" ({', '.join(parts)} pps so far)" if parts else ""


def step(sm, log):
    p = ndr.Params(**sm.params.ndr)
    search = sm.params.search
    k = int(sm.wildcards.k)
    history = []
    if k == 0 and ndr.unsearchable(search):
        raise steps.StepError(f"xdplab: zero-loss search {sm.wildcards.search}: {ndr.unsearchable(search)}")
    if k > 0:
        previous = steps.read_json(sm.input.previous)
        asked = previous["next"]
        trial = steps.read_json(sm.input.trial)
        summary = trial["summary"]
        if summary.get("point") not in (None, asked["point"]):
            raise steps.StepError(f"{sm.input.trial} is the trial of {summary.get('point')}, "
                                  f"not of {asked['point']} as step {k - 1} asked")
        e = ndr.entry(asked["kind"], asked["pps"], asked["duration_s"], summary, p.loss_pct)
        e.update(point=asked["point"], trial=str(Path(sm.input.trial).parent), step=k - 1)
        log(f"step {k - 1}'s trial: {asked['kind']} at {e['pps']} pps for {e['duration_s']} s: "
            f"sent {e['sent']}, lost {e['lost']} ({e['loss_pct']} %), rate sustained "
            f"{e['rate_sustained']}: {e['outcome']}")
        history = previous["history"] + [e]
    decision = ndr.decide(p, history)
    n = decision["next"]
    if n is not None:
        n["point"] = ndr.trial_point(search, n["pps"], n["duration_s"])
    line = describe(search, n, decision["result"], bounds(history))
    log(line)
    print(line, file=sys.stderr, flush=True)
    steps.write_json(sm.output.step, {
        "search": sm.wildcards.search, "step": k, "params": p.as_dict(),
        "settings": search, "history": history, "next": n, "result": decision["result"]})


steps.run_step(snakemake, step)
