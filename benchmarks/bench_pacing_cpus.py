"""Where two senders' gaps at 100,000 pps come from: the senders' CPUs (no assertions).

    flock /tmp/xdplab-testbed.lock .venv/bin/python benchmarks/bench_pacing_cpus.py [--rounds 3] [--json FILE]

On bench_generator.py's veth pair (its own two namespaces, removed on every path
out; root, tcpdump, taskset), the generator paces 64-byte payloads at --pps for 2 s,
and the peer's capture gives the gaps between arrivals, as in bench_generator part 2.
Four placements, alternating within each round, on the udp and the packet path:
1 sender (the kernel places it), 2 senders (the default; the kernel places them),
2 senders both pinned to CPU 1 (taskset), 1 sender pinned to CPU 1.  Prints each
trial and the median p99 gap over the ideal per placement and path; writes them as
JSON (default results/bench/pacing_cpus.json).  Not part of `make bench`.
"""

import argparse
import json
import os
import sys

import bench_generator as gen

PLACEMENTS = (("1 sender", 1, None), ("2 senders", 2, None), ("2 senders, both on CPU 1", 2, "1"),
              ("1 sender on CPU 1", 1, "1"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pps", type=int, default=100000)
    ap.add_argument("--json", default=str(gen.REPO / "results" / "bench" / "pacing_cpus.json"))
    a = ap.parse_args()
    from xdplab.source import source_pyz
    generator = [str(source_pyz()), "send"]
    rows = []
    with gen.veth_pair() as dmac:
        for rnd in range(a.rounds):
            for name, threads, cpus in PLACEMENTS:
                # taskset in front of the interpreter: python = taskset, generator = its arguments
                python, argv = (sys.executable, generator) if cpus is None else (
                    "taskset", ["-c", cpus, sys.executable, *generator])
                for path in ("udp", "packet"):
                    r = gen._pace_generator(python, argv, a.pps, threads, 2, name, send_path=path, dmac=dmac)
                    r.update(round=rnd, placement=name, cpus=cpus)
                    rows.append(r)
                    print("%d %-26s %-6s gap p50 %6s us, p99 %6s us, p99/ideal %5s; sent %.0f pps, taken over %s"
                          % (rnd, name, path, r["gap_p50_us"], r["gap_p99_us"], r["p99_over_ideal"],
                             r["own_achieved_pps"], r["own_taken_over"]), flush=True)
    summary = {}
    for name, _, _ in PLACEMENTS:
        for path in ("udp", "packet"):
            v = sorted(r["p99_over_ideal"] for r in rows if r["placement"] == name and r["send_path"] == path)
            summary["%s, %s" % (name, path)] = {"median": v[len(v) // 2], "min": v[0], "max": v[-1]}
    print("\np99 gap / ideal at %d pps, median of %d rounds (min-max):" % (a.pps, a.rounds))
    for k, v in summary.items():
        print("  %-34s %.2f (%.2f-%.2f)" % (k, v["median"], v["min"], v["max"]))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"pps": a.pps, "rows": rows, "summary": summary}, f, indent=1)
    print("written: %s" % a.json)


if __name__ == "__main__":
    main()
