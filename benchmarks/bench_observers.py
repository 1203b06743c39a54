"""The soak point of issue 21 with the defaults a user gets: one trial at 50,000 pps of
64-byte payloads, every feature record and the capture kept, two senders, send_path auto
(figures, no assertions).  Runs the snakemake command line on the embedded testbed in a
copy of the repository, and prints what the trial lost and where, and what its observers
cost the DUT: the agent (all its threads; of it the ring-buffer consumer, which also
writes the features file, and the counter polling), the capture (tcpdump), each in % of
one CPU and in ns of CPU per packet, beside the softirq share and observers_busy.

    .venv/bin/python benchmarks/bench_observers.py [--json FILE] [--soak-s 60]
        [--variants keep_features=false,collector=counters] [--capture-flags]

The issue's soak is 5 minutes (--soak-s 300); the default, 60 s, keeps the bench within
about 2 minutes.  --variants runs the same trial again with one setting changed, each
beside the default in the same run (the testbed stays up between them).  --capture-flags
runs it once more with three extra tcpdumps on the DUT interface beside the agent's, the
same filter and snap length, each with other flags (the agent's -U --immediate-mode;
without -U; without either), and prints the CPU each used per packet it captured
(/proc/<pid>/schedstat): what the capture's flags cost, side by side on the same packets.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workflow import copy_repo, snakemake, testbed_down  # noqa: E402

SOAK_PPS, SOAK_PAYLOAD = 50000, 64
DEFAULT_SOAK_S = 60


def soak(workdir: Path, seconds: int, name: str, *extra: str) -> dict:
    exp = f"soak-{name}"
    t0 = time.monotonic()
    snakemake(workdir, f"target_pps={SOAK_PPS}", f"packet_size={SOAK_PAYLOAD}",
              f"duration_s={seconds}", f"experiment={exp}", *extra)
    wall = time.monotonic() - t0
    with open(workdir / "results" / exp / "summary.csv") as f:
        row = next(csv.DictReader(f))
    trial = json.loads(next((workdir / "results" / exp / "trials").glob("*/rep~*/trial.json")).read_text())
    obs = (trial.get("agent") or {}).get("observers") or {}
    matched = int(row["xdp_matched"] or 0) or None

    def per_pkt(part):
        ns = obs.get(f"{part}_cpu_ns")
        return round(ns / matched) if ns is not None and matched else None

    out = {"variant": name, "settings": list(extra), "duration_s": seconds, "target_pps": SOAK_PPS,
           "packet_size": SOAK_PAYLOAD, "wall_s": round(wall, 1),
           **{k: row[k] for k in ("sent", "achieved_pps", "xdp_matched", "lost", "loss_where",
                                  "lost_src_nic", "lost_dut_nic", "ringbuf_drops", "tcpdump_dropped",
                                  "unexplained", "unstable", "status", "send_path_used",
                                  "softirq_cpu_pct", "agent_cpu_pct", "capture_cpu_pct",
                                  "observers_busy", "gap_p50_us", "gap_p99_us", "send_gap_p50_us",
                                  "send_gap_p99_us", "ideal_gap_us")},
           "ncpu": obs.get("ncpu"),
           **{f"{p}_cpu_pct": obs.get(f"{p}_cpu_pct") for p in ("consumer", "polling")},
           **{f"{p}_cpu_ns_per_pkt": per_pkt(p) for p in ("agent", "consumer", "polling", "capture")}}
    print(f"soak ({name}): {seconds} s at {SOAK_PPS:,} pps, {SOAK_PAYLOAD} B payload: sent {int(out['sent']):,}, "
          f"lost {out['lost']} ({out['loss_where'] or 'nowhere'}), unstable {out['unstable']}; DUT CPU, % of one "
          f"CPU (of {out['ncpu']}): agent {out['agent_cpu_pct']} (consumer {out['consumer_cpu_pct']}, polling "
          f"{out['polling_cpu_pct']}), capture {out['capture_cpu_pct']}; softirq {out['softirq_cpu_pct']} % of all "
          f"CPUs; observers_busy {out['observers_busy']}; per packet: agent {out['agent_cpu_ns_per_pkt']} ns, "
          f"capture {out['capture_cpu_ns_per_pkt']} ns; gaps p50/p99 at XDP {out['gap_p50_us']}/{out['gap_p99_us']} "
          f"us, at the send {out['send_gap_p50_us']}/{out['send_gap_p99_us']} us (ideal {out['ideal_gap_us']})",
          flush=True)
    return out


DUT_NETNS, DUT_IFACE, PORT = "xdplab-dut", "xl-dut0", 12345
CAPTURE_FLAGS = {"agent's: -U --immediate-mode": ["-U", "--immediate-mode"],
                 "--immediate-mode, no -U": ["--immediate-mode"],
                 "neither": []}


def task_cpu_ns(pid: int) -> int:
    return sum(int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
               for t in os.listdir(f"/proc/{pid}/task"))


def capture_flags(workdir: Path, seconds: int) -> list[dict]:
    """The soak again, with a tcpdump per CAPTURE_FLAGS beside the agent's on the same
    packets: each one's CPU per packet captured."""
    tmp = Path(tempfile.mkdtemp(prefix="xdplab-capflags-"))
    procs = {}
    try:
        for k, (name, flags) in enumerate(CAPTURE_FLAGS.items()):
            procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", DUT_NETNS, "tcpdump", "-p", "-n", *flags, "-i", DUT_IFACE,
                 "-s", "64", "-B", "8192", "-Z", "root", "-w", str(tmp / f"{k}.pcap"),
                 f"udp dst port {PORT}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        row = soak(workdir, seconds, "capture-flags")
        time.sleep(1.0)
        out = []
        for name, proc in procs.items():
            used = task_cpu_ns(proc.pid)
            proc.send_signal(signal.SIGINT)
            err = proc.communicate(timeout=30)[1]
            captured = next((int(line.split()[0]) for line in err.splitlines()
                             if line.endswith("packets captured")), None)
            out.append({"flags": name, "captured": captured, "cpu_ns": used,
                        "cpu_ns_per_pkt": round(used / captured) if captured else None,
                        "dropped_by_kernel": next((int(line.split()[0]) for line in err.splitlines()
                                                   if line.endswith("dropped by kernel")), None)})
            print(f"capture flags {name}: {out[-1]['cpu_ns_per_pkt']} ns of CPU per packet captured "
                  f"({captured:,} captured, {out[-1]['dropped_by_kernel']} dropped by kernel)", flush=True)
        return [{"trial": row}] + out
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--soak-s", type=int, default=DEFAULT_SOAK_S,
                   help=f"the soak trial's measured seconds (issue 21: 300; default {DEFAULT_SOAK_S})")
    p.add_argument("--variants", default="",
                   help="comma-separated key=value: the same trial again with that one setting")
    p.add_argument("--capture-flags", action="store_true",
                   help="also the capture's flags side by side (three more tcpdumps on the soak)")
    args = p.parse_args()
    workdir = copy_repo()
    figures = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
               "soak_s": args.soak_s, "soak": []}
    try:
        figures["soak"].append(soak(workdir, args.soak_s, "defaults"))
        for v in filter(None, args.variants.split(",")):
            figures["soak"].append(soak(workdir, args.soak_s, v.replace("=", "-").replace("_", "-"), v))
        if args.capture_flags:
            figures["capture_flags"] = capture_flags(workdir, args.soak_s)
    finally:
        testbed_down(workdir)
        shutil.rmtree(workdir.parent, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
