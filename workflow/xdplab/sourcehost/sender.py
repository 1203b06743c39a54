"""The Python backend: sender processes forked, started together, watched, and
their figures added up into the report.

``--threads T`` starts T sender processes (fork: CPython's GIL let threads
overlap little more than their system calls), each running ``stream.send_stream``.
They share one small memory map with the main process (``shm_layout``): a stop
flag, each sender's counts after every batch (for the progress lines), the
start, and a ready byte each.  Packet 0 is due START_LEAD_S after every sender
said it is ready: a readiness signal, not a fixed wait.
"""

import json
import mmap
import os
import signal
import struct
import sys
import time

from . import control, report, sockets
from .counters import WindowStart, counters_report, read_counters, wait_drained
from .stream import BATCH_MAX, END_GRACE_S, MAX_FAILED_SEQS, Sender, send_stream, stream_count

# A sender not ready within READY_TIMEOUT_S is started without (it sends late, and
# says so in its lag).
START_LEAD_S = 0.002
READY_TIMEOUT_S = 1.0
READY_POLL_S = 0.0002
TIMER_SLACK_NS = 1000
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29


def _prepare_child():
    """In a freshly forked sender: stdio to /dev/null (it must not hold the
    controller's pipes open), SIGTERM when the main process dies (Linux), a 1 us
    timer slack (sleeps end closer to their deadline)."""
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        try:
            os.dup2(fd, target)
        except OSError:
            pass
    os.close(fd)
    libc = sockets.load_libc()
    if libc is not None:
        try:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            libc.prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)
        except (AttributeError, OSError):
            pass
    return libc


def _empty_report(sender, end_pc, crash=None):
    """A sender's report when it sent nothing (it crashed first, or was killed)."""
    return {"index": sender.index, "scheduled": sender.scheduled, "attempted": 0, "send_errors": 0,
            "send_error_kinds": {}, "failed_seqs": [], "max_lag_s": 0.0, "max_burst": 0,
            "end_pc": end_pc, "first_pc": None, "interrupted": True, "send_call": None,
            "crash": crash, "per_s": None, "warmup": None}


def _child(sender, cfg, shm, wfd):
    """The body of a forked sender; never returns."""
    report_ = _empty_report(sender, time.perf_counter())
    try:
        stop = [False]

        def on_signal(signum, frame):
            stop[0] = True

        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), on_signal)
        cfg = dict(cfg, libc=_prepare_child())
        if os.getppid() != cfg["ppid"]:
            stop[0] = True  # the main process died before PDEATHSIG was set
        cfg = _await_start(sender.index, cfg, shm, stop)
        report_ = send_stream(sender, cfg, shm, stop)
    except BaseException as e:  # the main process reports it on stderr and exits 1, after the JSON
        report_["crash"] = repr(e)
        report_["end_pc"] = time.perf_counter()
    try:
        data = (json.dumps(report_) + "\n").encode()
        while data:
            data = data[os.write(wfd, data):]
    except OSError:
        pass
    os._exit(0)


def shm_layout(T):
    """The senders' shared memory: byte 0 the stop flag; sender t's (attempted, errors) as
    two u64 at 8 + 16*t; the start (a perf_counter() instant, f64) after them, then one
    ready byte per sender, then (claim_offset) the next unclaimed packet of each phase
    (warm-up, measured run) as two u64."""
    start_off = 8 + 16 * T
    return start_off, start_off + 8, claim_offset(T) + 16


def claim_offset(T):
    return (8 + 16 * T + 8 + T + 7) // 8 * 8


def claim_lock(args):
    """The lock under which the senders claim packets from one shared "next packet"
    (stream.TAKEOVER_GRACE), or None: one sender, the poisson pattern (each sender draws
    its own times), or no POSIX semaphores here (each sender keeps its own slots)."""
    if args.threads < 2 or args.pattern == "poisson":
        return None
    try:
        import multiprocessing
        return multiprocessing.Lock()
    except (ImportError, OSError):
        return None


def _await_start(t, cfg, shm, stop):
    """In sender t: say it is ready, wait for the main process to set the start, and
    return cfg with its phases moved to that start (they were planned from a nominal one)."""
    start_off, ready_off, _ = shm_layout(cfg["threads"])
    shm[ready_off + t] = 1
    while not (stop[0] or shm[0]):
        start = struct.unpack_from("=d", shm, start_off)[0]
        if start > 0:
            shift = start - cfg["phases"][0]["start"]
            phases = [dict(ph, start=ph["start"] + shift, end=ph["end"] + shift) for ph in cfg["phases"]]
            return dict(cfg, phases=phases)
        time.sleep(READY_POLL_S)
    return cfg


