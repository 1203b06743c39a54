"""One sender's paced stream: the measured hot loop.

Packet ``seq`` is due at an absolute time on ``time.perf_counter()`` (the
pattern: constant, burst, poisson; see ``__init__``).  Sender ``t`` of ``T`` owns
the share ``seq = k*T + t``; with several senders on the constant or burst
pattern they claim packets from one shared "next packet" (TAKEOVER_GRACE), so
that a stalled sender's due packets are sent by another.  In one ``sendmmsg``
call (a ``sendto`` loop where there is none) a sender sends every packet due
that it may send (its share, or the claimed ones), up to BATCH_MAX; between
deadlines it sleeps, and spins for the last SPIN_S.

``send_stream``'s loop is one block on purpose: everything it can look up once
is bound to a local before the loop (its set-up is ``Batch``, its report
``_report``), and per packet it costs one pack_into and one monotonic_ns().
Its throughput is what ``make bench`` measures (benchmarks/bench_generator.py);
split into calls, each packet would pay for them.  Change it only with that
benchmark run before and after.
"""

import ctypes
import errno
import os
import random
import struct
import time

from .sockets import Iovec, Mmsghdr, sendmmsg, sockaddr_in
from .wire import ETH_HLEN, HEADER, IP_HLEN, MAGIC, UDP_HLEN, build_frame

MAX_FAILED_SEQS = 1000
MAX_SLEEP_S = 0.1  # a sleeping sender looks at the stop flag at least this often
# A sleep ends ~30 us late even with a 1 us timer slack (measured here:
# sleep(50 us) took 77 us median), so the last stretch before a deadline is spun.
SPIN_S = 100e-6
# The spin before a deadline yields the CPU (sched_yield) until this long before it,
# then spins without yielding: a sched_yield takes ~1 us, and the guard keeps it from
# making a sender late by that much.  Measured 2026-12-06 on this 2-CPU machine (the
# figures are in benchmarks/README.md): two senders at 10k pps, arrivals' p99 gap over
# the ideal, median of 3 rounds, 2.01x without yielding, 1.2x yielding (single rounds
# range 1.04-2.01x with the machine's other load); at 100k pps both senders spin all the
# time and it stays 2.0x (one sender is descheduled for 1-2 ms now and then while the
# other keeps its own slots); the peak (senders never ahead of schedule) is unchanged.
YIELD_GUARD_S = 5e-6
# Packets per sendmmsg call at most.  FIELD_NOTES: 16 per call gave 591k pps on
# a packet socket, 64 gave 563k; a smaller batch also bounds the burst a late
# sender emits in one call.
BATCH_MAX = 32
# A packet due before start + duration that is late (a descheduled sender:
# stalls of several ms were seen on a busy 2-core machine) may still go out up
# to this long after the end; nothing goes out later, and nothing due after
# the end is ever sent.  Without it a stall in the last milliseconds costs a
# sustained run its last packets.
END_GRACE_S = 0.01
# With several senders on the constant or burst pattern, the senders claim the packets
# they send from one shared "next packet" (cfg["claim"]: a lock and a counter per phase
# in the shared memory), a batch at a time: a sender takes every packet due by now that
# nobody has claimed, its partners' too.  A sender whose own next slot is less than
# SPIN_S away watches the next unclaimed packet instead, and takes it once it is this
# fraction of the interval between packets late: a stalled partner's packets go out
# 1.25 intervals after the previous one, not two.  (Without it a partner stalled for
# 50-250 us, a VM's or kernel's hiccup, left every other slot empty for that long: p99
# gap 2.0x the ideal at 100,000 pps with two senders; benchmarks/README.md.)
TAKEOVER_GRACE = 0.25


def stream_count(scheduled, threads, index):
    """Packets of sender `index`: seqs index, index+threads, ... below scheduled."""
    return (scheduled - index + threads - 1) // threads if index < scheduled else 0


class Sender(object):
    """What one sender process owns; what it reports goes back through a pipe."""

    def __init__(self, index, threads, scheduled):
        self.index = index
        self.scheduled = stream_count(scheduled, threads, index)
        self.sock = None
        self.keep = []  # sockets held for the sender's lifetime (the packet path's port reservation)
        self.sport = None
        self.pid = None
        self.rfd = None
        self.report = None


