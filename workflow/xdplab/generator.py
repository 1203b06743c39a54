#!/usr/bin/env python3
"""xdplab traffic generator: paced UDP packets carrying the xdplab payload header.

Runs on the source host of a trial.  It is uploaded over SSH as this one file
and run with whatever ``python3`` (>= 3.8) is there, on Linux or macOS, so it
imports nothing but the Python standard library.  The contract it implements
is in ``workflow/xdplab/PROTOCOL.md`` ("Payload header", "Generator command
line and output"); the header layout mirrors ``bpf/xdplab.h``.

Usage::

    python3 generator.py --dst 10.201.0.2 --port 12345 --pps 10000 --size 1458 \\
        --duration 5 --threads 2 --run-id 4242 [--src 10.201.0.1] [--progress-s 1]

Every UDP payload is ``--size`` bytes: an 18-byte header (magic, seq, send_ns,
run_id; network byte order) followed by zero bytes.  Thread ``t`` of ``T``
sends ``seq = k*T + t`` for its ``k``-th packet, so the run's sequence numbers
are ``0 .. scheduled-1`` with ``scheduled = ceil(pps * duration)``.  Packet
``i`` is due at ``start + i/pps`` on ``time.perf_counter()``, where ``start``
is one absolute deadline shared by all threads.  A thread sends every packet
that is due, then sleeps until its next one; when it is behind it does not
sleep at all, and ``max_lag_us`` and ``achieved_pps`` show by how much it
could not keep up.

Progress goes to stderr every ``--progress-s`` seconds (at most 1; 0 turns
it off): ``progress t=3.0s sent=30000 pps=10000``, where ``pps`` is the rate
over the last interval, summed over threads.  At the end one JSON object goes
to stdout.  SIGTERM, SIGINT and SIGHUP stop the sending within a packet (or
0.1 s of sleep); the JSON is still printed, with ``"interrupted": true``.

The generator must not outlive its controller.  Over SSH without a terminal
a broken session sends no SIGHUP: the only sign is that the pipes to sshd
lose their reader.  So a failed write of a progress line (EPIPE, EIO, a
closed stream), or stdout/stderr reporting an error or hang-up when polled
(every 50 ms, which also covers ``--progress-s 0``), means "the controller is
gone": sending stops at once.

Exit status: 0 all scheduled packets were offered; 128 + N stopped by signal
N; 1 a sending thread crashed (after the JSON); 2 bad arguments (one line on
stderr naming the argument) or an unbindable ``--src``; 3 the controller is
gone (stdout or stderr broken; the JSON is still attempted).

Each thread has its own unconnected UDP socket and uses ``sendto``.  A
connected socket's ``send`` is ~15% faster in CPython, but once the
destination answers with ICMP port-unreachable the kernel fails the next
``send`` with ECONNREFUSED and that packet is never sent: a connected
generator aimed at a host without a listener loses packets on the source
side.  An unconnected socket ignores ICMP errors, so every packet is offered.

With CPython's GIL the threads do not run Python code in parallel (the GIL is
released only inside ``sendto`` and ``sleep``); a second thread helps mostly
by overlapping one thread's system call with the other's Python work.
"""

import argparse
import errno
import ipaddress
import json
import math
import os
import platform
import select
import signal
import socket
import struct
import sys
import threading
import time