def _set_start(senders, shm, T):
    """In the main process: wait until every sender is ready (within READY_TIMEOUT_S, a
    sender that died is not waited for), then set the start START_LEAD_S ahead; return it."""
    start_off, ready_off, _ = shm_layout(T)
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while time.perf_counter() < deadline and not shm[0]:
        waiting = [s for s in senders if not shm[ready_off + s.index]]
        if not waiting:
            break
        for s in waiting:
            try:
                if os.waitpid(s.pid, os.WNOHANG)[0]:
                    shm[ready_off + s.index] = 1  # it ended: nothing to wait for
            except ChildProcessError:
                shm[ready_off + s.index] = 1
        time.sleep(READY_POLL_S)
    start = time.perf_counter() + START_LEAD_S
    struct.pack_into("=d", shm, start_off, start)
    return start


def _close_all(senders):
    for s in senders:
        for sock in [s.sock] + s.keep:
            if sock is not None:
                sock.close()


def open_senders(args):
    """Sockets for every sender, opened before anything is sent, so that a bad
    --src or a packet socket without privilege fails the run with exit 2."""
    senders = [Sender(t, args.threads, args.scheduled) for t in range(args.threads)]
    cfg = {}
    if args.send_path == "packet":
        src_mac, src_ip = sockets.packet_source(args.iface, args.src, args.size, "--send-path packet",
                                                " with send path packet")
        cfg.update(src_mac=src_mac, dst_mac=args.dst_mac, src_ip=src_ip)
    try:
        for s in senders:
            if args.send_path == "packet":
                _open_packet_sender(s, args.iface, src_ip)
            else:
                try:
                    s.sock = sockets.open_udp(args.src)
                except OSError as e:
                    if args.src:
                        control.die("cannot open a UDP socket bound to --src %s: %s" % (args.src, e))
                    control.die("cannot open a UDP socket: %s" % e, 1)
    except SystemExit:
        _close_all(senders)
        raise
    return senders, cfg


def _open_packet_sender(s, iface, src_ip):
    try:
        s.sock = sockets.open_packet(iface)
    except OSError as e:
        control.die("--send-path packet: cannot open an AF_PACKET socket on --iface %s (needs root or "
                    "CAP_NET_RAW): %s" % (iface, e))
    # A UDP socket bound to the source port reserves it: no other
    # program's traffic shares this sender's flow.
    try:
        keep = sockets.open_udp(src_ip)
    except OSError as e:
        control.die("--src %s cannot be bound: %s" % (src_ip, e))
    s.keep.append(keep)
    s.sport = keep.getsockname()[1]


def _read_report(fd):
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    try:
        return json.loads(b"".join(chunks).decode())
    except ValueError:
        return None


def sent_per_second(reports, duration):
    """Packets sent in each whole second of the measured window, from its start,
    summed over senders; a batch counts in the second in which it went out.  The
    last partial second (duration not a whole number of seconds) and packets sent
    in the END_GRACE_S after the window are left out, so sum(sent_per_s) <= sent."""
    whole = int(duration + 1e-9)
    out = [0] * whole
    for r in reports:
        for i, v in enumerate((r.get("per_s") or [])[:whole]):
            out[i] += v
    return out


def warmup_report(args, reports, senders, mono_at, start0, start):
    """The warm-up phase's figures (None without --warmup-s)."""
    if args.warmup_s <= 0:
        return None
    ws = [r.get("warmup") or {"scheduled": stream_count(args.warmup_scheduled, args.threads, s.index),
                              "attempted": 0, "send_errors": 0, "send_error_kinds": {}, "failed_seqs": []}
          for s, r in zip(senders, reports)]
    attempted = sum(w["attempted"] for w in ws)
    errors = sum(w["send_errors"] for w in ws)
    kinds = report.merged_kinds(ws)
    return {"run_id": args.warmup_run_id, "duration_s": float(args.warmup_s),
            "scheduled": args.warmup_scheduled, "sent": attempted - errors, "send_errors": errors,
            "send_error_kinds": kinds, "not_offered": args.warmup_scheduled - attempted,
            "failed_seqs": sorted(x for w in ws for x in w["failed_seqs"])[:MAX_FAILED_SEQS],
            "start_monotonic_ns": mono_at(start0), "end_monotonic_ns": mono_at(start)}