class Batch(object):
    """What one sendmmsg call sends: BATCH_MAX copies of the frame (or payload) side by
    side in one buffer, the socket, and how to send them.  Built once per sender,
    before its loop."""

    def __init__(self, sender, cfg):
        self.packet = packet = cfg["send_path"] == "packet"
        if packet:
            template = build_frame(cfg["src_mac"], cfg["dst_mac"], cfg["src_ip"], cfg["dst"], sender.sport,
                                   cfg["port"], cfg["size"])
            self.hdr_off = ETH_HLEN + IP_HLEN + UDP_HLEN
        else:
            template = bytes(cfg["size"])
            self.hdr_off = 0
        self.stride = stride = len(template)
        self.buf = buf = (ctypes.c_char * (stride * BATCH_MAX))()
        for m in range(BATCH_MAX):
            ctypes.memmove(ctypes.addressof(buf) + m * stride, template, stride)
        self.mmsg = sendmmsg(cfg["libc"])
        self.fd = sender.sock.fileno()
        self.addr = None if packet else (cfg["dst"], cfg["port"])
        self.connected = False
        if not packet:
            # A connected socket skips the route lookup per packet: ~13 % more
            # packets per second measured here.  Its catch is handled in the loop.  A
            # destination connect() refuses (broadcast without SO_BROADCAST) stays
            # unconnected, and its sends fail one by one, counted.
            try:
                sender.sock.connect(self.addr)
                self.connected = True
            except OSError:
                pass
        self.msg_at = self._messages(cfg) if self.mmsg is not None else None
        self.view = memoryview(buf).cast("B")
        self.send_call = sender.sock.send if packet or self.connected else sender.sock.sendto

    def _messages(self, cfg):
        """The address of each of BATCH_MAX message headers, message m sending copy m."""
        name = ctypes.create_string_buffer(sockaddr_in(cfg["dst"], cfg["port"]), 16)
        iovs = (Iovec * BATCH_MAX)()
        msgs = (Mmsghdr * BATCH_MAX)()
        for m in range(BATCH_MAX):
            iovs[m].iov_base = ctypes.addressof(self.buf) + m * self.stride
            iovs[m].iov_len = self.stride
            h = msgs[m].msg_hdr
            if not self.packet and not self.connected:
                h.msg_name = ctypes.addressof(name)
                h.msg_namelen = 16
            h.msg_iov = ctypes.pointer(iovs[m])
            h.msg_iovlen = 1
        # the headers point into these: they live as long as the batch
        self._keep = (name, iovs, msgs)
        return [ctypes.addressof(msgs) + m * ctypes.sizeof(Mmsghdr) for m in range(BATCH_MAX)]


