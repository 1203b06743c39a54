"""What the workflow costs around the traffic, and what the DUT agent holds in memory
(figures, no assertions).  Runs the snakemake command line on the embedded testbed in a
copy of the repository.

    .venv/bin/python benchmarks/bench_workflow.py [--json FILE] [--skip memory]

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

Takes about 6 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
STATE = Path("/run/xdplab")


def env(workdir: Path) -> dict:
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(workdir / "workflow")}


def copy_repo() -> Path:
    dest = Path(tempfile.mkdtemp(prefix="xdplab-bench-")) / "xdplab"
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".venv", "results", ".snakemake", ".git", "__pycache__", ".pytest_cache"))
    return dest


def snakemake(workdir: Path, *config: str) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--config", *config, "keep_testbed=true"],
                       cwd=workdir, env=env(workdir), capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return took, r.stdout + r.stderr


def warm(workdir: Path) -> None:
    """Testbed up and collector built, as in the middle of a longer sweep."""
    snakemake(workdir, "target_pps=1000", "duration_s=1", "experiment=warm")


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
    p.add_argument("--skip", default="", help="comma-separated: fixed, memory")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = copy_repo()
    figures = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
    try:
        warm(workdir)
        if "fixed" not in skip:
            figures["fixed_cost"] = fixed_cost(workdir)
            print(json.dumps(figures["fixed_cost"]), flush=True)
        if "memory" not in skip:
            figures["memory"] = memory(workdir)
    finally:
        subprocess.run([sys.executable, "-m", "xdplab.testbed", "down"], cwd=workdir, env=env(workdir),
                       capture_output=True)
        shutil.rmtree(workdir.parent, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
