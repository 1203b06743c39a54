"""make bench: run every benchmark on the embedded testbed, one after the other (each
measures its own side-by-side comparisons within one run), and write
benchmarks/results/<UTC date>.json with every figure and <UTC date>.md with the table
benchmarks/README.md shows.  Figures, never pass/fail.

    .venv/bin/python benchmarks/run.py [--skip generator,collector,workflow,observers,search]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHES = {
    # name: (interpreter, script, extra arguments)
    "generator": (sys.executable, "bench_generator.py", ["--rounds", "2"]),
    "collector": ("/usr/bin/python3", "bench_collector.py", []),   # needs bcc
    "workflow": (sys.executable, "bench_workflow.py", []),
    # the soak point of issue 21 with the defaults (--soak-s: its length; 300 is the issue's)
    "observers": (sys.executable, "bench_observers.py", []),
    # issue 20: the time between a search's trials, and an NDR+PDR search's wall time
    "search": (sys.executable, "bench_search.py", []),
}


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def run(name: str) -> dict | None:
    python, script, extra = BENCHES[name]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    print(f"== {script}", flush=True)
    t0 = time.monotonic()
    r = subprocess.run([python, str(HERE / script), "--json", str(out), *extra],
                       env={**os.environ, "PYTHONPATH": str(HERE.parent / "workflow")})
    try:
        figures = json.loads(out.read_text()) if r.returncode == 0 else None
    except (OSError, ValueError):
        figures = None
    out.unlink(missing_ok=True)
    if figures is None:
        print(f"{script} failed (exit {r.returncode}); its figures are missing", flush=True)
        return None
    figures["wall_s"] = round(time.monotonic() - t0, 1)
    return figures


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else None


def table(fig: dict) -> str:
    """The Markdown table: each figure beside what it is compared with, in one run."""
    lines = ["| what | measured | beside it (same run) | ratio |", "| --- | --- | --- | --- |"]
    gen = fig.get("generator") or {}
    peak = (gen.get("peak") or {}).get("rows") or []
    for cpus, senders in (("1", 1), ("0-1", 2)):
        trafgen = [r["pps"] for r in peak if r["tool"] == "trafgen" and r["cpus"] == cpus]
        for path in ("udp", "packet", "trafgen"):
            ours = [r for r in peak if r["tool"] == "generator.py" and r["cpus"] == cpus
                    and r["send_path"] == path]
            if ours and trafgen:
                lines.append(f"| generator peak, {path}, {senders} sender(s), CPUs {cpus} | "
                             f"{_median([r['pps'] for r in ours]):,} pps | trafgen {_median(trafgen):,} pps | "
                             f"{_median([r['ratio'] for r in ours]):.2f}x |")
    hc = (gen.get("header_cost") or {}).get("ns_per_packet")
    tg1 = [r["pps"] for r in peak if r["tool"] == "trafgen" and r["cpus"] == "1"]
    pk1 = [r["pps"] for r in peak if r["tool"] == "generator.py" and r["cpus"] == "1" and r["send_path"] == "packet"]
    if hc and tg1 and pk1:
        ours_ns, theirs_ns = 1e9 / _median(pk1), 1e9 / _median(tg1)
        lines.append(f"| the generator's header write per packet in Python (pack_into + monotonic_ns, timeit) | "
                     f"{hc} ns | per packet at peak, 1 sender: packet path {ours_ns:.0f} ns, trafgen "
                     f"{theirs_ns:.0f} ns, {ours_ns - theirs_ns:.0f} ns apart | "
                     f"{hc / max(ours_ns - theirs_ns, 1e-9):.2f} of the difference |")
    pacing = gen.get("pacing") or []
    for pps in (1000, 10000, 100000):
        ours = next((r for r in pacing if r["tool"] == "generator.py" and r["pps"] == pps
                     and r.get("threads", 1) == 1), None)
        theirs = next((r for r in pacing if r["tool"].startswith("iperf3") and r["pps"] == pps), None)
        if ours and theirs:
            # Rate error from each tool's own count over its window; the gaps from the
            # receiver's capture (whose first packets may come before it listens).
            def err(r):
                return (r["own_achieved_pps"] - pps) / pps * 100
            lines.append(f"| rate error (own count) / gaps at the receiver p50, p99, at {pps:,} pps | "
                         f"{err(ours):+.4f} % / {ours['gap_p50_us']} µs, {ours['gap_p99_us']} µs | "
                         f"iperf3 -u: {err(theirs):+.4f} % / {theirs['gap_p50_us']} µs, "
                         f"{theirs['gap_p99_us']} µs | p99/ideal gap {ours['p99_over_ideal']} vs "
                         f"{theirs['p99_over_ideal']} |")
        two = next((r for r in pacing if r["tool"] == "generator.py" and r["pps"] == pps
                    and r.get("threads") == 2), None)
        if ours and two:
            lines.append(f"| gaps at the receiver p50, p99, at {pps:,} pps, 2 senders (the default) | "
                         f"{two['gap_p50_us']} µs, {two['gap_p99_us']} µs | 1 sender: {ours['gap_p50_us']} µs, "
                         f"{ours['gap_p99_us']} µs | p99/ideal gap {two['p99_over_ideal']} vs "
                         f"{ours['p99_over_ideal']} (goal <= 1.5) |")
    coll = fig.get("collector") or {}
    for size, row in (coll.get("ns_per_packet") or {}).items():
        lines.append(f"| collector (features) per packet, {size} payload, BPF_PROG_TEST_RUN | "
                     f"{row['features']} ns | count-only floor {row['floor']} ns | {row['features_ratio']}x |")
        lines.append(f"| collector (counters) per packet, {size} payload, BPF_PROG_TEST_RUN | "
                     f"{row['counters']} ns | count-only floor {row['floor']} ns | {row['counters_ratio']}x |")
        if row.get("floor_ktime"):
            lines.append(f"| collector (features) per packet, {size} payload, against a floor that also "
                         f"reads the clock once | {row['features']} ns | count-only + bpf_ktime_get_ns() "
                         f"{row['floor_ktime']} ns | {row['features_over_floor_ktime']}x |")
    for size, row in ((coll.get("observer") or {}).get("ns_per_packet") or {}).items():
        for c in ("features", "counters"):
            lines.append(f"| observing a user's program (pass_all) behind the collector ({c}), {size} "
                         f"payload, BPF_PROG_TEST_RUN | {row[f'behind_{c}']} ns | the program alone "
                         f"{row['program_alone']} ns | +{row[f'observer_{c}']} ns |")
    if coll.get("consumer"):
        lines.append(f"| agent's ring-buffer consumer | {coll['consumer']['records_per_s']:,} records/s | | |")
    wf = fig.get("workflow") or {}
    rc = wf.get("run_cost") or {}
    if rc:
        lines.append(f"| one-off cost of a run (`make run`-style, one trial) beyond its traffic | "
                     f"{rc['one_off_s']} s | {rc['one_trial_wall_s']} s for {rc['traffic_per_trial_s']} s of traffic "
                     f"| goal <= {rc['one_off_goal_s']:g} s |")
        lines.append(f"| marginal cost of a sweep trial beyond its traffic and warm-up (1-trial vs 6-trial "
                     f"sweep) | {rc['marginal_per_trial_s']} s | 6 trials {rc['six_trial_wall_s']} s, 1 trial "
                     f"{rc['one_trial_wall_s']} s | goal <= {rc['marginal_goal_s']:g} s |")
    oj = wf.get("run_cost_one_job") or {}
    if oj:
        lines.append(f"| the same, each trial one job (a pool of one testbed): one-off / marginal | "
                     f"{oj['one_off_s']} s / {oj['marginal_per_trial_s']} s | five jobs per trial: "
                     f"{rc.get('one_off_s')} s / {rc.get('marginal_per_trial_s')} s | goals <= "
                     f"{oj['one_off_goal_s']:g} s / <= {oj['marginal_goal_s']:g} s |")
    for g in wf.get("trial_gaps") or []:
        pps = int(float(g["target_pps"]))
        lines.append(f"| gap between arrivals at XDP in a trial, p50 / p99, {pps:,} pps, defaults "
                     f"({g['threads']} senders, {g['send_path_used']}) | {g['gap_p50_us']} µs / {g['gap_p99_us']} µs "
                     f"| sends p99 {g['send_gap_p99_us']} µs ({g['send_p99_over_ideal']}x) | p99/ideal "
                     f"{g['p99_over_ideal']}x (goal <= 1.5) |")
    fc = wf.get("fixed_cost") or {}
    if fc:
        lines.append(f"| workflow: fixed cost per trial ({fc['trials']} trials of {fc['duration_s']} s) | "
                     f"{fc['fixed_cost_per_trial_s']} s | sweep {fc['sweep_wall_s']} s | |")
        lines.append(f"| workflow: no-op rerun of a finished 12-point sweep | {fc['noop_rerun_12_points_s']} s | | |")
    for m in wf.get("memory") or []:
        lines.append(f"| trial of {m['packets_scheduled']:,} packets: agent peak RSS (VmHWM) / controller | "
                     f"{m['agent_vm_hwm_mib']} MiB / {m['controller_max_rss_mib']} MiB | "
                     f"{m['results_bytes_per_packet']} bytes written per packet (keep_pcap=false, "
                     f"features kept) | sent {m['sent']:,}, lost {m['lost']}, unexplained {m['unexplained']} |")
    mem = wf.get("memory") or []
    if len(mem) >= 2 and mem[0]["agent_vm_hwm_mib"]:
        growth = (mem[-1]["agent_vm_hwm_mib"] / mem[0]["agent_vm_hwm_mib"] - 1) * 100
        lines.append(f"| agent peak RSS growth from {mem[0]['packets_scheduled']:,} to "
                     f"{mem[-1]['packets_scheduled']:,} packets | {growth:+.1f} % | | |")
    obs = fig.get("observers") or {}
    for s in obs.get("soak") or []:
        lines.append(f"| {s['duration_s']} s trial at {s['target_pps']:,} pps, {s['packet_size']} B payload, "
                     f"features and pcap kept ({s['variant']}): lost (where); DUT CPU of the agent / the "
                     f"capture, % of one CPU | {s['lost']} ({s['loss_where'] or 'nowhere'}); {s['agent_cpu_pct']} / "
                     f"{s['capture_cpu_pct']} % | softirq {s['softirq_cpu_pct']} % of {s['ncpu']} CPUs; per packet: "
                     f"agent {s['agent_cpu_ns_per_pkt']} ns, capture {s['capture_cpu_ns_per_pkt']} ns; "
                     f"observers_busy {s['observers_busy']} | goal: 0 lost, or the trial says its "
                     f"observers were busy |")
    for c in (obs.get("capture_flags") or [])[1:]:
        lines.append(f"| tcpdump {c['flags']}, beside the agent's on the same packets | "
                     f"{c['cpu_ns_per_pkt']} ns of CPU per packet | {c['captured']:,} captured, "
                     f"{c['dropped_by_kernel']} dropped | |")
    se = fig.get("search") or {}
    srch, rules = se.get("search") or {}, se.get("rules") or {}
    if srch.get("overhead"):
        beside = (f"{rules['overhead']['median_s']} s (p90 {rules['overhead']['p90_s']} s) with each trial "
                  f"as rules (snakemake ndr)" if (rules.get("overhead") or {}).get("median_s") is not None else "")
        lines.append(f"| search: from the end of one trial's traffic to the start of the next, median "
                     f"(p90) | {srch['overhead']['median_s']} s ({srch['overhead']['p90_s']} s) | {beside} | "
                     f"goal <= {se.get('goal_overhead_s', 0.5):g} s |")
        goals = ", ".join(f"{k} {v['lower_bound_pps']}-{v['upper_bound_pps']} pps ({v['result']})"
                          for k, v in (srch.get("goals") or {}).items())
        lines.append(f"| search: NDR+PDR at 0.5 % width, 1504 B frames, under a 2,000 pps tbf cap: wall time | "
                     f"{srch['wall_s']} s | {srch['trials']} trials, {srch['trial_s']} s of traffic; {goals} | "
                     f"goal < {se.get('goal_search_s', 150):g} s |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip", default="", help="comma-separated: " + ", ".join(BENCHES))
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    fig = {"date_utc": stamp, "machine": machine()}
    for name in BENCHES:
        if name not in skip:
            fig[name] = run(name)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(fig, indent=1) + "\n")
    m = fig["machine"]
    md = (f"Measured {stamp} on {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']} "
          f"(`make bench`, benchmarks/results/{stamp}.json)\n\n" + table(fig))
    (RESULTS / f"{stamp}.md").write_text(md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
