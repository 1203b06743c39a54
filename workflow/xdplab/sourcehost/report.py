"""The generator's JSON report, built in one place for both backends.

Its keys are the contract in PROTOCOL.md ("Generator command line and output");
the trafgen backend adds its own keys (``extra``) beside the common ones.
"""

import platform
import socket
import time

GENERATOR = "xdplab-generator/1"
SUSTAINED_TOLERANCE = 0.001  # rate_sustained: achieved within 0.1 % of the target


class Clock(object):
    """One sampling of the three clocks maps perf_counter() instants to the
    monotonic (send_ns, DUT-comparable on one machine) and Unix timelines."""

    def __init__(self):
        # Each clock is read once before: a first call costs ~5 us here, which
        # would shift the mapping by as much.
        time.perf_counter(), time.monotonic_ns(), time.time_ns()
        self.pc0 = time.perf_counter()
        self.mono0 = time.monotonic_ns()
        self.unix0 = time.time_ns()

    def mono_at(self, pc):
        return self.mono0 + int(round((pc - self.pc0) * 1e9))

    def unix_at(self, pc):
        return self.unix0 + int(round((pc - self.pc0) * 1e9))


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def merged_kinds(reports):
    """The senders' send_error_kinds added up: {errno name: count}."""
    kinds = {}
    for r in reports:
        for k, v in r["send_error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return kinds


def build(args, clock, backend, start_pc, end_pc, window_s, sent, not_offered, interrupted, per_thread,
          sent_per_s, warmup, source_counters, send_call, send_errors=0, send_error_kinds=None,
          failed_seqs=(), max_burst=None, refused_retries=0, batch_max=None, max_lag_us=None, extra=None):
    """The report of the measured run; pattern, seed, send path and threads are the
    command line's (the trafgen backend's are fixed there)."""
    achieved = sent / window_s if window_s > 0 else 0.0
    result = {
        "generator": GENERATOR,
        "backend": backend,
        "run_id": args.run_id,
        "dst": args.dst,
        "port": args.port,
        "target_pps": args.pps,
        "payload_bytes": args.size,
        "duration_s": float(args.duration),
        "threads": args.threads,
        "scheduled": args.scheduled,
        "sent": sent,
        "send_errors": send_errors,
        "send_error_kinds": send_error_kinds or {},
        "failed_seqs": list(failed_seqs),
        "elapsed_s": round(max(end_pc - start_pc, 0.0), 6),
        "window_s": round(window_s, 6),
        "achieved_pps": round(achieved, 3),
        "not_offered": not_offered,
        "rate_sustained": achieved >= args.pps * (1.0 - SUSTAINED_TOLERANCE),
        "max_burst": max_burst,
        "pattern": args.pattern,
        "burst_size": args.burst_size,
        "seed": args.seed,
        "send_path": args.send_path,  # the path taken (auto resolved: cli.resolve_auto)
        "send_path_requested": getattr(args, "send_path_requested", args.send_path),
        "send_path_why": getattr(args, "send_path_why", None),
        "send_call": send_call,
        "refused_retries": refused_retries,
        "batch_max": batch_max,
        "start_monotonic_ns": clock.mono_at(start_pc),
        "end_monotonic_ns": clock.mono_at(end_pc),
        "start_unix_ns": clock.unix_at(start_pc),
        "end_unix_ns": clock.unix_at(end_pc),
        "max_lag_us": max_lag_us,
        "interrupted": interrupted,
        "boot_id": boot_id(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "sent_per_s": sent_per_s,
        "warmup": warmup,
        "per_thread": per_thread,
        "source_counters": source_counters,
    }
    result.update(extra or {})
    return result