GENERATOR = "xdplab-generator/1"
MAGIC = 0x58444C42  # "XDLB", XDPLAB_MAGIC in bpf/xdplab.h
HEADER = struct.Struct("!IIQH")  # magic, seq, send_ns, run_id: XDPLAB_HDR_LEN bytes
HEADER_LEN = HEADER.size
MAX_PAYLOAD = 65507  # largest UDP payload over IPv4
MAX_FAILED_SEQS = 1000
START_DELAY_S = 0.05  # lead time so every thread is waiting before packet 0 is due
MAX_SLEEP_S = 0.1  # a sleeping thread looks at the stop flag at least this often
SNDBUF_BYTES = 4 << 20
MAX_PROGRESS_S = 1.0  # a broken SSH session is noticed within about this long
WATCH_S = 0.05  # the main thread checks signals, threads and its output streams this often
EXIT_CONTROLLER_GONE = 3


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit status 2."""

    def error(self, message):
        sys.stderr.write("%s: error: %s\n" % (self.prog, message))
        sys.exit(2)


def _ipv4(text):
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an IPv4 address" % text)


def parse_args(argv=None):
    p = _Parser(
        prog="generator.py",
        description="Send paced UDP packets with the xdplab payload header.",
        epilog="example: generator.py --dst 10.201.0.2 --port 12345 --pps 10000 "
        "--size 1458 --duration 5 --threads 2 --run-id 4242",
    )
    p.add_argument("--dst", required=True, type=_ipv4, help="destination IPv4 address")
    p.add_argument("--port", required=True, type=int, help="destination UDP port (1..65535)")
    p.add_argument("--pps", required=True, type=int, help="offered rate, packets per second, summed over threads")
    p.add_argument("--size", required=True, type=int,
                   help="UDP payload bytes (%d..%d)" % (HEADER_LEN, MAX_PAYLOAD))
    p.add_argument("--duration", required=True, type=float, help="seconds of traffic")
    p.add_argument("--threads", type=int, default=1, help="sending threads, one socket each (default 1)")
    p.add_argument("--run-id", required=True, type=int, help="run identifier written into every packet (0..65535)")
    p.add_argument("--src", type=_ipv4, default=None, help="source IPv4 address to bind to")
    p.add_argument("--progress-s", type=float, default=1.0,
                   help="seconds between progress lines on stderr, at most %g; 0 turns them "
                   "off (default 1)" % MAX_PROGRESS_S)
    a = p.parse_args(argv)

    if not 1 <= a.port <= 65535:
        p.error("--port must be 1..65535, got %d" % a.port)
    if a.pps < 1:
        p.error("--pps must be at least 1, got %d" % a.pps)
    if not HEADER_LEN <= a.size <= MAX_PAYLOAD:
        p.error("--size must be %d..%d bytes, got %d" % (HEADER_LEN, MAX_PAYLOAD, a.size))
    if not (a.duration > 0 and math.isfinite(a.duration)):
        p.error("--duration must be a positive number of seconds, got %s" % a.duration)
    if not 1 <= a.threads <= 256:
        p.error("--threads must be 1..256, got %d" % a.threads)
    if not 0 <= a.run_id <= 0xFFFF:
        p.error("--run-id must be 0..65535 (it is a u16 in the header), got %d" % a.run_id)
    if not (0 <= a.progress_s <= MAX_PROGRESS_S):
        p.error("--progress-s must be 0 (off) or a number of seconds up to %g, got %s"
                % (MAX_PROGRESS_S, a.progress_s))
    # Packets i with i/pps < duration; the epsilon keeps 10000 * 0.3 from becoming 3001.
    a.scheduled = int(math.ceil(a.pps * a.duration - 1e-9))
    if a.scheduled < 1:
        p.error("--pps x --duration schedules no packet")
    if a.scheduled > 1 << 32:
        p.error("--pps x --duration schedules %d packets; seq is a u32 (at most %d)"
                % (a.scheduled, 1 << 32))
    return a


class _Thread(object):
    """What one sending thread owns and reports."""

    __slots__ = ("index", "scheduled", "sock", "buf", "attempted", "errors", "error_kinds",
                 "failed_seqs", "max_lag_s", "end_pc", "crash")

    def __init__(self, index, threads, scheduled):
        self.index = index
        # seqs index, index+threads, ... below scheduled
        self.scheduled = (scheduled - index + threads - 1) // threads if index < scheduled else 0
        self.sock = None
        self.buf = None
        self.attempted = 0  # updated per packet so progress lines can read it
        self.errors = 0
        self.error_kinds = {}
        self.failed_seqs = []
        self.max_lag_s = 0.0
        self.end_pc = None  # perf_counter() after the last sendto returned
        self.crash = None


def _send_loop(st, addr, threads, start, pps, run_id, stop):
    """Send st.scheduled packets of stream st.index, paced against start + seq/pps.

    Kept lean on purpose: everything that can be looked up once is bound to a
    local before the loop, and the loop takes one perf_counter() and one
    monotonic_ns() reading per packet.
    """
    try:
        pack = HEADER.pack_into
        mono = time.monotonic_ns
        clock = time.perf_counter
        sleep = time.sleep
        send = st.sock.sendto
        buf = st.buf
        magic = MAGIC
        max_sleep = MAX_SLEEP_S
        inv_pps = 1.0 / pps
        seq = st.index
        end_seq = st.index + st.scheduled * threads
        attempted = 0
        max_lag = 0.0
        while seq < end_seq:
            if stop[0]:
                break
            due = start + seq * inv_pps
            now = clock()
            if now < due:
                # Ahead of schedule: sleep once until this packet is due.  When
                # behind, this branch is never taken, so no sleep per packet.
                wait = due - now
                sleep(wait if wait < max_sleep else max_sleep)
                continue
            lag = now - due
            if lag > max_lag:
                max_lag = lag
            pack(buf, 0, magic, seq, mono(), run_id)
            try:
                send(buf, addr)
            except OSError as e:
                st.errors += 1
                name = errno.errorcode.get(e.errno, str(e.errno))
                st.error_kinds[name] = st.error_kinds.get(name, 0) + 1
                if len(st.failed_seqs) < MAX_FAILED_SEQS:
                    st.failed_seqs.append(seq)
            seq += threads
            attempted += 1
            st.attempted = attempted
        st.end_pc = clock()
        st.max_lag_s = max_lag
    except BaseException as e:  # run() reports it on stderr and exits 1, after the JSON
        st.crash = e
        st.end_pc = time.perf_counter()


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _open_socket(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
    except OSError:
        pass  # the default buffer works, only with less room for bursts
    if src is not None:
        s.bind((src, 0))
    return s


def _write(stream, text):
    """Write and flush; True when it worked.  A failure (EPIPE, EIO, a closed
    stream) means whoever reads us is gone; the caller decides what that means."""
    try:
        stream.write(text)
        stream.flush()
        return True
    except (OSError, ValueError):
        _silence(stream)
        return False


def _silence(stream):
    """Point a broken stream at /dev/null, so later writes and the interpreter's
    own flush at exit do not fail again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass


