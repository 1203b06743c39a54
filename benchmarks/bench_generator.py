"""Figures for the traffic generator and the capture checker on this machine (no assertions).

    make bench                                         (runs every benchmarks/bench_*.py)
    python3 benchmarks/bench_generator.py [PYTHON]     (any python3 >= 3.8; PYTHON: the
                                                        interpreter that runs the generator,
                                                        default: the one running this file)

1. generator.py as a subprocess, 2 s per case, sending to a UDP socket on
   127.0.0.1 that nobody reads (its queue fills and the kernel drops the rest,
   so the receiver costs almost nothing).  For each rate, payload size and
   thread count: achieved pps, max lag behind the schedule, and the
   generator's CPU seconds (user + system, from wait4).  On loopback the
   generator's system time includes the delivery to the socket.
2. pcapcheck.verify_capture on a synthetic 600,000-packet capture (snaplen 64,
   two streams, a few losses): packets parsed per second.

Takes about 40 s.
"""

import importlib.util
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
GENERATOR = REPO / "workflow" / "xdplab" / "generator.py"


def _load(name):
    spec = importlib.util.spec_from_file_location("xdplab_" + name, REPO / "workflow" / "xdplab" / (name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_generator(python):
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    print("generator: %s, 2 s per case, to 127.0.0.1:%d (unread socket)" % (python, port))
    print("%9s %7s %7s | %12s %9s %12s %8s %8s" % ("target", "payload", "threads", "achieved_pps",
                                                    "sent/sch", "max_lag_us", "cpu_s", "cpu_pct"))
    for pps in (10000, 50000, 100000):
        for size in (18, 1458):
            for threads in (1, 2):
                cmd = [python, str(GENERATOR), "--dst", "127.0.0.1", "--port", str(port), "--pps", str(pps),
                       "--size", str(size), "--duration", "2", "--threads", str(threads), "--run-id", "1",
                       "--progress-s", "0"]
                p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                out = p.stdout.read()
                err = p.stderr.read()
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
                if p.returncode != 0:
                    print("  failed (%s): %s" % (p.returncode, err.decode().strip()))
                    continue
                r = json.loads(out)
                cpu = ru.ru_utime + ru.ru_stime
                print("%9d %7d %7d | %12.0f %9s %12.1f %8.2f %7.0f%%" % (
                    pps, size, threads, r["achieved_pps"], "%.3f" % (r["sent"] / r["scheduled"]),
                    r["max_lag_us"], cpu, 100.0 * cpu / max(r["elapsed_s"], 1e-9)))
    sink.close()


def bench_pcapcheck(n=600000, threads=2):
    pcapcheck = _load("pcapcheck")
    eth_ip_udp = (b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
                  + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 1458, 0, 0x4000, 64, 17, 0,
                                bytes([10, 201, 0, 1]), bytes([10, 201, 0, 2]))
                  + struct.pack("!HHHH", 40000, 12345, 8 + 1458, 0))
    rec = bytearray(struct.pack("<IIII", 0, 0, 64, 14 + 20 + 8 + 1458) + eth_ip_udp + bytes(22))
    assert len(rec) == 16 + 64
    hdr = struct.Struct("!IIQH")
    lost = set(range(1000, n, 10007))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "synthetic.pcap")
        t0 = time.perf_counter()
        parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 64, 1)]
        for seq in range(n):
            if seq in lost:
                continue
            hdr.pack_into(rec, 16 + 42, 0x58444C42, seq, seq * 1000, 4242)
            parts.append(bytes(rec))
        with open(path, "wb") as f:
            f.write(b"".join(parts))
        del parts
        size = os.path.getsize(path)
        t1 = time.perf_counter()
        r = pcapcheck.verify_capture(path, run_id=4242, port=12345, scheduled=n, threads=threads)
        t2 = time.perf_counter()
    print("\npcapcheck: %d records, %.1f MB (built in %.1f s)" % (r["packets_in_file"], size / 1e6, t1 - t0))
    print("  verify_capture: %.2f s, %.0f packets/s; missing=%d (expected %d), unique=%d"
          % (t2 - t1, r["packets_in_file"] / (t2 - t1), r["missing"], len(lost), r["unique"]))


def main():
    python = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    print("machine: %d CPUs, Python %s\n" % (os.cpu_count(), sys.version.split()[0]))
    bench_generator(python)
    bench_pcapcheck()


if __name__ == "__main__":
    main()
