"""What a search costs between its trials, and how long an NDR+PDR search takes (issue 20;
figures, no assertions).  Runs the snakemake command line on the embedded testbed in a
copy of the repository.

    .venv/bin/python benchmarks/bench_search.py [--json FILE] [--skip rules,search]

Both searches run under the same cap: a tbf qdisc on the source interface that lets
2,000 packets/s of 1458-byte payloads through (24 Mbit/s), the UDP send path (the packet
path bypasses the qdisc), 1 s trials, no warm-up, no pcap or feature records kept.

1. The probe overhead: for every two consecutive trials of a search, the time from the end
   of one trial's traffic to the start of the next one's (the generator's own timestamps,
   start_unix_ns and end_unix_ns in generator.json): everything a search does between
   trials (deciding, arming, launching the generator, checking the capture, closing the
   books).  Median and 90th percentile, for `snakemake search` (its trials run in one job,
   xdplab.steps.inprocess) and, in the same run, for `snakemake ndr` (each trial five rule
   jobs and a checkpoint).  Goal: <= 0.5 s.  The search's per-step time (median over its
   trials) says where the overhead goes.
2. The wall time of the NDR+PDR search at 0.5 % width for one frame size (1504 B), from
   snakemake's start to its end, testbed up and collector built beforehand.  Goal: < 150 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workflow import SNAKEMAKE, copy_repo, env, testbed_down  # noqa: E402

SRC_NS, SRC_IF = "xdplab-src", "xl-src0"
GOAL_OVERHEAD_S, GOAL_SEARCH_S = 0.5, 150.0
COMMON = ["packet_size=1458", "ndr_min_pps=500", "ndr_max_pps=8000", "warmup_s=0", "keep_pcap=false",
          "keep_features=false", "threads=1", "send_path=udp", "keep_testbed=true"]


def snakemake(workdir: Path, target: str, *config: str) -> float:
    t0 = time.monotonic()
    r = subprocess.run([str(SNAKEMAKE), "--cores", "1", target, "--config", *config], cwd=workdir,
                       env=env(workdir), capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"snakemake {target} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return time.monotonic() - t0


def gaps(trial_dirs: list[Path]) -> list[float]:
    """Seconds from the end of each trial's traffic to the start of the next one's."""
    spans = []
    for d in trial_dirs:
        src = json.loads((d / "generator.json").read_text())["sources"][0]
        spans.append((src["start_unix_ns"] - int((src.get("warmup_s") or 0) * 1e9), src["end_unix_ns"]))
    return [(b[0] - a[1]) / 1e9 for a, b in zip(spans, spans[1:])]


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {"n": len(v), "median_s": round(statistics.median(v), 3), "p90_s": round(v[int(0.9 * (len(v) - 1))], 3),
            "max_s": round(v[-1], 3)}


def search_run(workdir: Path) -> dict:
    wall = snakemake(workdir, "search", "experiment=bench-search", *COMMON)
    (record,) = (workdir / "results/bench-search/search").glob("*/search.json")
    rec = json.loads(record.read_text())
    trials = [workdir / t["trial"] for t in rec["result"]["trials"] if not t.get("cached")]
    steps = {}
    for t in rec["timings"]:
        for k, v in t["steps_s"].items():
            steps.setdefault(k, []).append(v)
    goals = {g["goal"]: {k: g[k] for k in ("lower_bound_pps", "upper_bound_pps", "conditional_throughput_pps",
                                             "result")} for g in rec["result"]["goals"]}
    return {"wall_s": round(wall, 1), "search_job_s": rec["wall_s"], "trials": len(rec["result"]["trials"]),
            "trial_s": sum(t["duration_s"] for t in rec["result"]["trials"]), "overhead": summary(gaps(trials)),
            "steps_median_s": {k: round(statistics.median(v), 3) for k, v in steps.items()}, "goals": goals}


def rules_run(workdir: Path) -> dict:
    wall = snakemake(workdir, "ndr", "experiment=bench-ndr", "ndr_probe_s=1", "ndr_confirm_s=1",
                     "ndr_resolution_pct=5", *COMMON)
    (last,) = [p for p in (workdir / "results/bench-ndr/ndr").glob("*/step~*.json")
               if json.loads(p.read_text())["next"] is None]
    history = json.loads(last.read_text())["history"]
    return {"wall_s": round(wall, 1), "trials": len(history),
            "overhead": summary(gaps([workdir / e["trial"] for e in history]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--skip", default="")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = copy_repo()
    out = {"goal_overhead_s": GOAL_OVERHEAD_S, "goal_search_s": GOAL_SEARCH_S}
    tb = [sys.executable, "-m", "xdplab.testbed"]
    try:
        subprocess.run([*tb, "up"], cwd=workdir, env=env(workdir), check=True, capture_output=True)
        subprocess.run(["tc", "-n", SRC_NS, "qdisc", "replace", "dev", SRC_IF, "root", "tbf", "rate", "24000kbit",
                        "burst", "6000", "limit", "12000"], check=True)
        # the collector built and the hosts checked once, as in the middle of a session
        snakemake(workdir, "all", "experiment=bench-warm", "target_pps=1000", "duration_s=1", *COMMON)
        if "search" not in skip:
            try:
                out["search"] = s = search_run(workdir)
            except SystemExit as e:   # one part failing leaves the other's figures
                out["search"] = {"error": str(e)[-2000:]}
                print(f"search failed: {str(e)[-1500:]}", flush=True)
        if "search" in out and "error" not in out["search"]:
            s = out["search"]
            print(f"search (one job): {s['trials']} trials, {s['trial_s']} s of traffic, {s['wall_s']} s wall "
                  f"(goal < {GOAL_SEARCH_S:.0f} s); between trials median {s['overhead'].get('median_s')} s, "
                  f"p90 {s['overhead'].get('p90_s')} s (goal <= {GOAL_OVERHEAD_S} s)", flush=True)
            print(f"  per step, median: {s['steps_median_s']}; goals: {s['goals']}", flush=True)
        if "rules" not in skip:
            try:
                out["rules"] = r = rules_run(workdir)
            except SystemExit as e:
                out["rules"] = r = {"error": str(e)[-2000:], "overhead": {}}
                print(f"ndr failed: {str(e)[-1500:]}", flush=True)
            if "error" not in r:
                print(f"ndr (trials as rules): {r['trials']} trials, {r['wall_s']} s wall; between trials median "
                      f"{r['overhead'].get('median_s')} s, p90 {r['overhead'].get('p90_s')} s", flush=True)
    finally:
        testbed_down(workdir)
        shutil.rmtree(workdir.parent, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
