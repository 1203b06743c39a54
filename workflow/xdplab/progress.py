"""What a person sees while a sweep runs: 'trial n of N', the point, and the time left.

No pandas and no SSH here: arm_collector imports this once per trial.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

# The trials of the running invocation, in order (housekeeping.write_plan, at its start).
PLAN_FILE = Path(".snakemake", "xdplab-plan.json")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {round(seconds % 3600 / 60):02d} min"


def trial_banner(n: int, total: int, point: dict, eta_s: float | None = None) -> str:
    """One line announcing a trial: 'xdplab: trial 3 of 12: 10000 pps, 1458 B payload,
    repeat 1 (about 2 min left)'.  `point` holds target_pps, packet_size and repeat (as in
    summary.csv; repeat counts from 0 and is shown from 1).  eta_s: the estimated time left
    for the whole run, including this trial; omitted when unknown."""
    parts = [f"{point['target_pps']} pps"]
    if point.get("packet_size") is not None:
        parts.append(f"{point['packet_size']} B payload")
    # the other grid settings, where they are not the defaults
    for key, default, label in (("xdp_mode", "native", "{} XDP"), ("collector", "features", "collector {}"),
                                ("pattern", "constant", "{} pattern")):
        if point.get(key) not in (None, default):
            parts.append(label.format(point[key]))
    if point.get("repeat") is not None:
        parts.append(f"repeat {int(point['repeat']) + 1}")
    left = f" (about {_duration(eta_s)} left)" if eta_s is not None and eta_s >= 0 else ""
    return f"xdplab: trial {n} of {total}: {', '.join(parts)}{left}"


def banner(trial_dir: str, trial: dict, duration_s: float) -> str | None:
    """'xdplab: trial n of N: <point> (about ... left)' for this invocation's plan (written
    at its start, housekeeping.write_plan), the time left estimated from the wall time of
    the trials it finished so far (trial.json's "wall"); None without a plan."""
    try:
        plan = json.loads(PLAN_FILE.read_text())
    except (OSError, ValueError):
        return None
    dirs = plan.get("trials") or []
    if trial_dir not in dirs:
        return None
    done = [d for d in dirs if Path(d, "trial.json").exists()]
    walls = []
    for d in done:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            w = json.loads(Path(d, "trial.json").read_text())["wall"]
            if w["gathered_unix_s"] >= plan.get("started_unix_s", 0):
                walls.append(w["gathered_unix_s"] - w["armed_unix_s"])
    per_trial = sum(walls) / len(walls) if walls else duration_s + 2.0
    return trial_banner(len(done) + 1, len(dirs), trial, (len(dirs) - len(done)) * per_trial)