def send_stream(sender, cfg, shm, stop):
    """Send sender.scheduled packets of stream sender.index, paced against
    absolute deadlines; returns the report dict.  Runs in the sender process.

    Kept lean: everything that can be looked up once is bound to a local before
    the loop; per packet it costs one pack_into and one monotonic_ns()."""
    # Why the loop stays inline, measured 2026-12-06 on this 2-CPU machine, side by side
    # in 5 alternating rounds (bench_generator.py's veth pair, one sender on CPU 1, 18-byte
    # payloads, --pps 5000000 so it never sleeps, 3 s): packets sent per CPU-second of
    # the generator, median.  This loop: udp 685,706, packet 931,421 (before set-up and
    # report moved out: 696,876 and 916,171, within the noise).  The same with one
    # function call per packet (the header's pack_into and monotonic_ns() in a helper):
    # udp 646,154 (-6 %), packet 815,062 (-12 %).
    T = cfg["threads"]
    t = sender.index
    pps = cfg["pps"]
    ppid = cfg["ppid"]
    counter_off = 8 + 16 * t
    batch = Batch(sender, cfg)
    packet, connected, addr, send_call = batch.packet, batch.connected, batch.addr, batch.send_call
    buf, view, stride, hdr_off = batch.buf, batch.view, batch.stride, batch.hdr_off
    mmsg, fd, msg_at = batch.mmsg, batch.fd, batch.msg_at
    get_errno = ctypes.get_errno
    refused = errno.ECONNREFUSED

    errors = 0
    retries = 0
    error_kinds = {}
    failed = []
    phase_reports = []

    def failure(err, seq):
        name = errno.errorcode.get(err, str(err))
        error_kinds[name] = error_kinds.get(name, 0) + 1
        if len(failed) < MAX_FAILED_SEQS:
            failed.append(seq)

    pack = HEADER.pack_into
    mono = time.monotonic_ns
    clock = time.perf_counter
    sleep = time.sleep
    yield_ = getattr(os, "sched_yield", lambda: None)
    yield_guard = YIELD_GUARD_S
    counters = struct.Struct("=QQ").pack_into
    magic = MAGIC
    spin = SPIN_S
    claim = cfg.get("claim")  # (lock, offset of the phases' counters in shm): the senders share the schedule
    shared = claim is not None and T > 1 and cfg["pattern"] != "poisson"
    if shared:
        acquire, release, claim_base = claim[0].acquire, claim[0].release, claim[1]
        cpack, cunpack = struct.Struct("=Q").pack_into, struct.Struct("=Q").unpack_from
        grace = TAKEOVER_GRACE / pps
    taken = 0  # packets of another sender's share (seq % T != t) this one sent
    max_sleep = MAX_SLEEP_S
    poisson = cfg["pattern"] == "poisson"
    B = cfg["burst_size"] if cfg["pattern"] == "burst" else 1
    gap = B / pps  # seconds between burst starts (between packets when B == 1)
    inf = float("inf")
    run = 0  # packets sent since this sender was last ahead of schedule
    max_run = 0
    max_lag = 0.0
    interrupted = False
    checks = 0
    first_pc = None
    done = done_errors = 0  # earlier phases' (the shared progress counter is cumulative)
    # Phases, on one absolute schedule: the warm-up (its own run id, seqs from 0)
    # in [start, start + W), then the measured run in [start + W, start + W + D).
    phases = cfg.get("phases") or [
        {"run_id": cfg["run_id"], "scheduled": sender.scheduled * T, "start": cfg["start"],
         "duration": cfg["duration"], "end": cfg["start"] + cfg["duration"] + END_GRACE_S, "seed_tag": "%d/%d",
         "per_s": True}]
    for pi, ph in enumerate(phases):
        if interrupted:
            break
        N = ph["scheduled"]
        n = stream_count(N, T, t)
        if shared:
            claim_off = claim_base + 8 * pi
            n = N  # what this sender may send at most: any packet of the phase
        start = ph["start"]
        D = ph["duration"]
        end = ph["end"]
        run_id = ph["run_id"]
        errors = 0
        error_kinds = {}
        failed = []
        per_s = [0] * (int(D) + 2) if ph["per_s"] else None
        last_s = len(per_s) - 1 if per_s else 0
        if poisson:
            rnd = random.Random(ph["seed_tag"] % (cfg["seed"], t)).random
            # u: packet k's place in [0, 1), the k-th of n sorted uniforms, drawn in
            # order: the minimum of m uniforms on [u, 1) is u + (1-u)(1 - V^(1/m)).
            u = 1.0 - rnd() ** (1.0 / n) if n else 1.0
            nxt = start + D * u if n else inf
        k = 0
        phase_taken = taken
        phase_first = None
        while k < n:
            if stop[0] or shm[0]:
                interrupted = True
                break
            now = clock()
            if now >= end:
                break
            if poisson:
                due = nxt
                ready = due <= now
            elif shared:
                c = cunpack(shm, claim_off)[0]  # the next unclaimed packet (read without the lock: a hint)
                if c >= N:
                    break
                own = c + (t - c) % T  # this sender's next own slot
                due = start + (own // B) * gap
                if own >= N or due - now <= spin:
                    due_c = start + (c // B) * gap + grace
                    if own >= N or due_c < due:
                        due = due_c
                ready = due <= now
            else:
                due = start + ((k * T + t) // B) * gap
                ready = due <= now
            if not ready:
                run = 0
                wait = due - now
                if wait > spin:
                    sleep(min(wait - spin, max_sleep))
                    checks += 1
                    if checks & 15 == 0 and os.getppid() != ppid:
                        interrupted = True  # the main process is gone (macOS has no PDEATHSIG)
                        break
                    continue
                # Spinning, it yields the CPU to whatever else is runnable there (another
                # sender woken for its own slot, the capture, softirq work) until YIELD_GUARD_S
                # before the deadline, then spins alone: a spinner that never yields is
                # preempted at the scheduler's time, not its own (see YIELD_GUARD_S).
                while clock() < due - yield_guard:
                    yield_()
                while clock() < due:
                    pass
                now = clock()
            lag = now - due
            if lag > max_lag:
                max_lag = lag
            # The batch: every packet of this stream due by now, at most BATCH_MAX.
            if poisson:
                seq0, step = k * T + t, T
                nb = 0
                while True:
                    pack(buf, nb * stride + hdr_off, magic, (k + nb) * T + t, mono(), run_id)
                    nb += 1
                    left = n - k - nb
                    if left <= 0:
                        nxt = inf
                        break
                    u += (1.0 - u) * (1.0 - rnd() ** (1.0 / left))
                    nxt = start + D * u
                    if nxt > now or nb >= BATCH_MAX:
                        break
            elif shared:
                acquire()
                c = cunpack(shm, claim_off)[0]
                kd = (int((now - start) / gap) + 1) * B  # packets due by now, all senders'
                if kd > N:
                    kd = N
                nb = kd - c
                if nb < 1:
                    nb = 1 if c < N and start + (c // B) * gap <= now else 0
                elif nb > BATCH_MAX:
                    nb = BATCH_MAX
                cpack(shm, claim_off, c + nb)
                release()
                if nb == 0:
                    continue  # a partner took them meanwhile
                taken += nb - ((c + nb - t + T - 1) // T - (c - t + T - 1) // T)
                seq0, step = c, 1
                seq = c
                for m in range(nb):
                    pack(buf, m * stride + hdr_off, magic, seq, mono(), run_id)
                    seq += 1
            else:
                j = int((now - start) / gap)  # latest burst that has begun
                kd = ((j + 1) * B - t + T - 1) // T  # packets of this stream due by now
                if kd > n:
                    kd = n
                nb = kd - k
                if nb < 1:
                    nb = 1  # float rounding at the boundary: due <= now says packet k is due
                elif nb > BATCH_MAX:
                    nb = BATCH_MAX
                seq0, step = k * T + t, T
                seq = seq0
                for m in range(nb):
                    pack(buf, m * stride + hdr_off, magic, seq, mono(), run_id)
                    seq += T
            if first_pc is None:
                first_pc = now
            if phase_first is None:
                phase_first = now
            e0 = errors
            if mmsg is not None:
                i = 0
                retried = -1
                while i < nb:
                    r = mmsg(fd, msg_at[i], nb - i, 0)
                    if r > 0:
                        i += r
                        continue
                    # sendmmsg reports an error only for the first message of a call
                    err = get_errno() if r < 0 else errno.EIO
                    if err == refused and retried != i:
                        # A connected socket reports an earlier ICMP port-unreachable
                        # on the next send, which is then not sent; reading the error
                        # clears it, so the same packet is sent again, once.
                        retried = i
                        retries += 1
                        continue
                    errors += 1
                    failure(err, seq0 + i * step)
                    i += 1
            else:
                for m in range(nb):
                    frame = view[m * stride:(m + 1) * stride]
                    for attempt in (0, 1):
                        try:
                            if packet or connected:
                                send_call(frame)
                            else:
                                send_call(frame, addr)
                            break
                        except OSError as e:
                            if e.errno == refused and attempt == 0:
                                retries += 1
                                continue  # as above: the error of an earlier ICMP message
                            errors += 1
                            failure(e.errno, seq0 + m * step)
                            break
            k += nb
            run += nb
            if run > max_run:
                max_run = run
            if per_s is not None:
                # by the second of the window in which the batch went out
                sec = int(now - start)
                per_s[sec if sec < last_s else last_s] += nb - (errors - e0)
            counters(shm, counter_off, done + k, done_errors + errors)
        done += k
        done_errors += errors
        phase_reports.append({"scheduled": stream_count(N, T, t), "attempted": k, "send_errors": errors,
                              "send_error_kinds": error_kinds, "failed_seqs": failed,
                              "first_pc": phase_first, "per_s": per_s, "taken_over": taken - phase_taken})
    end_pc = clock()
    return _report(t, T, phases, phase_reports, max_lag, max_run, end_pc, first_pc, interrupted,
                   "sendmmsg" if mmsg else "sendto", retries)


def _report(t, T, phases, phase_reports, max_lag, max_run, end_pc, first_pc, interrupted, send_call,
            retries):
    """The sender's report: the measured phase's figures, the warm-up's beside them."""
    for ph in phases[len(phase_reports):]:  # phases an interruption left unstarted
        phase_reports.append({"scheduled": stream_count(ph["scheduled"], T, t), "attempted": 0,
                              "send_errors": 0, "send_error_kinds": {}, "failed_seqs": [], "first_pc": None,
                              "per_s": [0] * (int(ph["duration"]) + 2) if ph["per_s"] else None})
    # The measured phase (the last) keeps the report's historical fields; a warm-up
    # phase before it is reported beside them.
    m = phase_reports[-1]
    return {"index": t, "scheduled": m["scheduled"], "attempted": m["attempted"], "send_errors": m["send_errors"],
            "send_error_kinds": m["send_error_kinds"], "failed_seqs": m["failed_seqs"], "max_lag_s": max_lag,
            "max_burst": max_run, "end_pc": end_pc, "first_pc": first_pc, "interrupted": interrupted,
            "send_call": send_call, "refused_retries": retries, "crash": None,
            "taken_over": m.get("taken_over", 0),
            "per_s": m["per_s"], "warmup": phase_reports[0] if len(phase_reports) > 1 else None}
