"""Rule latency_table: latency at fractions of the found rate (docs/latency.md), one row
per load of each search (latency.csv, and latency.md to read), from the searches'
latency plans (results/<exp>/search/<search>/latency.json) and their trials' trial.json."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import atomic, latency, steps  # noqa: E402


def as_list(v) -> list:
    return [v] if isinstance(v, str) else list(v)


def trial_json(entry: str, plan_path: str) -> Path | None:
    """A plan's trial (results/<exp>/trials/<point>/rep~0, relative to the working directory;
    or <point>/rep~0, relative to the experiment's trials/; or the trial.json itself)."""
    p = Path(entry)
    experiment = Path(plan_path).resolve().parents[2]          # <exp>/search/<search>/latency.json
    for d in (p, experiment / p, experiment / "trials" / p):
        f = d if d.name == "trial.json" else d / "trial.json"
        if f.is_file():
            return f
    return None


def table(sm, log):
    preflight = getattr(sm.input, "preflight", None)
    clock = steps.read_json(preflight).get("clock") if preflight else None
    rows = []
    for path in as_list(sm.input.plan):
        plan = steps.read_json(path)
        trials = {}
        for e in plan.get("trials") or []:
            if e.get("trial"):
                f = trial_json(e["trial"], path)
                trials[e["trial"]] = json.loads(f.read_text()) if f else None
                if f is None:
                    log(f"{plan.get('search')}: {e.get('load')}: no trial.json under {e['trial']}")
        rows += latency.plan_rows(plan, trials, clock)
    rows.sort(key=latency.sort_key)
    atomic.write_csv(sm.output.csv, latency.COLUMNS, rows)
    experiment = getattr(sm.params, "experiment", None)
    title = f"xdplab experiment `{experiment}`: latency at fractions of the found rate" if experiment else None
    atomic.write_text(sm.output.md, latency.table(rows, title))
    na = sum(1 for r in rows if r["p50_us"] is None)
    log(f"{len(rows)} load(s) of {len(as_list(sm.input.plan))} search(es), {na} without a latency -> {sm.output.csv}")


steps.run_step(snakemake, table)