def plan_phases(args, start0):
    """The warm-up (if any) and the measured run on one absolute schedule from start0."""
    start = start0 + args.warmup_s  # the measured window's start
    duration = float(args.duration)
    phases = []
    if args.warmup_s > 0:
        # No grace at the warm-up's end: the measured window begins on time, and a
        # warm-up packet not sent by then is the warm-up's not_offered.
        phases.append({"run_id": args.warmup_run_id, "scheduled": args.warmup_scheduled, "start": start0,
                       "duration": float(args.warmup_s), "end": start, "seed_tag": "%d/%d/warmup",
                       "per_s": False})
    phases.append({"run_id": args.run_id, "scheduled": args.scheduled, "start": start, "duration": duration,
                   "end": start + duration + END_GRACE_S, "seed_tag": "%d/%d", "per_s": True})
    return phases


def _fork(senders, cfg, shm):
    """One process per sender; each holds only its own sockets."""
    sys.stdout.flush()
    sys.stderr.flush()
    for s in senders:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            for other in senders:
                if other.rfd is not None:
                    os.close(other.rfd)
                if other is not s and other.pid is None:
                    for sock in [other.sock] + other.keep:
                        sock.close()  # a later sender's: not this one's to hold
            _child(s, cfg, shm, wfd)  # never returns
        os.close(wfd)
        s.pid, s.rfd = pid, rfd
        for sock in [s.sock] + s.keep:
            sock.close()  # the sender holds its own copy


class _Progress(object):
    """The progress lines on stderr: packets sent so far (warm-up and measured run
    together) and the rate over the last interval, summed over senders."""

    def __init__(self, shm, T, every_s, start0):
        self.shm, self.T, self.every_s, self.start0 = shm, T, every_s, start0
        self.next = start0 + every_s
        self.last_t, self.last_sent = start0, 0

    def sent(self):
        total = 0
        for t in range(self.T):
            attempted, errs = struct.unpack_from("=QQ", self.shm, 8 + 16 * t)
            total += attempted - errs
        return total

    def due(self, now):
        return self.every_s > 0 and now >= self.next

    def write(self, now):
        """Write one line; False when stderr is gone."""
        sent = self.sent()
        rate = (sent - self.last_sent) / (now - self.last_t) if now > self.last_t else 0.0
        # t from the first packet's due time, sent over warm-up and measured run together
        ok = control.write(sys.stderr, "progress t=%.1fs sent=%d pps=%.0f\n" % (now - self.start0, sent, rate))
        self.last_t, self.last_sent = now, sent
        self.next += self.every_s
        while self.next <= now:
            self.next += self.every_s
        return ok

    def wait(self, now):
        if self.every_s > 0:
            return min(control.WATCH_S, max(self.next - now, 0.001))
        return control.WATCH_S


def _supervise(senders, shm, progress, caught, window_start):
    """Until every sender ended: their reports collected, progress written, the source's
    counters read at the measured window's start (window_start), and every sender stopped
    on a signal or when the controller is gone.  Returns (gone, stop_pc)."""
    watch = control.StreamWatch([("stdout", sys.stdout), ("stderr", sys.stderr)])
    gone = None  # why we think the controller is gone
    running = {s.pid: s for s in senders}
    stop_pc = None
    while running:
        for pid in list(running):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                s = running.pop(pid)
                s.report = _read_report(s.rfd)
        if not running:
            break
        now = time.perf_counter()
        if not shm[0]:
            window_start.poll(now)
        if gone is None:
            broken = watch.broken()
            if broken:
                gone = "%s lost its reader" % broken
        if gone is None and progress.due(now) and not progress.write(now):
            gone = "writing a progress line to stderr failed"
        if (gone is not None or caught) and not shm[0]:
            shm[0] = 1  # every sender stops within a batch or MAX_SLEEP_S
            stop_pc = time.perf_counter()
        # a signal interrupts the sleep and its handler runs at once
        time.sleep(window_start.wait(now, progress.wait(now)))
    return gone, stop_pc


