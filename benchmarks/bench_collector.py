"""What the XDP collector costs per packet, beside a count-only floor, and how fast the
agent's consumer reads its records (figures, no assertions).  Needs root and BCC.

    /usr/bin/python3 benchmarks/bench_collector.py [--json FILE]     (make bench runs it)

1. BPF_PROG_TEST_RUN (no traffic, no driver: a cache-hot bound, never a substitute
   for the per-trial xdp_ns_per_pkt) of the collector as the agent loads it
   (collector `features`, and `counters`: the same parse and counters, no ring
   buffer) and of a minimal program that only increments one per-CPU counter,
   loaded the same way (BCC), on frames that match (our header, a run id in the
   session's range) with 18- and 1458-byte payloads.  Beside them, where the
   time goes: the floor plus one bpf_ktime_get_ns() (`floor_ktime`: what any
   per-packet timestamp costs), and the features path with its timestamp
   replaced by a constant (`features_no_ktime`: parse, counters, staging and
   batched ring-buffer output).  The kernel's duration is the
   total over `repeat` runs divided by `repeat`; 100,000 runs fit the 8 MiB ring, so
   no reservation fails; the median of 15 rounds is reported.
2. What observing a user's program costs: programs/pass_all.bpf.c (built with clang,
   loaded through the agent's libbpf loader as a session loads it) alone, and behind the
   collector in chain mode (features, counters: the collector's work, then a tail call
   into the program), under the same BPF_PROG_TEST_RUN.  The difference is what xdplab
   adds per packet around a program it observes with `observe: full` or `verdicts`.
3. The agent's ring-buffer consumer (its Features accounting, histograms and
   bitmaps included, and the features file): records per second over 100,000
   records put in the ring (in batches) by test runs, the staged rest included.

Takes about 20 s.
"""

from __future__ import annotations

import argparse
import copy
import ctypes as ct
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from xdplab.agent.bpf import Program, _sys_bpf  # noqa: E402
from xdplab.agent.bpfsrc import Sources  # noqa: E402
from xdplab.agent.features import Features  # noqa: E402

BPF_PROG_TEST_RUN = 10
PORT, RUN_ID = 12345, 4242
REPEAT, ROUNDS = 100_000, 15
FLOOR = """
BPF_PERCPU_ARRAY(counters, u64, 1);
int xdplab_floor(struct xdp_md *ctx)
{
	u32 idx = 0;
	u64 *v = counters.lookup(&idx);

	if (v)
		(*v)++;
	return XDP_PASS;
}
"""
FLOOR_KTIME = FLOOR.replace("(*v)++;", "*v += bpf_ktime_get_ns();")


class TestRunAttr(ct.Structure):
    # union bpf_attr, test member (Linux 5.x+): prog_fd, retval, data_size_in/out,
    # data_in/out, repeat, duration, then ctx and flags (left zero).
    _fields_ = [("prog_fd", ct.c_uint32), ("retval", ct.c_uint32),
                ("data_size_in", ct.c_uint32), ("data_size_out", ct.c_uint32),
                ("data_in", ct.c_uint64), ("data_out", ct.c_uint64),
                ("repeat", ct.c_uint32), ("duration", ct.c_uint32),
                ("ctx_size_in", ct.c_uint32), ("ctx_size_out", ct.c_uint32),
                ("ctx_in", ct.c_uint64), ("ctx_out", ct.c_uint64),
                ("flags", ct.c_uint32), ("cpu", ct.c_uint32), ("batch_size", ct.c_uint32),
                ("pad", ct.c_uint32)]


def frame(payload: int) -> bytes:
    """Ethernet + IPv4 + UDP to PORT, our header (magic, seq, send_ns, run id), zeros."""
    hdr = struct.pack("!IIQH", 0x58444C42, 7, time.monotonic_ns(), RUN_ID)
    data = hdr + bytes(payload - len(hdr))
    udp = struct.pack("!HHHH", 40000, PORT, 8 + len(data), 0)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(data), 0, 0, 64, 17, 0,
                               bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    csum = sum(struct.unpack("!10H", bytes(ip)))
    while csum > 0xFFFF:
        csum = (csum & 0xFFFF) + (csum >> 16)
    ip[10:12] = struct.pack("!H", ~csum & 0xFFFF)
    eth = bytes.fromhex("020000000002" "020000000001") + b"\x08\x00"
    return eth + bytes(ip) + udp + data


def test_run(prog_fd: int, data: bytes, repeat: int) -> float:
    """Mean ns per run of `repeat` runs on `data` (the kernel's own figure)."""
    buf = ct.create_string_buffer(data, len(data))
    out = ct.create_string_buffer(len(data) + 256)
    attr = TestRunAttr(prog_fd=prog_fd, data_size_in=len(data), data_size_out=len(out),
                       data_in=ct.addressof(buf), data_out=ct.addressof(out), repeat=repeat)
    _sys_bpf(BPF_PROG_TEST_RUN, attr)
    return float(attr.duration)


def median_ns(prog_fd: int, data: bytes, drain=None) -> float:
    runs = []
    for _ in range(ROUNDS):
        runs.append(test_run(prog_fd, data, REPEAT))
        if drain:
            drain()
    return statistics.median(runs)