class _StreamWatch(object):
    """Tells whether stdout/stderr lost their reader, without writing to them.

    poll() with no requested events still reports POLLERR (a pipe without
    readers) and POLLHUP (a socket or terminal hung up); regular files and
    /dev/null report neither."""

    def __init__(self, streams):
        self.poll = None
        self.fds = {}
        if not hasattr(select, "poll"):
            return
        self.poll = select.poll()
        for name, stream in streams:
            try:
                fd = stream.fileno()
            except (OSError, ValueError, AttributeError):
                continue
            self.fds[fd] = name
            self.poll.register(fd, 0)

    def broken(self):
        """The name of a broken stream, or None."""
        if not self.poll:
            return None
        try:
            events = self.poll.poll(0)
        except OSError:
            return None
        for fd, ev in events:
            if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                return self.fds.get(fd, "fd %d" % fd)
        return None


def run(args):
    """Send the run described by parse_args() and return (result dict, exit status)."""
    T = args.threads
    addr = (args.dst, args.port)
    states = [_Thread(t, T, args.scheduled) for t in range(T)]
    try:
        for st in states:
            st.sock = _open_socket(args.src)
            st.buf = bytearray(args.size)
    except OSError as e:
        sys.stderr.write("generator.py: error: cannot open a UDP socket%s: %s\n"
                         % (" bound to --src %s" % args.src if args.src else "", e))
        sys.exit(2 if args.src else 1)

    stop = [False]
    caught = []

    def on_signal(signum, frame):
        stop[0] = True
        caught.append(signum)

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)

    # One sampling of the three clocks maps perf_counter() instants to the
    # monotonic (send_ns, DUT-comparable on one machine) and Unix timelines.
    pc0 = time.perf_counter()
    mono0 = time.monotonic_ns()
    unix0 = time.time_ns()
    start = pc0 + START_DELAY_S

    workers = []
    for st in states:
        w = threading.Thread(target=_send_loop, name="xdplab-send-%d" % st.index,
                             args=(st, addr, T, start, args.pps, args.run_id, stop))
        w.daemon = True
        w.start()
        workers.append(w)

    progress = args.progress_s > 0
    next_report = start + args.progress_s
    last_t, last_sent = start, 0
    watch = _StreamWatch([("stdout", sys.stdout), ("stderr", sys.stderr)])
    gone = None  # why we think the controller is gone
    while any(w.is_alive() for w in workers):
        now = time.perf_counter()
        if gone is None:
            broken = watch.broken()
            if broken:
                gone = "%s lost its reader" % broken
        if gone is None and progress and now >= next_report:
            sent = sum(st.attempted - st.errors for st in states)
            rate = (sent - last_sent) / (now - last_t) if now > last_t else 0.0
            if not _write(sys.stderr, "progress t=%.1fs sent=%d pps=%.0f\n"
                          % (now - start, sent, rate)):
                gone = "writing a progress line to stderr failed"
            last_t, last_sent = now, sent
            next_report += args.progress_s
            while next_report <= now:
                next_report += args.progress_s
        if gone is not None and not stop[0]:
            stop[0] = True  # every thread stops within a packet or MAX_SLEEP_S
        wait = WATCH_S
        if progress:
            wait = min(wait, max(next_report - now, 0.001))
        time.sleep(wait)  # a signal interrupts the sleep and its handler runs at once
    for w in workers:
        w.join()
    for st in states:
        st.sock.close()

    crashed = [st for st in states if st.crash is not None]
    if crashed:
        e = crashed[0].crash
        sys.stderr.write("generator.py: error: sending thread %d failed: %r\n" % (crashed[0].index, e))

    sent = sum(st.attempted - st.errors for st in states)
    errors = sum(st.errors for st in states)
    kinds = {}
    for st in states:
        for k, v in st.error_kinds.items():
            kinds[k] = kinds.get(k, 0) + v
    failed = sorted(s for st in states for s in st.failed_seqs)[:MAX_FAILED_SEQS]
    end_pc = max(st.end_pc for st in states if st.end_pc is not None)
    elapsed = max(end_pc - start, 0.0)
    attempted = sum(st.attempted for st in states)
    interrupted = bool(caught) or gone is not None or attempted < args.scheduled

    def mono_at(pc):
        return mono0 + int(round((pc - pc0) * 1e9))

    def unix_at(pc):
        return unix0 + int(round((pc - pc0) * 1e9))

    result = {
        "generator": GENERATOR,
        "run_id": args.run_id,
        "dst": args.dst,
        "port": args.port,
        "target_pps": args.pps,
        "payload_bytes": args.size,
        "duration_s": float(args.duration),
        "threads": T,
        "scheduled": args.scheduled,
        "sent": sent,
        "send_errors": errors,
        "send_error_kinds": kinds,
        "failed_seqs": failed,
        "elapsed_s": round(elapsed, 6),
        "achieved_pps": round(sent / elapsed, 2) if elapsed > 0 else 0.0,
        "start_monotonic_ns": mono_at(start),
        "end_monotonic_ns": mono_at(end_pc),
        "start_unix_ns": unix_at(start),
        "end_unix_ns": unix_at(end_pc),
        "max_lag_us": round(max(st.max_lag_s for st in states) * 1e6, 1),
        "interrupted": interrupted,
        "boot_id": _boot_id(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "per_thread": [
            {"thread": st.index, "scheduled": st.scheduled,
             "sent": st.attempted - st.errors, "send_errors": st.errors}
            for st in states
        ],
    }
    if caught:
        status = 128 + caught[0]
    elif gone is not None:
        status = EXIT_CONTROLLER_GONE
        _write(sys.stderr, "generator.py: error: stopped sending, the controller is gone (%s)\n"
               % gone)
    elif crashed:
        status = 1
    else:
        status = 0
    return result, status


def main(argv=None):
    args = parse_args(argv)
    result, status = run(args)
    if not _write(sys.stdout, json.dumps(result) + "\n") and status == 0:
        status = EXIT_CONTROLLER_GONE  # nobody received the report
    return status


if __name__ == "__main__":
    sys.exit(main())
