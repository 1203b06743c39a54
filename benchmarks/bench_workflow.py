"""What the workflow costs around the traffic, and what the DUT agent holds in memory
(figures, no assertions).  Runs the snakemake command line on the embedded testbed in a
copy of the repository.

    .venv/bin/python benchmarks/bench_workflow.py [--json FILE] [--skip cost,fixed,memory]
        [--repo DIR] [--trace]

0. The run's own cost (issue 21), as `make run` runs (the testbed down before and torn
   down after, keep_testbed=false; 1 s warm-up + 2 s measured per trial; the collector's
   build record from an earlier run, so its compile happens at arm, as the agent is new):
   the one-off cost of a one-trial run = its wall time - 3 s of traffic; the marginal
   cost of a sweep trial = (wall of a 6-trial sweep - wall of a 1-trial sweep - 5 x 3 s) / 5.
   Goals: <= 5 s and <= 1 s.  --trace also runs the one-trial run under strace (execve and
   exit only) and prints each job's wall time, Snakemake's start and end.
   The same two runs again with each trial as one job (a pool of one testbed, `testbeds:`
   with the embedded testbed alone; rule pool_trial; its calibration from an earlier run):
   what the trial's five jobs cost beside one.
0b. Gaps between arrivals at XDP in whole trials with the defaults (2 senders), at 10,000
   and 100,000 pps: each trial's gap_p99_us over the ideal gap, and the send side's.
1. Fixed cost per trial: a sweep of 6 trials of 1 s warm-up + 2 s (3 rates x 2
   sizes) with a testbed already up and the collector already built; (wall time -
   6 x 3 s) / 6: everything but the traffic, aggregation and figures included.
   Then the no-op rerun of a finished 12-point sweep (3 rates x 2 sizes x 2
   repeats of 1 s): wall time of `snakemake` with nothing to do.
2. Memory: trials of 1, 5 and 15 million packets (100,000 pps, a rate this
   2-CPU machine sustains, of 18-byte payloads, send_path=packet) with
   keep_pcap=false and every feature record kept (keep_features=true); for each,
   the DUT agent's peak resident memory during the trial (VmHWM, reset before
   each trial through /proc/<pid>/clear_refs), the controller's (the largest
   peak RSS of snakemake and the step processes it ran: ru_maxrss of this
   process's waited-for children), and the bytes written per packet.

Takes about 8 minutes.  --repo DIR measures another tree (a `git archive` of an older
commit, for before/after figures) with this script.
"""

from __future__ import annotations

import argparse
import json
import re
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The run's own cost: goals of issue 21, seconds.
GOAL_ONE_OFF_S, GOAL_MARGINAL_S = 5.0, 1.0
WARMUP_S, DURATION_S = 1, 2
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
STATE = Path("/run/xdplab")


def env(workdir: Path) -> dict:
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(workdir / "workflow")}


def copy_repo(repo: Path = REPO) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="xdplab-bench-")) / "xdplab"
    shutil.copytree(repo, dest, ignore=shutil.ignore_patterns(
        ".venv", "results", ".snakemake", ".git", "__pycache__", ".pytest_cache"))
    return dest