def run(args):
    """Send the run described by cli.parse_args() and return (result dict, exit status)."""
    T = args.threads
    senders, cfg = open_senders(args)
    stop, caught = control.stop_on_signals()
    iface = args.counters_iface
    before = read_counters(iface)
    # Shared with the senders (shm_layout): the stop flag, each sender's counts after
    # every batch, the start and the senders' ready bytes.
    shm = mmap.mmap(-1, shm_layout(T)[2])
    lock = claim_lock(args)
    clock = report.Clock()
    # The warm-up's start (or the measured window's, without one) as planned; the senders
    # move their schedule to the actual start once all are ready (_set_start).
    start0 = clock.pc0 + READY_TIMEOUT_S
    cfg.update(threads=T, pps=args.pps, phases=plan_phases(args, start0), run_id=args.run_id,
               ppid=os.getpid(), send_path=args.send_path, size=args.size, dst=args.dst, port=args.port,
               pattern=args.pattern, burst_size=args.burst_size, seed=args.seed,
               claim=(lock, claim_offset(T)) if lock is not None else None)
    _fork(senders, cfg, shm)
    start0 = _set_start(senders, shm, T)
    start = start0 + args.warmup_s
    progress = _Progress(shm, T, args.progress_s, start0)
    window_start = WindowStart(iface, start if args.warmup_s > 0 else None, progress.sent)
    gone, stop_pc = _supervise(senders, shm, progress, caught, window_start)

    t_drain = time.perf_counter()
    after = wait_drained(iface) if sys.platform.startswith("linux") else read_counters(iface)
    drained_s = time.perf_counter() - t_drain
    crashed = [(s.index, (s.report or {}).get("crash") or "ended without a report (killed?)")
               for s in senders if s.report is None or s.report.get("crash")]
    if crashed:
        sys.stderr.write("%s: error: sender %d failed: %s\n" % ((control.PROG,) + crashed[0]))
    reports = [s.report if s.report is not None else _empty_report(s, start0) for s in senders]
    # With a shared schedule the packets nobody claimed are seqs [claimed, scheduled): each
    # sender's not_offered is its share (seq % threads) of them.
    claimed = (struct.unpack_from("=Q", shm, claim_offset(T) + 8 * (1 if args.warmup_s > 0 else 0))[0]
               if lock is not None else None)
    result = _result(args, clock, reports, senders, start0, start, caught, gone, stop_pc, claimed,
                     counters_report(iface, before, after, drained_s, args.warmup_s > 0, window_start.snap,
                                     window_start.late_s, window_start.sent_by_then))
    return result, control.exit_status(caught, gone, bool(crashed))


def _result(args, clock, reports, senders, start0, start, caught, gone, stop_pc, claimed, source_counters):
    """The senders' reports added up into the run's report."""
    sent = sum(r["attempted"] - r["send_errors"] for r in reports)
    attempted = sum(r["attempted"] for r in reports)
    end_pc = max(r["end_pc"] for r in reports)
    duration = float(args.duration)
    interrupted = bool(caught) or gone is not None or any(r["interrupted"] for r in reports)
    if interrupted:
        # The window ends where the sending was stopped (or the senders ended, if earlier).
        stopped = min(x for x in (stop_pc, end_pc) if x is not None)
        window = min(max(stopped - start, 0.0), duration)
    else:
        window = duration
    calls = {r.get("send_call") for r in reports} - {None}
    # "scheduled" is a sender's share (seq % threads); with a shared schedule it may send
    # packets of another's share (taken_over), and sent - taken_over + not_offered need
    # not add up per sender, only over all of them.
    T = args.threads
    per_thread = [
        {"thread": r["index"], "scheduled": r["scheduled"], "sent": r["attempted"] - r["send_errors"],
         "send_errors": r["send_errors"],
         "not_offered": (r["scheduled"] - r["attempted"] if claimed is None
                         else r["scheduled"] - stream_count(claimed, T, r["index"])),
         "taken_over": r.get("taken_over", 0),
         "max_burst": r["max_burst"], "max_lag_us": round(r["max_lag_s"] * 1e6, 1)}
        for r in reports]
    return report.build(
        args, clock, "python", start, end_pc, window, sent, args.scheduled - attempted, interrupted, per_thread,
        sent_per_second(reports, duration), warmup_report(args, reports, senders, clock.mono_at, start0, start),
        source_counters, calls.pop() if len(calls) == 1 else None,
        send_errors=sum(r["send_errors"] for r in reports), send_error_kinds=report.merged_kinds(reports),
        failed_seqs=sorted(s for r in reports for s in r["failed_seqs"])[:MAX_FAILED_SEQS],
        max_burst=max(r["max_burst"] for r in reports),
        refused_retries=sum(r.get("refused_retries", 0) for r in reports), batch_max=BATCH_MAX,
        max_lag_us=round(max(r["max_lag_s"] for r in reports) * 1e6, 1))
