"""Figures for the traffic generator on this machine, beside trafgen and iperf3 (no assertions).

    make bench        (runs every benchmarks/bench_*.py under the testbed lock)
    flock /tmp/xdplab-testbed.lock .venv/bin/python benchmarks/bench_generator.py [--rounds 2] [--json FILE]

Prints tables and writes them as JSON (default results/bench/generator.json).
Parts 1 and 2 need root, trafgen (netsniff-ng), iperf3 and tcpdump; they build
two namespaces of their own (xlt-gen-bsrc, xlt-gen-bdst) joined by a veth
(10.203.3.1 <-> 10.203.3.2, static neighbours, IPv6 off) and remove them on
every path out.  Run them under the testbed lock.

1. Peak: generator.py asked for far more than it can send (--pps 5000000, 18-byte
   payloads = 60-byte frames) against trafgen sending the same frame as fast as
   it can, both pinned with taskset to the same CPUs (1 sender: CPU 1; 2
   senders: CPUs 0-1, trafgen --cpus 2).  Frames are addressed to a MAC the
   peer does not have, so the peer takes each one in and IPv4 drops it at once
   (PACKET_OTHERHOST); that receive work runs on the sending CPU (veth) for
   both tools alike.  What is counted: the source
   veth's tx_packets + tx_dropped (every frame the veth took) over a fixed
   window from 1.0 s to 3.5 s after launch, read with one `cat` per sample (the
   read's midpoint is the sample's time).  Rounds alternate the tools;
   ratio = generator / trafgen within the same round.  With one sender also:
   trafgen --rate 5000000pps (its paced sendto path) and generator.py
   --backend trafgen (that path plus the payload header's 32-bit seq counter),
   each against the same round's unpaced trafgen.
2. Pacing: generator.py (udp path, one sender, and two senders: `threads`'
   default) and `iperf3 -u` at 1,000, 10,000 and 100,000 packets/s for 2 s,
   64-byte payloads (iperf3 -l 64 -b pps*64*8: iperf3 counts payload bits).
   Captured on the peer with tcpdump (nanosecond timestamps); from the capture:
   packets, rate error over the tool's own duration, inter-arrival p50/p99 and
   p99 divided by the ideal gap.  --pacing-before FILE measures another
   generator (an older dist/xdplab-source.pyz) alternately beside it, its rows
   tagged "(before)"; with it, part 2b runs two senders of each, before and after
   alternating (the order swapped each round), --rounds rounds at --pacing-rates, on
   the udp and the packet path (--dst-mac the peer's), and prints the medians
   (--pacing-before-only: part 2b without part 2).
3. generator.py on loopback (no root needed): achieved pps per pattern at 100,000 pps.
4. pcapcheck.verify_capture on a synthetic 600,000-packet capture.
With part 1, 1b: what the hot loop does in Python per packet beyond the send call (the
payload header's pack_into with a fresh monotonic_ns(), timeit), beside the per-packet
time that separates the packet path from trafgen in part 1.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
# The generator as a source host runs it: dist/xdplab-source.pyz send (`make source`);
# --generator FILE runs another one (a .py file is run without "send": an older generator.py).
GENERATOR = [str(REPO / "dist" / "xdplab-source.pyz"), "send"]
SRC_NS, DST_NS = "xlt-gen-bsrc", "xlt-gen-bdst"
SRC_IF, DST_IF = "xgb-s0", "xgb-d0"
SRC_IP, DST_IP = "10.203.3.1", "10.203.3.2"
PORT = 12345
OTHER_MAC = "02:00:00:00:00:99"  # nobody's: the peer drops frames sent to it


def _load(name):
    return importlib.import_module("xdplab." + name)


def sh(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, **kw)


def nsx(ns, *cmd):
    return ["ip", "netns", "exec", ns] + list(cmd)


@contextlib.contextmanager
def veth_pair():
    """Two namespaces joined by a veth; yields the peer's MAC.  Always removed."""
    try:
        for ns in (SRC_NS, DST_NS):
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "netns", "add", ns)
        sh(*nsx(SRC_NS, "ip", "link", "add", SRC_IF, "type", "veth", "peer", "name", DST_IF))
        sh("ip", "-n", SRC_NS, "link", "set", DST_IF, "netns", DST_NS)
        for ns, dev, ip in ((SRC_NS, SRC_IF, SRC_IP), (DST_NS, DST_IF, DST_IP)):
            sh(*nsx(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        smac = sh(*nsx(SRC_NS, "cat", "/sys/class/net/%s/address" % SRC_IF)).stdout.strip()
        dmac = sh(*nsx(DST_NS, "cat", "/sys/class/net/%s/address" % DST_IF)).stdout.strip()
        sh("ip", "-n", SRC_NS, "neigh", "replace", DST_IP, "lladdr", dmac, "dev", SRC_IF, "nud", "permanent")
        sh("ip", "-n", DST_NS, "neigh", "replace", SRC_IP, "lladdr", smac, "dev", DST_IF, "nud", "permanent")
        yield dmac
    finally:
        for ns in (SRC_NS, DST_NS):
            sh("ip", "netns", "del", ns, check=False)


def _tx_taken():
    """(time, frames the source veth took: tx_packets + tx_dropped)."""
    t0 = time.monotonic()
    out = sh(*nsx(SRC_NS, "cat", "/sys/class/net/%s/statistics/tx_packets" % SRC_IF,
                  "/sys/class/net/%s/statistics/tx_dropped" % SRC_IF)).stdout.split()
    t1 = time.monotonic()
    return (t0 + t1) / 2, int(out[0]) + int(out[1])


def _peak_window(cmd, window=(1.0, 3.5)):
    """Start cmd, count what the veth took between window[0] and window[1] s after launch, stop it."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    launched = time.monotonic()
    try:
        time.sleep(window[0])
        a = _tx_taken()
        time.sleep(max(0.0, launched + window[1] - time.monotonic()))
        b = _tx_taken()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
    return (b[1] - a[1]) / (b[0] - a[0]), out, err


def bench_peak(python, peer_mac, rounds):
    # Frames go to a MAC address the peer does not have: the peer takes them in
    # and IPv4 drops them at once as PACKET_OTHERHOST (this kernel has no tc
    # matchall/u32 to drop at ingress, and no XDP object is at hand).
    dmac = OTHER_MAC
    sh("ip", "-n", SRC_NS, "neigh", "replace", DST_IP, "lladdr", dmac, "dev", SRC_IF, "nud", "permanent")
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write("{ eth(da=%s), ipv4(saddr=%s, daddr=%s, df), udp(sp=40000, dp=%d), fill(0, 18) }\n"
                % (dmac, SRC_IP, DST_IP, PORT))
        cfg = f.name
    rows = []
    print("\n1. peak: 60-byte frames to a MAC the veth peer does not have (dropped on arrival); frames the veth took "
          "per second, %d rounds" % rounds)
    print("%5s %8s %-22s %12s %8s" % ("round", "cpus", "sender", "pps", "ratio"))
    try:
        for rnd in range(rounds):
            for senders, cpus in ((1, "1"), (2, "0-1")):
                tg = ["taskset", "-c", cpus, "trafgen", "--dev", SRC_IF, "--conf", cfg, "--cpus", str(senders)]
                t_pps, _, _ = _peak_window(nsx(SRC_NS, *tg))
                rows.append({"round": rnd, "cpus": cpus, "tool": "trafgen", "send_path": "packet (TX_RING)",
                             "senders": senders, "pps": round(t_pps)})
                print("%5d %8s %-22s %12.0f %8s" % (rnd, cpus, "trafgen --cpus %d" % senders, t_pps, ""))
                for path in ("udp", "packet"):
                    g = ["taskset", "-c", cpus, python, *GENERATOR, "--dst", DST_IP, "--port", str(PORT),
                         "--pps", "5000000", "--size", "18", "--duration", "4", "--threads", str(senders),
                         "--run-id", "1", "--progress-s", "0", "--iface", SRC_IF, "--send-path", path]
                    if path == "packet":
                        g += ["--dst-mac", dmac]
                    g_pps, out, err = _peak_window(nsx(SRC_NS, *g))
                    rep = json.loads(out) if out.strip() else {}
                    rows.append({"round": rnd, "cpus": cpus, "tool": "generator.py", "send_path": path,
                                 "senders": senders, "pps": round(g_pps), "ratio": round(g_pps / t_pps, 3),
                                 "generator_send_errors": rep.get("send_errors"),
                                 "generator_send_call": rep.get("send_call")})
                    print("%5d %8s %-22s %12.0f %8.3f" % (rnd, cpus, "generator %s x%d" % (path, senders),
                                                          g_pps, g_pps / t_pps))
                if senders == 1:
                    # trafgen paced (--rate: its sendto path, as the backend runs it), then the
                    # generator's trafgen backend (the same, plus the header's 32-bit seq counter)
                    tr = ["taskset", "-c", cpus, "trafgen", "--dev", SRC_IF, "--conf", cfg, "--cpus", "1",
                          "--rate", "5000000pps", "--no-sock-mem", "--notouch-irq"]
                    r_pps, _, _ = _peak_window(nsx(SRC_NS, *tr))
                    rows.append({"round": rnd, "cpus": cpus, "tool": "trafgen --rate", "send_path": "packet (sendto)",
                                 "senders": 1, "pps": round(r_pps), "ratio": round(r_pps / t_pps, 3)})
                    print("%5d %8s %-22s %12.0f %8.3f" % (rnd, cpus, "trafgen --rate", r_pps, r_pps / t_pps))
                    g = ["taskset", "-c", cpus, python, *GENERATOR, "--dst", DST_IP, "--port", str(PORT),
                         "--pps", "5000000", "--size", "18", "--duration", "4", "--run-id", "1", "--progress-s",
                         "0", "--iface", SRC_IF, "--backend", "trafgen", "--dst-mac", dmac]
                    b_pps, out, err = _peak_window(nsx(SRC_NS, *g))
                    rep = json.loads(out) if out.strip() else {}
                    rows.append({"round": rnd, "cpus": cpus, "tool": "generator.py", "send_path": "trafgen",
                                 "senders": 1, "pps": round(b_pps), "ratio": round(b_pps / t_pps, 3),
                                 "generator_sent": rep.get("sent"), "generator_achieved_pps": rep.get("achieved_pps")})
                    print("%5d %8s %-22s %12.0f %8.3f" % (rnd, cpus, "generator trafgen x1", b_pps, b_pps / t_pps))
    finally:
        os.unlink(cfg)
        sh("ip", "-n", SRC_NS, "neigh", "replace", DST_IP, "lladdr", peer_mac, "dev", SRC_IF, "nud", "permanent")
    summary = {}
    for tool, path in (("generator.py", "udp"), ("generator.py", "packet"), ("generator.py", "trafgen"),
                       ("trafgen --rate", "packet (sendto)")):
        for senders in (1, 2):
            ratios = sorted(r["ratio"] for r in rows if r["tool"] == tool and r["send_path"] == path
                            and r["senders"] == senders)
            if ratios:
                name = "%s x%d" % (path, senders) if tool == "generator.py" else "%s x%d" % (tool, senders)
                summary[name] = {"ratio_median": ratios[len(ratios) // 2], "ratio_min": ratios[0],
                                 "ratio_max": ratios[-1]}
    print("ratio generator/trafgen (median over rounds): "
          + ", ".join("%s %.3f" % (k, v["ratio_median"]) for k, v in summary.items()))
    return {"rows": rows, "ratio_summary": summary}


# What the packet path's hot loop (sourcehost/stream.py) does in Python for each packet
# beyond the send call: the payload header's pack_into with a fresh monotonic_ns(), in
# batches of BATCH_MAX, timed with timeit in the interpreter that runs the generator.
HEADER_COST = r"""
import ctypes, sys, time, timeit
sys.path.insert(0, sys.argv[1])
from xdplab.sourcehost.stream import BATCH_MAX
from xdplab.sourcehost.wire import HEADER, MAGIC
stride = 60
buf = (ctypes.c_char * (stride * BATCH_MAX))()
pack, mono = HEADER.pack_into, time.monotonic_ns
def batch():
    seq = 0
    for m in range(BATCH_MAX):
        pack(buf, m * stride + 42, MAGIC, seq, mono(), 1)
        seq += 1
n = 20000
print(min(timeit.repeat(batch, number=n, repeat=5)) / n / BATCH_MAX * 1e9)
"""


def bench_header_cost(python):
    """ns per packet of the generator's header write in Python (HEADER_COST)."""
    r = sh(python, "-c", HEADER_COST, str(REPO / "workflow"))
    ns = round(float(r.stdout.strip()), 1)
    print("\n1b. the generator's header write per packet in Python (pack_into + monotonic_ns): %.1f ns" % ns)
    return {"ns_per_packet": ns}


def read_pcap_ns(path, dport):
    """Arrival times (ns) of IPv4/UDP packets to dport in a nanosecond pcap."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack_from("<I", data, 0)[0]
    scale = 1 if magic == 0xA1B23C4D else 1000
    off, times = 24, []
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, off)
        pkt = data[off + 16: off + 16 + incl]
        off += 16 + incl
        if len(pkt) >= 38 and pkt[12:14] == b"\x08\x00" and pkt[23] == 17:
            ihl = (pkt[14] & 15) * 4
            if struct.unpack_from("!H", pkt, 14 + ihl + 2)[0] == dport:
                times.append(sec * 1000000000 + frac * scale)
    return times


def _gap_stats(times, pps, seconds):
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    ideal = 1e9 / pps
    pct = lambda q: gaps[min(len(gaps) - 1, int(q * len(gaps)))] if gaps else None
    return {"packets": len(times), "expected": int(round(pps * seconds)),
            "rate_error_pct": round(100.0 * (len(times) / seconds - pps) / pps, 4),
            "gap_p50_us": round(pct(0.50) / 1000, 2) if gaps else None,
            "gap_p99_us": round(pct(0.99) / 1000, 2) if gaps else None,
            "p99_over_ideal": round(pct(0.99) / ideal, 2) if gaps else None}


@contextlib.contextmanager
def capture(port):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.pcap")
        p = subprocess.Popen(nsx(DST_NS, "tcpdump", "-p", "-n", "-i", DST_IF, "-s", "64", "-B", "65536",
                                 "--time-stamp-precision", "nano", "-w", path, "udp", "dst", "port", str(port)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
        try:
            line = p.stderr.readline()  # "listening on ..."
            if "listening" not in line:
                raise RuntimeError("tcpdump: " + line)
            time.sleep(0.5)  # "listening" comes before the capture really starts: ~150 ms were missed
            box = {}
            yield box
            time.sleep(0.3)
        finally:
            p.send_signal(signal.SIGINT)
            p.communicate(timeout=10)
        box["times"] = read_pcap_ns(path, port)


def _pace_generator(python, generator, pps, threads, seconds, tool, send_path="udp", dmac=None):
    g = [python, *generator, "--dst", DST_IP, "--port", str(PORT), "--pps", str(pps), "--size", "64",
         "--duration", str(seconds), "--threads", str(threads), "--run-id", "1", "--progress-s", "0"]
    if send_path == "packet":
        g += ["--iface", SRC_IF, "--send-path", "packet", "--dst-mac", dmac]
    with capture(PORT) as box:
        out = sh(*nsx(SRC_NS, *g)).stdout
    rep = json.loads(out)
    return dict(tool=tool, pps=pps, threads=threads, send_path=send_path, own_achieved_pps=rep["achieved_pps"],
                own_rate_sustained=rep["rate_sustained"], own_max_burst=rep["max_burst"],
                own_taken_over=sum(t.get("taken_over", 0) for t in rep.get("per_thread") or []),
                **_gap_stats(box["times"], pps, seconds))


def bench_pacing_before(python, before, dmac, rates, rounds, seconds=2):
    """Two senders, this generator and `before` alternately, per rate and send path, rounds
    times: the p99 gap over the ideal of each, and their medians."""
    print("\n2b. pacing with 2 senders, before (%s) and after, alternating, %d rounds, %d s each"
          % (before[0], rounds, seconds))
    print("%5s %8s %7s %-8s | %8s %10s %10s %9s %9s" % ("round", "pps", "path", "which", "packets", "gap_p50us",
                                                        "gap_p99us", "p99/ideal", "taken"))
    rows = []
    for rnd in range(rounds):
        for pps in rates:
            for path in ("udp", "packet"):
                order = (("after", GENERATOR), ("before", before))
                for which, gen in (order if rnd % 2 == 0 else order[::-1]):
                    r = _pace_generator(python, gen, pps, 2, seconds, which, path, dmac)
                    r["round"] = rnd
                    rows.append(r)
                    print("%5d %8d %7s %-8s | %8d %10s %10s %9s %9s" % (
                        rnd, pps, path, which, r["packets"], r["gap_p50_us"], r["gap_p99_us"], r["p99_over_ideal"],
                        r["own_taken_over"]))
    summary = {}
    for pps in rates:
        for path in ("udp", "packet"):
            for which in ("before", "after"):
                v = sorted(r["p99_over_ideal"] for r in rows
                           if (r["pps"], r["send_path"], r["tool"]) == (pps, path, which))
                summary["%d %s %s" % (pps, path, which)] = {"median": v[len(v) // 2], "min": v[0], "max": v[-1]}
    for k, v in summary.items():
        print("p99/ideal %-22s median %.2f (%.2f-%.2f)" % (k, v["median"], v["min"], v["max"]))
    return {"rows": rows, "summary": summary}


def bench_pacing(python, seconds=2, before=None):
    print("\n2. pacing: 64-byte payloads for %d s, arrivals captured on the peer (tcpdump, ns timestamps)"
          % seconds)
    print("%-24s %8s | %8s %9s %10s %10s %10s %9s %12s" % ("tool", "pps", "packets", "expected", "rate_err%",
                                                            "gap_p50us", "gap_p99us", "p99/ideal", "own_pps"))
    rows = []
    for pps in (1000, 10000, 100000):
        n0 = len(rows)
        for threads in (1, 2):
            rows.append(_pace_generator(python, GENERATOR, pps, threads, seconds, "generator.py"))
            if before and threads == 2:
                rows.append(_pace_generator(python, before, pps, threads, seconds, "generator.py (before)"))
        srv = subprocess.Popen(nsx(DST_NS, "iperf3", "-s", "-1", "-p", "5201"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            with capture(5201) as box:
                r = sh(*nsx(SRC_NS, "iperf3", "-c", DST_IP, "-p", "5201", "-u", "-l", "64", "-b",
                            str(pps * 64 * 8), "-t", str(seconds), "-J"), check=False)
            own = None
            try:
                own = json.loads(r.stdout)["end"]["sum"]["packets"] / seconds
            except (ValueError, KeyError, TypeError):
                pass
            rows.append(dict(tool="iperf3 -u", pps=pps, threads=None, own_achieved_pps=own,
                             **_gap_stats(box["times"], pps, seconds)))
        finally:
            if srv.poll() is None:
                srv.terminate()
            srv.wait(timeout=10)
        for row in rows[n0:]:
            print("%-24s %8d | %8d %9d %10.4f %10s %10s %9s %12s" % (
                row["tool"] + (" x%d" % row["threads"] if row.get("threads") else ""), pps, row["packets"],
                row["expected"], row["rate_error_pct"], row["gap_p50_us"], row["gap_p99_us"], row["p99_over_ideal"],
                "%.1f" % row["own_achieved_pps"] if row["own_achieved_pps"] is not None else "-"))
    return rows


def bench_loopback(python):
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    print("\n3. loopback: %s, 2 s per case, 18-byte payloads, to an unread socket on 127.0.0.1" % python)
    print("%-28s %9s | %12s %9s %10s %7s %9s" % ("pattern", "target", "achieved_pps", "sustained", "not_offered",
                                                 "burst", "max_lag_us"))
    rows = []
    for pattern in (["constant"], ["burst", "--burst-size", "16"], ["poisson", "--seed", "1"]):
        for pps, threads in ((100000, 1), (5000000, 1), (5000000, 2)):
            cmd = [python, *GENERATOR, "--dst", "127.0.0.1", "--port", str(port), "--pps", str(pps),
                   "--size", "18", "--duration", "2", "--threads", str(threads), "--run-id", "1",
                   "--progress-s", "0", "--pattern"] + pattern
            r = json.loads(sh(*cmd).stdout)
            name = "%s x%d" % (" ".join(pattern), threads)
            rows.append({"case": name, "target_pps": pps, "achieved_pps": r["achieved_pps"],
                         "rate_sustained": r["rate_sustained"], "not_offered": r["not_offered"],
                         "max_burst": r["max_burst"], "max_lag_us": r["max_lag_us"], "elapsed_s": r["elapsed_s"]})
            print("%-28s %9d | %12.0f %9s %10d %7d %9.0f" % (name, pps, r["achieved_pps"], r["rate_sustained"],
                                                             r["not_offered"], r["max_burst"], r["max_lag_us"]))
    sink.close()
    return rows


def bench_pcapcheck(n=600000, threads=2):
    pcapcheck = _load("pcapcheck")
    eth_ip_udp = (b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
                  + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 1458, 0, 0x4000, 64, 17, 0,
                                bytes([10, 201, 0, 1]), bytes([10, 201, 0, 2]))
                  + struct.pack("!HHHH", 40000, 12345, 8 + 1458, 0))
    rec = bytearray(struct.pack("<IIII", 0, 0, 64, 14 + 20 + 8 + 1458) + eth_ip_udp + bytes(22))
    hdr = struct.Struct("!IIQH")
    lost = set(range(1000, n, 10007))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "synthetic.pcap")
        parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 64, 1)]
        for seq in range(n):
            if seq in lost:
                continue
            hdr.pack_into(rec, 16 + 42, 0x58444C42, seq, seq * 1000, 4242)
            parts.append(bytes(rec))
        with open(path, "wb") as f:
            f.write(b"".join(parts))
        del parts
        t1 = time.perf_counter()
        r = pcapcheck.verify_capture(path, run_id=4242, port=12345, scheduled=n, threads=threads)
        t2 = time.perf_counter()
    print("\n4. pcapcheck.verify_capture: %d records, %.2f s, %.0f packets/s; missing=%d (expected %d)"
          % (r["packets_in_file"], t2 - t1, r["packets_in_file"] / (t2 - t1), r["missing"], len(lost)))
    return {"packets": r["packets_in_file"], "seconds": round(t2 - t1, 3),
            "packets_per_s": round(r["packets_in_file"] / (t2 - t1))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the generator")
    ap.add_argument("--generator", default=None,
                    help="the generator to run (default dist/xdplab-source.pyz send, built first)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=str(REPO / "results" / "bench" / "generator.json"))
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: peak,pacing,loopback,pcapcheck")
    ap.add_argument("--pacing-before", default=None,
                    help="another generator (.pyz) whose two-sender pacing is measured beside this one's")
    ap.add_argument("--pacing-before-only", action="store_true",
                    help="with --pacing-before: only part 2b (2 senders, udp and packet paths, before and after "
                         "alternating, --rounds rounds at --pacing-rates), not part 2")
    ap.add_argument("--pacing-rates", default="10000,100000", help="part 2b's rates, packets/s")
    a = ap.parse_args()
    if a.generator is None:
        from xdplab.source import source_pyz
        GENERATOR[:] = [str(source_pyz()), "send"]
    else:
        GENERATOR[:] = [a.generator] + ([] if a.generator.endswith(".py") else ["send"])
    skip = set(filter(None, a.skip.split(",")))
    print("machine: %d CPUs, kernel %s, Python %s" % (os.cpu_count(), os.uname().release, sys.version.split()[0]))
    out = {"cpus": os.cpu_count(), "kernel": os.uname().release, "python": a.python, "generator": " ".join(GENERATOR),
           "trafgen": None, "iperf3": None}
    missing = [t for t in ("ip", "tc", "trafgen", "iperf3", "tcpdump", "taskset") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        print("parts 1-2 skipped: need root and %s" % (", ".join(missing) or "nothing else"))
        skip |= {"peak", "pacing"}
    else:
        out["trafgen"] = sh("trafgen", "-v", check=False).stdout.splitlines()[0]
        out["iperf3"] = sh("iperf3", "--version", check=False).stdout.splitlines()[0]
    if not {"peak", "pacing"} <= skip:
        with veth_pair() as dmac:
            if "peak" not in skip:
                out["peak"] = bench_peak(a.python, dmac, a.rounds)
                out["header_cost"] = bench_header_cost(a.python)
            if "pacing" not in skip:
                before = [a.pacing_before, "send"] if a.pacing_before else None
                if not a.pacing_before_only:
                    out["pacing"] = bench_pacing(a.python, before=before)
                if before:
                    out["pacing_before_after"] = bench_pacing_before(
                        a.python, before, dmac, [int(x) for x in a.pacing_rates.split(",")], a.rounds)
    if "loopback" not in skip:
        out["loopback"] = bench_loopback(a.python)
    if "pcapcheck" not in skip:
        out["pcapcheck"] = bench_pcapcheck()
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print("\nwritten: %s" % a.json)


if __name__ == "__main__":
    main()