def observer_cost(sources) -> dict:
    """ns per packet of pass_all alone and behind the collector's tail call (see above)."""
    import platform
    import subprocess

    from xdplab.agent.bpfobject import BpfObject

    out = {"program": "programs/pass_all.bpf.c", "ns_per_packet": {}}
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "pass_all.o")
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I", str(REPO / "bpf"),
                        "-I", f"/usr/include/{platform.machine()}-linux-gnu", "-c",
                        str(REPO / "programs" / "pass_all.bpf.c"), "-o", obj], check=True)
        user = BpfObject(obj, tail_call_target=["xdp_pass_all"])
        chained = {c: Program(sources, PORT, c, chain=True) for c in ("features", "counters")}
        try:
            fd = user.prog_fd("xdp_pass_all")
            for prog in chained.values():
                prog.set_run_range(RUN_ID, 1)
                prog.set_chain(fd)
            for payload in (18, 1458):
                data = frame(payload)
                row = {"program_alone": round(median_ns(fd, data), 1)}
                for name, prog in chained.items():
                    row[f"behind_{name}"] = round(median_ns(prog.prog_fd, data, drain=prog.consume), 1)
                    row[f"observer_{name}"] = round(row[f"behind_{name}"] - row["program_alone"], 1)
                out["ns_per_packet"][f"{payload}B"] = row
                print(f"{payload:5d} B payload: pass_all alone {row['program_alone']} ns; behind the "
                      f"collector (features) {row['behind_features']} ns, (counters) "
                      f"{row['behind_counters']} ns: the observer adds {row['observer_features']} / "
                      f"{row['observer_counters']} ns", flush=True)
        finally:
            for prog in chained.values():
                prog.set_chain(None)
                prog.close()
            user.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    from bcc import BPF

    sources = Sources.load()
    floors = {name: BPF(text=text) for name, text in (("floor", FLOOR), ("floor_ktime", FLOOR_KTIME))}
    floor_fds = {name: b.load_func("xdplab_floor", BPF.XDP).fd for name, b in floors.items()}
    progs = {c: Program(sources, PORT, c) for c in ("features", "counters")}
    # The features path without its timestamp: same source, bpf_ktime_get_ns() replaced.
    ktime = "rec->arrival_ns = bpf_ktime_get_ns();"
    assert ktime in sources.text
    no_ktime = copy.copy(sources)
    no_ktime.text = sources.text.replace(ktime, "rec->arrival_ns = 0;")
    progs["features_no_ktime"] = Program(no_ktime, PORT, "features")
    for prog in progs.values():
        prog.set_run_range(RUN_ID, 1)
    figures = {"method": "BPF_PROG_TEST_RUN, %d runs per round, median of %d rounds" % (REPEAT, ROUNDS),
               "ns_per_packet": {}}
    try:
        for payload in (18, 1458):
            data = frame(payload)
            row = {name: round(median_ns(fd, data), 1) for name, fd in floor_fds.items()}
            row["floor_ktime_ratio"] = round(row["floor_ktime"] / row["floor"], 2)
            for name, prog in progs.items():
                row[name] = round(median_ns(prog.prog_fd, data, drain=prog.consume), 1)
                row[f"{name}_ratio"] = round(row[name] / row["floor"], 2)
            row["features_over_floor_ktime"] = round(row["features"] / row["floor_ktime"], 2)
            snap = progs["counters"].snapshot()["counters"]
            row["matched_check"] = snap.get("XDPLAB_MATCHED", 0) > 0
            figures["ns_per_packet"][f"{payload}B"] = row
            print(f"{payload:5d} B payload: floor {row['floor']} ns, features {row['features']} ns "
                  f"({row['features_ratio']}x), counters {row['counters']} ns ({row['counters_ratio']}x); "
                  f"floor + ktime {row['floor_ktime']} ns ({row['floor_ktime_ratio']}x), features "
                  f"without ktime {row['features_no_ktime']} ns ({row['features_no_ktime_ratio']}x)",
                  flush=True)
        figures["observer"] = observer_cost(sources)
        # The consumer: the agent's own per-record work on 100,000 records.
        prog = progs["features"]
        prog.open_ring()           # as a session does: the agent maps the ring while armed
        prog.consume()
        prog.drain_staged()
        with tempfile.TemporaryDirectory() as tmp:
            feats = Features(RUN_ID, 1, REPEAT, sources.feature_struct(),
                             features_path=os.path.join(tmp, "features.bin"))
            prog.on_record = feats.on_record
            test_run(prog.prog_fd, frame(18), REPEAT)
            t0 = time.perf_counter()
            prog.consume()
            prog.drain_staged()
            summary = feats.summary()
            took = time.perf_counter() - t0
        figures["consumer"] = {"records": feats.measured_received, "seconds": round(took, 3),
                               "records_per_s": round(feats.measured_received / took) if took else None,
                               "features_file_bytes": summary["features_file"]["bytes"],
                               "batch": sources.batch}
        print(f"consumer: {feats.measured_received} records in {took:.3f} s = "
              f"{figures['consumer']['records_per_s']:,} records/s (features file included)", flush=True)
    finally:
        for prog in progs.values():
            prog.close()
        for b in floors.values():
            b.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