def snakemake(workdir: Path, *config: str, keep_testbed: bool = True, prefix=(), configfile=None) -> tuple[float, str]:
    t0 = time.monotonic()
    given = ["--configfile", str(configfile)] if configfile else []
    r = subprocess.run([*prefix, str(SNAKEMAKE), "--cores", "1", *given, "--config", *config,
                        f"keep_testbed={str(keep_testbed).lower()}"],
                       cwd=workdir, env=env(workdir), capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return took, r.stdout + r.stderr


def warm(workdir: Path) -> None:
    """Testbed up and collector built, as in the middle of a longer sweep."""
    snakemake(workdir, "target_pps=1000", "duration_s=1", "experiment=warm")


def testbed_down(workdir: Path) -> None:
    subprocess.run([sys.executable, "-m", "xdplab.testbed", "down"], cwd=workdir, env=env(workdir),
                   capture_output=True)


def run_cost(workdir: Path, trace: bool = False, configfile=None, tag: str = "") -> dict:
    """The one-off cost of a one-trial run and the marginal cost of a sweep trial, each run
    as `make run` runs it (testbed down before, torn down after)."""
    traffic = WARMUP_S + DURATION_S
    walls = {}
    for n, rates in ((1, [2000]), (6, [2000, 3000, 4000, 5000, 6000, 7000])):
        testbed_down(workdir)
        walls[n], _ = snakemake(workdir, f"target_pps={rates}".replace(" ", ""), f"duration_s={DURATION_S}",
                                f"warmup_s={WARMUP_S}", f"experiment=cost{tag}{n}", keep_testbed=False,
                                configfile=configfile)
    one_off = walls[1] - traffic
    marginal = (walls[6] - walls[1] - 5 * traffic) / 5
    out = {"traffic_per_trial_s": traffic, "one_trial_wall_s": round(walls[1], 2),
           "six_trial_wall_s": round(walls[6], 2), "one_off_s": round(one_off, 2),
           "one_off_goal_s": GOAL_ONE_OFF_S, "marginal_per_trial_s": round(marginal, 2),
           "marginal_goal_s": GOAL_MARGINAL_S}
    if trace:
        out["jobs"] = traced_run(workdir)
    return out


def traced_run(workdir: Path) -> dict:
    """A one-trial run as above under strace (execve and exit only, so the jobs run at
    nearly full speed): seconds from Snakemake's start to its first job, each job's wall
    (its script's interpreter from exec to exit), and from the last job to Snakemake's exit
    (the end of the run: the table, the testbed's teardown)."""
    testbed_down(workdir)
    trace = workdir / "strace.txt"
    snakemake(workdir, "target_pps=2000", f"duration_s={DURATION_S}", f"warmup_s={WARMUP_S}",
              "experiment=traced", keep_testbed=False,
              prefix=("strace", "-f", "-qq", "-ttt", "-s", "400", "--seccomp-bpf", "-e",
                      "trace=execve,exit_group", "-o", str(trace)))
    starts, ends, names, first = {}, {}, {}, None
    for line in trace.read_text().splitlines():
        m = re.match(r"(\d+)\s+(\d+\.\d+)\s+(.*)", line)
        if not m:
            continue
        pid, t, rest = int(m[1]), float(m[2]), m[3]
        first = first or (pid, t)
        if rest.startswith("execve(") and pid not in starts:
            starts[pid] = t
            script = re.search(r"\.snakemake/scripts/tmp[^.]*\.(\w+)\.py", rest)
            if script:
                names[pid] = script[1]
        elif rest.startswith("exit_group("):
            ends.setdefault(pid, t)
    jobs = sorted((starts[p], ends.get(p, starts[p]), names[p]) for p in names)
    t0, end = first[1], ends.get(first[0], first[1])
    out = {"snakemake_start_s": round(jobs[0][0] - t0, 2) if jobs else None,
           "jobs": [{"rule": n, "start_s": round(s - t0, 2), "wall_s": round(e - s, 2)} for s, e, n in jobs],
           "after_last_job_s": round(end - jobs[-1][1], 2) if jobs else None, "wall_s": round(end - t0, 2)}
    trace.unlink(missing_ok=True)
    return out


def fixed_cost(workdir: Path) -> dict:
    rates, sizes, duration, warmup = [2000, 5000, 10000], [64, 1458], 2, 1
    took, _ = snakemake(workdir, f"target_pps={rates}".replace(" ", ""),
                        f"packet_size={sizes}".replace(" ", ""), f"duration_s={duration}",
                        f"warmup_s={warmup}", "experiment=fixedcost")
    trials = len(rates) * len(sizes)
    # The traffic: each trial's warm-up and measured window.
    per_trial = (took - trials * (warmup + duration)) / trials
    # A finished 12-point sweep, run again: nothing to do.
    sweep = ["target_pps=[2000,5000,10000]", "packet_size=[64,1458]", "repeats=2", "duration_s=1",
             "experiment=noop"]
    snakemake(workdir, *sweep)
    noop, out = snakemake(workdir, *sweep)
    return {"trials": trials, "duration_s": duration, "warmup_s": warmup, "sweep_wall_s": round(took, 2),
            "fixed_cost_per_trial_s": round(per_trial, 2), "noop_rerun_12_points_s": round(noop, 2)}


def trial_gaps(workdir: Path) -> list[dict]:
    """Gaps between arrivals at XDP in whole trials with the defaults a user gets (two
    senders, the default send path and payload), at 10,000 and 100,000 pps for 3 s: the
    trial's own gap_p50_us/gap_p99_us (from arrival_ns of every packet, features.parquet)
    and send_gap_* (the payload's send times), p99 over the ideal gap 1/pps (goal <= 1.5)."""
    import csv

    snakemake(workdir, "target_pps=[10000,100000]", "duration_s=3", "experiment=gaps")
    out = []
    with open(workdir / "results/gaps/summary.csv") as f:
        for r in csv.DictReader(f):
            ideal_us = 1e6 / float(r["target_pps"])
            row = {k: r.get(k) for k in ("target_pps", "threads", "send_path_used", "gap_p50_us", "gap_p99_us",
                                         "send_gap_p50_us", "send_gap_p99_us", "lost")}
            row["p99_over_ideal"] = round(float(r["gap_p99_us"]) / ideal_us, 2) if r.get("gap_p99_us") else None
            row["send_p99_over_ideal"] = (round(float(r["send_gap_p99_us"]) / ideal_us, 2)
                                          if r.get("send_gap_p99_us") else None)
            out.append(row)
            print(f"trial at {r['target_pps']} pps, defaults: arrivals at XDP p50 {r['gap_p50_us']} us, p99 "
                  f"{r['gap_p99_us']} us ({row['p99_over_ideal']}x ideal); sends p99 {r['send_gap_p99_us']} us "
                  f"({row['send_p99_over_ideal']}x)", flush=True)
    return out


def agent_pid() -> int:
    return int((STATE / "agent.pid").read_text().split()[0])


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def memory(workdir: Path, pps: int = 100000, counts=(1, 5, 15)) -> list[dict]:
    out = []
    for millions in counts:
        packets = millions * 1_000_000
        duration = max(1, round(packets / pps))
        pid = agent_pid()
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        exp = f"mem{millions}m"
        # Every feature record kept (streamed to the DUT's disk, then features.parquet): the
        # agent's memory must not grow with them.  The capture is not kept.
        took, _ = snakemake(workdir, f"target_pps={pps}", f"duration_s={duration}", "packet_size=18",
                            "send_path=packet", "threads=1", "keep_pcap=false", "keep_features=true",
                            f"experiment={exp}")
        trial = json.loads(next((workdir / "results" / exp / "trials").glob("*/rep~*/trial.json")).read_text())
        row = trial["summary"]
        written = sum(p.stat().st_size for p in (workdir / "results" / exp).rglob("*") if p.is_file())
        out.append({"packets_scheduled": packets, "sent": row["sent"], "lost": row["lost"],
                    "unexplained": row["unexplained"],
                    "agent_vm_hwm_mib": round(vm_hwm_kib(pid) / 1024, 1),
                    "controller_max_rss_mib": round(max(before, resource.getrusage(
                        resource.RUSAGE_CHILDREN).ru_maxrss) / 1024, 1),
                    "dut_capture_bytes": (trial.get("disk") or {}).get("actual", {}).get("dut_bytes"),
                    "results_bytes_per_packet": round(written / max(1, row["sent"]), 2),
                    "features_parquet_bytes": sum(p.stat().st_size for p in
                                                  (workdir / "results" / exp).rglob("features.parquet")),
                    "wall_s": round(took, 1)})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--skip", default="", help="comma-separated: cost, gaps, fixed, memory")
    p.add_argument("--repo", type=Path, default=REPO, help="the tree to measure (default: this one)")
    p.add_argument("--trace", action="store_true", help="also each job's wall time, under strace")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = copy_repo(args.repo)
    figures = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
    try:
        warm(workdir)
        if "cost" not in skip:
            c = figures["run_cost"] = run_cost(workdir, trace=args.trace)
            print(f"one-off cost of a one-trial run beyond its {c['traffic_per_trial_s']} s of traffic: "
                  f"{c['one_off_s']} s (goal <= {GOAL_ONE_OFF_S:g} s)   |   marginal cost of a sweep trial "
                  f"beyond its traffic (1 vs 6 trials): {c['marginal_per_trial_s']} s (goal <= "
                  f"{GOAL_MARGINAL_S:g} s)", flush=True)
            print(json.dumps(c), flush=True)
            warm(workdir)
        if "cost" not in skip:
            # each trial one job: a pool of the embedded testbed alone, calibrated beforehand
            pool = workdir / "pool_of_one.yaml"
            pool.write_text("testbeds:\n  - {name: one, testbed: embedded}\n")
            snakemake(workdir, "target_pps=2000", "duration_s=1", "experiment=warmpool", configfile=pool)
            c = figures["run_cost_one_job"] = run_cost(workdir, configfile=pool, tag="pool")
            print(f"with each trial one job (a pool of one testbed): one-off {c['one_off_s']} s, marginal "
                  f"{c['marginal_per_trial_s']} s per trial", flush=True)
            print(json.dumps(c), flush=True)
            warm(workdir)
        if "gaps" not in skip:
            figures["trial_gaps"] = trial_gaps(workdir)
        if "fixed" not in skip:
            figures["fixed_cost"] = fixed_cost(workdir)
            print(json.dumps(figures["fixed_cost"]), flush=True)
        if "memory" not in skip:
            figures["memory"] = memory(workdir)
    finally:
        testbed_down(workdir)
        shutil.rmtree(workdir.parent, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
