#!/usr/bin/env python3
"""xdplab traffic generator: paced UDP packets carrying the xdplab payload header.

Runs on the source host of a trial.  It is uploaded over SSH as this one file
and run with whatever ``python3`` (>= 3.8) is there, on Linux or macOS, so it
imports nothing but the Python standard library.  The contract it implements
is in ``workflow/xdplab/PROTOCOL.md`` ("Payload header", "Generator command
line and output"); the header layout mirrors ``bpf/xdplab.h``.

Usage::

    python3 generator.py --dst 10.201.0.2 --port 12345 --pps 10000 --size 1458 \\
        --duration 5 --threads 2 --run-id 4242 [--src 10.201.0.1] [--progress-s 1] \\
        [--pattern constant|burst|poisson] [--burst-size N] [--seed N] \\
        [--send-path udp|packet] [--iface IF] [--dst-mac MAC] [--counters-iface IF] \\
        [--warmup-s S --warmup-run-id W]

Every UDP payload is ``--size`` bytes: an 18-byte header (magic, seq, send_ns,
run_id; network byte order) followed by zero bytes.  ``--threads T`` starts T
sender processes (fork: CPython's GIL let threads overlap little more than
their system calls).  Sender ``t`` sends ``seq = k*T + t`` for its ``k``-th
packet, so the run's sequence numbers are ``0 .. scheduled-1`` with
``scheduled = ceil(pps * duration)``.

Pacing.  Every packet has an absolute due time on ``time.perf_counter()``
(CLOCK_MONOTONIC on Linux, shared by the processes):

- constant: packet ``i`` at ``start + i/pps``;
- burst: packets in bursts of ``--burst-size`` B, burst ``j`` at
  ``start + j*B/pps`` (the mean rate stays ``pps``);
- poisson: a Poisson process conditioned on exactly ``scheduled`` packets in
  the window: each sender draws its packets' times as the order statistics of
  uniform times in ``[0, duration)``, one after the other from ``--seed``
  (gaps are then exponential for all practical purposes, and the mean rate is
  the target's exactly; the seed is recorded).

A sender sends, in one ``sendmmsg`` call (ctypes, Linux; a ``sendto`` loop
elsewhere), every packet of its stream that is due, up to BATCH_MAX; at low
rates that is one packet per deadline.  Between deadlines it sleeps, and spins
on ``perf_counter`` for the last SPIN_S before a deadline, because a sleep
ends tens of microseconds late.  Each packet's header (seq, send_ns) is
written just before its batch goes out.  A sender that fell behind catches
up in batches: ``max_burst`` reports the longest run of packets it sent
without once being ahead of schedule.  The trial is not stretched: nothing
is sent after ``start + duration`` (plus END_GRACE_S, 10 ms, for a packet due
before the end whose sender was descheduled); what was due but not sent by
then is ``not_offered``,
and ``achieved_pps = sent / window_s`` with ``window_s = duration`` (or less
when interrupted).  ``rate_sustained`` is false when ``achieved_pps`` is more
than 0.1 % below ``target_pps``.

Warm-up.  With ``--warmup-s S --warmup-run-id W`` every sender first sends
the warm-up, ``ceil(pps * S)`` packets with run id W (seqs from 0, the same
rate, pattern and stream split), in ``[start, start + S)``, then the measured
run (run id ``--run-id``, seqs from 0) in ``[start + S, start + S + duration)``:
one absolute schedule, no gap but the pattern's own.  A warm-up packet not
sent by ``start + S`` is not sent (no grace: the measured window begins on
time).  The report's fields are the measured run's; ``"warmup"`` holds the
warm-up's (run_id, duration_s, scheduled, sent, send_errors,
send_error_kinds, not_offered, failed_seqs (at most 1000), start/end
monotonic ns), null without a warm-up.  ``source_counters`` span both.

``sent_per_s``: packets sent in each whole second of the measured window,
from its start, summed over senders (a batch counts in the second in which it
went out).  The last partial second, and packets sent in the END_GRACE_S
after the window, are dropped, so ``sum(sent_per_s) <= sent``.

Send paths: ``udp`` (default) uses one connected UDP socket per sender.
``packet`` uses an AF_PACKET socket with PACKET_QDISC_BYPASS per sender and
sends whole hand-built Ethernet/IPv4/UDP frames (IPv4 checksum computed, UDP
checksum 0) to ``--dst-mac`` out of ``--iface``: no UDP/IP stack, no qdisc,
no neighbour lookup.  It needs Linux and root (CAP_NET_RAW).

Backend trafgen (``--backend trafgen``, Linux, root): netsniff-ng's trafgen
sends instead, the same header (send_ns left 0: trafgen cannot write it), seqs
0.. counted by trafgen itself; constant pattern, one sender; see "trafgen
backend" below for how, and for what each figure measures.

Source counters (``source_counters`` in the JSON): read before the first
packet and again once the traffic drained, from /proc/net/snmp,
/proc/net/stat/arp_cache, /sys/class/net/IF/statistics/tx_* and
``tc -s -j qdisc show dev IF``; null where unavailable.

Progress goes to stderr every ``--progress-s`` seconds (at most 1; 0 turns
it off): ``progress t=3.0s sent=30000 pps=10000``, where ``pps`` is the rate
over the last interval, summed over senders.  At the end one JSON object goes
to stdout.  SIGTERM, SIGINT and SIGHUP stop the sending within a batch (or
0.1 s of sleep); the JSON is still printed, with ``"interrupted": true``.

The generator must not outlive its controller.  Over SSH without a terminal
a broken session sends no SIGHUP: the only sign is that the pipes to sshd
lose their reader.  So a failed write of a progress line (EPIPE, EIO, a
closed stream), or stdout/stderr reporting an error or hang-up when polled
(every 50 ms, which also covers ``--progress-s 0``), means "the controller is
gone": sending stops at once.  Sender processes point their stdio at
/dev/null (they never hold the controller's pipes open), get SIGTERM when
the main process dies (Linux), and stop when their parent changes.

Exit status: 0 the sending window ran to its end (``not_offered`` says what
did not fit in it); 128 + N stopped by signal N; 1 a sender crashed (after
the JSON); 2 bad arguments (one line on stderr naming the argument), an
unbindable ``--src``, or a packet socket that cannot be opened; 3 the
controller is gone (stdout or stderr broken; the JSON is still attempted).

The UDP sockets are connected (no route lookup per packet, ~13 % faster
here).  Once the destination answers with ICMP port-unreachable the kernel
fails the next send with ECONNREFUSED and that packet is not sent; reading the
error clears it, so the generator sends that packet again, once.  Every packet
is offered, listener or not.
"""

import argparse
import ctypes
import errno
import ipaddress
import json
import math
import mmap
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

GENERATOR = "xdplab-generator/1"
MAGIC = 0x58444C42  # "XDLB", XDPLAB_MAGIC in bpf/xdplab.h
HEADER = struct.Struct("!IIQH")  # magic, seq, send_ns, run_id: XDPLAB_HDR_LEN bytes
HEADER_LEN = HEADER.size
MAX_PAYLOAD = 65507  # largest UDP payload over IPv4
MAX_FAILED_SEQS = 1000
# Packet 0 is due START_LEAD_S after every sender said it is ready (forked, set up,
# waiting): a readiness signal, not a fixed wait.  A sender not ready within
# READY_TIMEOUT_S is started without (it sends late, and says so in its lag).
START_LEAD_S = 0.002
READY_TIMEOUT_S = 1.0
READY_POLL_S = 0.0002
MAX_SLEEP_S = 0.1  # a sleeping sender looks at the stop flag at least this often
# A sleep ends ~30 us late even with a 1 us timer slack (measured here:
# sleep(50 us) took 77 us median), so the last stretch before a deadline is spun.
SPIN_S = 100e-6
TIMER_SLACK_NS = 1000
# Packets per sendmmsg call at most.  FIELD_NOTES: 16 per call gave 591k pps on
# a packet socket, 64 gave 563k; a smaller batch also bounds the burst a late
# sender emits in one call.
BATCH_MAX = 32
SNDBUF_BYTES = 4 << 20
MAX_PROGRESS_S = 1.0  # a broken SSH session is noticed within about this long
WATCH_S = 0.05  # the main process checks signals, senders and its output streams this often
# A packet due before start + duration that is late (a descheduled sender:
# stalls of several ms were seen on a busy 2-core machine) may still go out up
# to this long after the end; nothing goes out later, and nothing due after
# the end is ever sent.  Without it a stall in the last milliseconds costs a
# sustained run its last packets.
END_GRACE_S = 0.01
SUSTAINED_TOLERANCE = 0.001  # rate_sustained: achieved within 0.1 % of the target
DRAIN_MAX_S = 1.0  # wait at most this long for the traffic to drain before the "after" counters
DRAIN_STEP_S = 0.02
EXIT_CONTROLLER_GONE = 3
PATTERNS = ("constant", "burst", "poisson")
DEFAULT_BURST = 16

# Linux constants the socket module may lack
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
SIOCGIFADDR = 0x8915
ETH_HLEN = 14
IP_HLEN = 20
UDP_HLEN = 8


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


def _mac(text):
    parts = text.split(":")
    if len(parts) != 6 or not all(len(x) in (1, 2) for x in parts):
        raise argparse.ArgumentTypeError("%r is not a MAC address (aa:bb:cc:dd:ee:ff)" % text)
    try:
        return bytes(int(x, 16) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a MAC address (aa:bb:cc:dd:ee:ff)" % text)


def _mac_text(raw):
    return ":".join("%02x" % b for b in raw)


def parse_args(argv=None):
    p = _Parser(
        prog="generator.py",
        description="Send paced UDP packets with the xdplab payload header.",
        epilog="example: generator.py --dst 10.201.0.2 --port 12345 --pps 10000 "
        "--size 1458 --duration 5 --threads 2 --run-id 4242",
    )
    p.add_argument("--dst", required=True, type=_ipv4, help="destination IPv4 address")
    p.add_argument("--port", required=True, type=int, help="destination UDP port (1..65535)")
    p.add_argument("--pps", required=True, type=int, help="offered rate, packets per second, summed over senders")
    p.add_argument("--size", required=True, type=int,
                   help="UDP payload bytes (%d..%d)" % (HEADER_LEN, MAX_PAYLOAD))
    p.add_argument("--duration", required=True, type=float, help="seconds of traffic")
    p.add_argument("--threads", type=int, default=1,
                   help="sender processes, one socket each (default 1)")
    p.add_argument("--run-id", required=True, type=int, help="run identifier written into every packet (0..65535)")
    p.add_argument("--src", type=_ipv4, default=None, help="source IPv4 address to bind to")
    p.add_argument("--progress-s", type=float, default=1.0,
                   help="seconds between progress lines on stderr, at most %g; 0 turns them "
                   "off (default 1)" % MAX_PROGRESS_S)
    p.add_argument("--pattern", choices=PATTERNS, default="constant",
                   help="packet spacing: constant (default), burst, poisson")
    p.add_argument("--burst-size", type=int, default=None,
                   help="burst pattern: packets back to back per burst (default %d)" % DEFAULT_BURST)
    p.add_argument("--seed", type=int, default=None,
                   help="poisson pattern: random seed (default: drawn, and recorded)")
    p.add_argument("--send-path", choices=("udp", "packet"), default="udp",
                   help="udp (default): UDP socket; packet: AF_PACKET with PACKET_QDISC_BYPASS "
                   "(Linux, root; needs --iface and --dst-mac)")
    p.add_argument("--iface", default=None, help="the source's test interface")
    p.add_argument("--dst-mac", type=_mac, default=None, help="next hop's MAC address (packet path)")
    p.add_argument("--counters-iface", default=None,
                   help="interface whose NIC and qdisc counters are read (default --iface)")
    p.add_argument("--backend", choices=("python", "trafgen"), default="python",
                   help="python (default): this program sends; trafgen: netsniff-ng's trafgen sends "
                   "(Linux, root; needs --iface and --dst-mac; constant pattern, one sender)")
    p.add_argument("--trafgen", default=None,
                   help="trafgen's path for --backend trafgen (default: found on PATH or in /usr/sbin)")
    p.add_argument("--warmup-s", type=float, default=0.0,
                   help="seconds of warm-up before the measured --duration, at the same rate and pattern, "
                   "with --warmup-run-id (default 0: none)")
    p.add_argument("--warmup-run-id", type=int, default=None,
                   help="run identifier of the warm-up's packets (0..65535, not --run-id)")
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
    if a.burst_size is not None and a.pattern != "burst":
        p.error("--burst-size applies to --pattern burst only (pattern is %s)" % a.pattern)
    if a.pattern == "burst":
        if a.burst_size is None:
            a.burst_size = DEFAULT_BURST
        if not 1 <= a.burst_size <= 1 << 20:
            p.error("--burst-size must be 1..%d, got %d" % (1 << 20, a.burst_size))
    if a.seed is not None and a.pattern != "poisson":
        p.error("--seed applies to --pattern poisson only (pattern is %s)" % a.pattern)
    if a.pattern == "poisson" and a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "big")
    if a.seed is not None and not 0 <= a.seed < 1 << 64:
        p.error("--seed must be 0..2^64-1, got %d" % a.seed)
    for name in ("iface", "counters_iface"):
        value = getattr(a, name)
        if value is not None and (not value or len(value) > 15 or "/" in value or value in (".", "..")
                                  or any(c.isspace() for c in value)):
            p.error("--%s %r is not an interface name" % (name.replace("_", "-"), value))
    if a.counters_iface is None:
        a.counters_iface = a.iface
    if a.backend == "trafgen":
        if not sys.platform.startswith("linux"):
            p.error("--backend trafgen needs Linux; this is %s" % sys.platform)
        if a.pattern != "constant":
            p.error("--backend trafgen sends the constant pattern only (trafgen's own pacing); "
                    "--pattern %s needs --backend python" % a.pattern)
        if a.threads != 1:
            p.error("--backend trafgen runs one sender (trafgen paces with --rate in one process, "
                    "pinned); --threads %d needs --backend python" % a.threads)
        if a.iface is None:
            p.error("--backend trafgen needs --iface")
        if a.dst_mac is None:
            p.error("--backend trafgen needs --dst-mac")
        a.send_path = "packet"
        a.trafgen = a.trafgen or shutil.which("trafgen") or next(
            (x for x in ("/usr/sbin/trafgen", "/usr/local/sbin/trafgen") if os.access(x, os.X_OK)), None)
        if a.trafgen is None:
            p.error("--backend trafgen: no trafgen found (install netsniff-ng, or give --trafgen PATH)")
    elif a.trafgen is not None:
        p.error("--trafgen applies to --backend trafgen only")
    elif a.send_path == "packet":
        if not sys.platform.startswith("linux"):
            p.error("--send-path packet needs Linux (AF_PACKET); this is %s" % sys.platform)
        if a.iface is None:
            p.error("--send-path packet needs --iface")
        if a.dst_mac is None:
            p.error("--send-path packet needs --dst-mac")
    elif a.dst_mac is not None:
        p.error("--dst-mac applies to --send-path packet or --backend trafgen only")
    if not (a.warmup_s >= 0 and math.isfinite(a.warmup_s)):
        p.error("--warmup-s must be 0 (none) or a positive number of seconds, got %s" % a.warmup_s)
    if a.warmup_s > 0:
        if a.warmup_run_id is None:
            p.error("--warmup-s needs --warmup-run-id")
        if not 0 <= a.warmup_run_id <= 0xFFFF:
            p.error("--warmup-run-id must be 0..65535 (it is a u16 in the header), got %d" % a.warmup_run_id)
        if a.warmup_run_id == a.run_id:
            p.error("--warmup-run-id must differ from --run-id (%d): the DUT tells the two apart by it"
                    % a.run_id)
    elif a.warmup_run_id is not None:
        p.error("--warmup-run-id applies with --warmup-s > 0 only")
    # Packets i with i/pps < duration; the epsilon keeps 10000 * 0.3 from becoming 3001.
    a.scheduled = int(math.ceil(a.pps * a.duration - 1e-9))
    a.warmup_scheduled = int(math.ceil(a.pps * a.warmup_s - 1e-9)) if a.warmup_s > 0 else 0
    if a.warmup_scheduled > 1 << 32:
        p.error("--pps x --warmup-s schedules %d packets; seq is a u32 (at most %d)"
                % (a.warmup_scheduled, 1 << 32))
    if a.scheduled < 1:
        p.error("--pps x --duration schedules no packet")
    if a.scheduled > 1 << 32:
        p.error("--pps x --duration schedules %d packets; seq is a u32 (at most %d)"
                % (a.scheduled, 1 << 32))
    return a


def stream_count(scheduled, threads, index):
    """Packets of sender `index`: seqs index, index+threads, ... below scheduled."""
    return (scheduled - index + threads - 1) // threads if index < scheduled else 0


def ipv4_checksum(header):
    """RFC 1071 one's-complement sum over a header whose checksum field is zero."""
    if len(header) % 2:
        header += b"\0"
    total = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_frame(src_mac, dst_mac, src_ip, dst_ip, sport, dport, payload_len):
    """Ethernet + IPv4 + UDP headers for a payload of payload_len bytes, followed
    by that many zero bytes.  DF set, so a constant IP ID is allowed (RFC 6864);
    UDP checksum 0 (none), which IPv4 allows."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, IP_HLEN + UDP_HLEN + payload_len, 0, 0x4000,
                               64, socket.IPPROTO_UDP, 0, socket.inet_aton(src_ip),
                               socket.inet_aton(dst_ip)))
    struct.pack_into("!H", ip, 10, ipv4_checksum(bytes(ip)))
    udp = struct.pack("!HHHH", sport, dport, UDP_HLEN + payload_len, 0)
    return dst_mac + src_mac + b"\x08\x00" + bytes(ip) + udp + bytes(payload_len)


# ---------------------------------------------------------------- source counters

COUNTER_KEYS = (
    "udp_sndbuf_errors", "udp_out_datagrams", "ip_out_discards", "ip_out_no_routes",
    "arp_unresolved_discards", "qdisc_drops", "qdisc_requeues", "nic_tx_packets", "nic_tx_dropped",
    "nic_tx_errors", "nic_tx_fifo_errors", "nic_tx_aborted_errors", "nic_tx_carrier_errors",
)
_SNMP = {"udp_sndbuf_errors": ("Udp", "SndbufErrors"), "udp_out_datagrams": ("Udp", "OutDatagrams"),
         "ip_out_discards": ("Ip", "OutDiscards"), "ip_out_no_routes": ("Ip", "OutNoRoutes")}
_NIC = ("tx_packets", "tx_dropped", "tx_errors", "tx_fifo_errors", "tx_aborted_errors", "tx_carrier_errors")


# The ARP table's statistics are host-wide, but only the initial network
# namespace shows them; from another namespace they are read through PID 1's
# view (root only).
ARP_CACHE_PATHS = ("/proc/net/stat/arp_cache", "/proc/1/net/stat/arp_cache")


def counter_names(iface):
    """Where each counter comes from, as it is reported in "names"."""
    names = {}
    for key, (table, field) in _SNMP.items():
        names[key] = "/proc/net/snmp %s %s" % (table, field)
    names["arp_unresolved_discards"] = ("/proc/net/stat/arp_cache unresolved_discards, summed over CPUs "
                                        "(host-wide; from a network namespace other than the initial one "
                                        "read as /proc/1/net/stat/arp_cache)")
    dev = iface or "IF"
    names["qdisc_drops"] = "tc -s -j qdisc show dev %s: drops of the root qdisc (includes its children's)" % dev
    names["qdisc_requeues"] = "tc -s -j qdisc show dev %s: requeues of the root qdisc" % dev
    for f in _NIC:
        names["nic_" + f] = "/sys/class/net/%s/statistics/%s" % (dev, f)
    return names


def parse_snmp(text):
    """{(table, field): int} from /proc/net/snmp's header/value line pairs."""
    out = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        hk, _, hf = head.partition(":")
        vk, _, vf = vals.partition(":")
        if hk != vk:
            continue
        for f, v in zip(hf.split(), vf.split()):
            try:
                out[(hk, f)] = int(v)
            except ValueError:
                pass
    return out


def parse_arp_cache(text):
    """Sum of unresolved_discards over the per-CPU lines (hex) of /proc/net/stat/arp_cache."""
    lines = text.split("\n")
    cols = lines[0].split()
    if "unresolved_discards" not in cols:
        return None
    i = cols.index("unresolved_discards")
    return sum(int(line.split()[i], 16) for line in lines[1:] if len(line.split()) > i)


def parse_tc_qdiscs(text):
    """(drops, requeues, backlog packets) of the root qdisc in `tc -s -j qdisc show` output.
    Only the root counts: classful and multiqueue roots include their children's
    numbers, so a sum over every qdisc would count a drop twice."""
    drops = requeues = qlen = 0
    for q in json.loads(text or "[]"):
        if q.get("root"):
            drops += int(q.get("drops", 0))
            requeues += int(q.get("requeues", 0))
            qlen += int(q.get("qlen", 0))
    return drops, requeues, qlen


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def read_counters(iface):
    """One snapshot of every source counter (None where unavailable), plus the
    root qdisc's backlog in packets under the key "_qlen" (used to wait for the drain)."""
    c = dict.fromkeys(COUNTER_KEYS)
    c["_qlen"] = None
    snmp = _read("/proc/net/snmp")
    if snmp:
        parsed = parse_snmp(snmp)
        for key, tf in _SNMP.items():
            c[key] = parsed.get(tf)
    arp = None
    for path in ARP_CACHE_PATHS:
        arp = _read(path)
        if arp:
            break
    if arp:
        try:
            c["arp_unresolved_discards"] = parse_arp_cache(arp)
        except (ValueError, IndexError):
            pass
    if iface:
        for f in _NIC:
            v = _read("/sys/class/net/%s/statistics/%s" % (iface, f))
            if v is not None:
                try:
                    c["nic_" + f] = int(v)
                except ValueError:
                    pass
        tc = shutil.which("tc") or next((p for p in ("/usr/sbin/tc", "/sbin/tc") if os.access(p, os.X_OK)), None)
        if tc and sys.platform.startswith("linux"):
            try:
                r = subprocess.run([tc, "-s", "-j", "qdisc", "show", "dev", iface], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, timeout=5, universal_newlines=True)
                if r.returncode == 0:
                    c["qdisc_drops"], c["qdisc_requeues"], c["_qlen"] = parse_tc_qdiscs(r.stdout)
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
    return c


def wait_drained(iface, limit_s=DRAIN_MAX_S):
    """Wait until the interface's traffic drained: root qdisc backlog empty and
    tx_packets unchanged over one step; at most limit_s.  Returns the last snapshot."""
    snap = read_counters(iface)
    if not iface:
        return snap
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(DRAIN_STEP_S)
        nxt = read_counters(iface)
        if not nxt["_qlen"] and nxt["nic_tx_packets"] == snap["nic_tx_packets"]:
            return nxt
        snap = nxt
    return snap


def counters_report(iface, before, after, drained_s):
    public = lambda c: {k: c[k] for k in COUNTER_KEYS}
    delta = {k: (after[k] - before[k] if after[k] is not None and before[k] is not None else None)
             for k in COUNTER_KEYS}
    if sys.platform.startswith("linux"):
        method = ("read before the first packet and again after the last sender ended and the traffic "
                  "drained (root qdisc backlog empty and tx_packets unchanged for %d ms; waited %.3f s, "
                  "at most %g s); /proc/net counters are the source's network namespace's, every "
                  "process's traffic included" % (DRAIN_STEP_S * 1000, drained_s, DRAIN_MAX_S))
        if not iface:
            method += "; no --iface/--counters-iface: no NIC or qdisc counters"
    else:
        method = "unavailable on %s (no /proc/net, /sys/class/net or tc)" % sys.platform
    return {"iface": iface, "before": public(before), "after": public(after), "delta": delta,
            "method": method, "names": counter_names(iface)}


# ---------------------------------------------------------------- sending

class _Mmsghdr(ctypes.Structure):
    pass


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


_Mmsghdr._fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    # The interpreter's own symbols include libc's; find_library would run ldconfig.
    for name in (None, "libc.so.6"):
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            pass
    return None


def _sendmmsg(libc):
    """libc's sendmmsg with argument types set, or None (macOS, old libc)."""
    fn = getattr(libc, "sendmmsg", None) if libc is not None else None
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


class _Sender(object):
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


def _sockaddr_in(ip, port):
    """struct sockaddr_in as Linux lays it out (sin_family u16 in host order)."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + bytes(8)


def _iface_ipv4(iface):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        import fcntl
        res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
        return socket.inet_ntoa(res[20:24])
    finally:
        s.close()


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
    libc = _libc()
    if libc is not None:
        try:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            libc.prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)
        except (AttributeError, OSError):
            pass
    return libc


def send_stream(sender, cfg, shm, stop):
    """Send sender.scheduled packets of stream sender.index, paced against
    absolute deadlines; returns the report dict.  Runs in the sender process.

    Kept lean: everything that can be looked up once is bound to a local before
    the loop; per packet it costs one pack_into and one monotonic_ns()."""
    T = cfg["threads"]
    t = sender.index
    pps = cfg["pps"]
    ppid = cfg["ppid"]
    counter_off = 8 + 16 * t
    packet = cfg["send_path"] == "packet"
    if packet:
        template = build_frame(cfg["src_mac"], cfg["dst_mac"], cfg["src_ip"], cfg["dst"], sender.sport,
                               cfg["port"], cfg["size"])
        hdr_off = ETH_HLEN + IP_HLEN + UDP_HLEN
    else:
        template = bytes(cfg["size"])
        hdr_off = 0
    stride = len(template)
    buf = (ctypes.c_char * (stride * BATCH_MAX))()
    for m in range(BATCH_MAX):
        ctypes.memmove(ctypes.addressof(buf) + m * stride, template, stride)
    libc = cfg["libc"]
    mmsg = _sendmmsg(libc)
    fd = sender.sock.fileno()
    addr = None if packet else (cfg["dst"], cfg["port"])
    connected = False
    if not packet:
        # A connected socket skips the route lookup per packet: ~13 % more
        # packets per second measured here.  Its catch is handled below.  A
        # destination connect() refuses (broadcast without SO_BROADCAST) stays
        # unconnected, and its sends fail one by one, counted.
        try:
            sender.sock.connect(addr)
            connected = True
        except OSError:
            pass
    if mmsg is not None:
        name = ctypes.create_string_buffer(_sockaddr_in(cfg["dst"], cfg["port"]), 16)
        iovs = (_Iovec * BATCH_MAX)()
        msgs = (_Mmsghdr * BATCH_MAX)()
        for m in range(BATCH_MAX):
            iovs[m].iov_base = ctypes.addressof(buf) + m * stride
            iovs[m].iov_len = stride
            h = msgs[m].msg_hdr
            if not packet and not connected:
                h.msg_name = ctypes.addressof(name)
                h.msg_namelen = 16
            h.msg_iov = ctypes.pointer(iovs[m])
            h.msg_iovlen = 1
        msg_at = [ctypes.addressof(msgs) + m * ctypes.sizeof(_Mmsghdr) for m in range(BATCH_MAX)]
        get_errno = ctypes.get_errno
    view = memoryview(buf).cast("B")
    send_call = sender.sock.send if packet or connected else sender.sock.sendto
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
    counters = struct.Struct("=QQ").pack_into
    magic = MAGIC
    spin = SPIN_S
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
    for ph in phases:
        if interrupted:
            break
        n = stream_count(ph["scheduled"], T, t)
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
                while clock() < due:
                    pass
                now = clock()
            lag = now - due
            if lag > max_lag:
                max_lag = lag
            # The batch: every packet of this stream due by now, at most BATCH_MAX.
            if poisson:
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
                seq = k * T + t
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
                    failure(err, (k + i) * T + t)
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
                            failure(e.errno, (k + m) * T + t)
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
        phase_reports.append({"scheduled": n, "attempted": k, "send_errors": errors,
                              "send_error_kinds": error_kinds, "failed_seqs": failed,
                              "first_pc": phase_first, "per_s": per_s})
    end_pc = clock()
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
            "send_call": "sendmmsg" if mmsg else "sendto", "refused_retries": retries, "crash": None,
            "per_s": m["per_s"], "warmup": phase_reports[0] if len(phase_reports) > 1 else None}


def _child(sender, cfg, shm, wfd):
    """The body of a forked sender; never returns."""
    report = {"index": sender.index, "scheduled": sender.scheduled, "attempted": 0, "send_errors": 0,
              "send_error_kinds": {}, "failed_seqs": [], "max_lag_s": 0.0, "max_burst": 0,
              "end_pc": time.perf_counter(), "first_pc": None, "interrupted": True, "send_call": None,
              "crash": None, "per_s": None, "warmup": None}
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
        report = send_stream(sender, cfg, shm, stop)
    except BaseException as e:  # the main process reports it on stderr and exits 1, after the JSON
        report["crash"] = repr(e)
        report["end_pc"] = time.perf_counter()
    try:
        data = (json.dumps(report) + "\n").encode()
        while data:
            data = data[os.write(wfd, data):]
    except OSError:
        pass
    os._exit(0)


def _shm_layout(T):
    """The senders' shared memory: byte 0 the stop flag; sender t's (attempted, errors) as
    two u64 at 8 + 16*t; the start (a perf_counter() instant, f64) after them, then one
    ready byte per sender."""
    start_off = 8 + 16 * T
    return start_off, start_off + 8, start_off + 8 + T


def _await_start(t, cfg, shm, stop):
    """In sender t: say it is ready, wait for the main process to set the start, and
    return cfg with its phases moved to that start (they were planned from a nominal one)."""
    start_off, ready_off, _ = _shm_layout(cfg["threads"])
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
    start_off, ready_off, _ = _shm_layout(T)
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


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _open_udp(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
    except OSError:
        pass  # the default buffer works, only with less room for bursts
    if src is not None:
        s.bind((src, 0))
    return s


def _open_packet(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: sends only, receives nothing
    try:
        s.bind((iface, 0))
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
        except OSError:
            pass
    except OSError:
        s.close()
        raise
    return s


def _die(message, status=2):
    sys.stderr.write("generator.py: error: %s\n" % message)
    sys.exit(status)


def open_senders(args):
    """Sockets for every sender, opened before anything is sent, so that a bad
    --src or a packet socket without privilege fails the run with exit 2."""
    senders = [_Sender(t, args.threads, args.scheduled) for t in range(args.threads)]
    cfg = {}
    if args.send_path == "packet":
        mtu = _read("/sys/class/net/%s/mtu" % args.iface)
        mac = _read("/sys/class/net/%s/address" % args.iface)
        if mtu is None or mac is None:
            _die("--iface %s: no such interface" % args.iface)
        if args.size + IP_HLEN + UDP_HLEN > int(mtu):
            _die("--size %d does not fit --iface %s's MTU of %d bytes with send path packet (at most %d)"
                 % (args.size, args.iface, int(mtu), int(mtu) - IP_HLEN - UDP_HLEN))
        src_ip = args.src
        if src_ip is None:
            try:
                src_ip = _iface_ipv4(args.iface)
            except OSError:
                _die("--send-path packet: --iface %s has no IPv4 address; give --src" % args.iface)
        cfg.update(src_mac=_mac(mac.strip()), dst_mac=args.dst_mac, src_ip=src_ip)
    try:
        for s in senders:
            if args.send_path == "packet":
                try:
                    s.sock = _open_packet(args.iface)
                except OSError as e:
                    _die("--send-path packet: cannot open an AF_PACKET socket on --iface %s (needs root or "
                         "CAP_NET_RAW): %s" % (args.iface, e))
                # A UDP socket bound to the source port reserves it: no other
                # program's traffic shares this sender's flow.
                try:
                    keep = _open_udp(src_ip)
                except OSError as e:
                    _die("--src %s cannot be bound: %s" % (src_ip, e))
                s.keep.append(keep)
                s.sport = keep.getsockname()[1]
            else:
                try:
                    s.sock = _open_udp(args.src)
                except OSError as e:
                    if args.src:
                        _die("cannot open a UDP socket bound to --src %s: %s" % (args.src, e))
                    _die("cannot open a UDP socket: %s" % e, 1)
    except SystemExit:
        for s in senders:
            for sock in [s.sock] + s.keep:
                if sock is not None:
                    sock.close()
        raise
    return senders, cfg


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
    kinds = merged_kinds(ws)
    return {"run_id": args.warmup_run_id, "duration_s": float(args.warmup_s),
            "scheduled": args.warmup_scheduled, "sent": attempted - errors, "send_errors": errors,
            "send_error_kinds": kinds, "not_offered": args.warmup_scheduled - attempted,
            "failed_seqs": sorted(x for w in ws for x in w["failed_seqs"])[:MAX_FAILED_SEQS],
            "start_monotonic_ns": mono_at(start0), "end_monotonic_ns": mono_at(start)}


def merged_kinds(reports):
    """The senders' send_error_kinds added up: {errno name: count}."""
    kinds = {}
    for r in reports:
        for k, v in r["send_error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return kinds


def stop_on_signals():
    """(stop, caught): SIGTERM, SIGINT and SIGHUP set stop[0] and are noted in caught, so
    that the run ends in order (its report still printed)."""
    stop, caught = [False], []

    def on_signal(signum, frame):
        stop[0] = True
        caught.append(signum)

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    return stop, caught


def run(args):
    """Send the run described by parse_args() and return (result dict, exit status)."""
    T = args.threads
    senders, cfg = open_senders(args)

    stop, caught = stop_on_signals()

    iface = args.counters_iface
    before = read_counters(iface)

    # Shared with the senders (_shm_layout): the stop flag, each sender's counts after
    # every batch, the start and the senders' ready bytes.
    shm = mmap.mmap(-1, _shm_layout(T)[2])

    # One sampling of the three clocks maps perf_counter() instants to the
    # monotonic (send_ns, DUT-comparable on one machine) and Unix timelines.
    # Each clock is read once before: a first call costs ~5 us here, which
    # would shift the mapping by as much.
    time.perf_counter(), time.monotonic_ns(), time.time_ns()
    pc0 = time.perf_counter()
    mono0 = time.monotonic_ns()
    unix0 = time.time_ns()
    # The warm-up's start (or the measured window's, without one) as planned; the senders
    # move their schedule to the actual start once all are ready (_set_start).
    start0 = pc0 + READY_TIMEOUT_S
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
    cfg.update(threads=T, pps=args.pps, phases=phases, run_id=args.run_id,
               ppid=os.getpid(), send_path=args.send_path, size=args.size, dst=args.dst, port=args.port,
               pattern=args.pattern, burst_size=args.burst_size, seed=args.seed)
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
    actual = _set_start(senders, shm, T)
    start0, start = actual, start + (actual - start0)

    def sent_so_far():
        total = 0
        for t in range(T):
            attempted, errs = struct.unpack_from("=QQ", shm, 8 + 16 * t)
            total += attempted - errs
        return total

    progress = args.progress_s > 0
    next_report = start0 + args.progress_s
    last_t, last_sent = start0, 0
    watch = _StreamWatch([("stdout", sys.stdout), ("stderr", sys.stderr)])
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
        if gone is None:
            broken = watch.broken()
            if broken:
                gone = "%s lost its reader" % broken
        if gone is None and progress and now >= next_report:
            sent = sent_so_far()
            rate = (sent - last_sent) / (now - last_t) if now > last_t else 0.0
            # t from the first packet's due time, sent over warm-up and measured run together
            if not _write(sys.stderr, "progress t=%.1fs sent=%d pps=%.0f\n" % (now - start0, sent, rate)):
                gone = "writing a progress line to stderr failed"
            last_t, last_sent = now, sent
            next_report += args.progress_s
            while next_report <= now:
                next_report += args.progress_s
        if (gone is not None or caught) and not shm[0]:
            shm[0] = 1  # every sender stops within a batch or MAX_SLEEP_S
            stop_pc = time.perf_counter()
        wait = WATCH_S
        if progress:
            wait = min(wait, max(next_report - now, 0.001))
        time.sleep(wait)  # a signal interrupts the sleep and its handler runs at once

    t_drain = time.perf_counter()
    after = wait_drained(iface) if sys.platform.startswith("linux") else read_counters(iface)
    drained_s = time.perf_counter() - t_drain

    reports = [s.report for s in senders]
    crashed = [(s.index, (r or {}).get("crash") or "ended without a report (killed?)")
               for s, r in zip(senders, reports) if r is None or r.get("crash")]
    if crashed:
        sys.stderr.write("generator.py: error: sender %d failed: %s\n" % crashed[0])
    reports = [r if r is not None else {"index": s.index, "scheduled": s.scheduled, "attempted": 0,
                                         "send_errors": 0, "send_error_kinds": {}, "failed_seqs": [],
                                         "max_lag_s": 0.0, "max_burst": 0, "end_pc": start0, "first_pc": None,
                                         "interrupted": True, "send_call": None, "per_s": None,
                                         "warmup": None}
               for s, r in zip(senders, reports)]

    sent = sum(r["attempted"] - r["send_errors"] for r in reports)
    errors = sum(r["send_errors"] for r in reports)
    attempted = sum(r["attempted"] for r in reports)
    kinds = merged_kinds(reports)
    failed = sorted(s for r in reports for s in r["failed_seqs"])[:MAX_FAILED_SEQS]
    end_pc = max(r["end_pc"] for r in reports)
    elapsed = max(end_pc - start, 0.0)
    interrupted = bool(caught) or gone is not None or any(r["interrupted"] for r in reports)
    if interrupted:
        # The window ends where the sending was stopped (or the senders ended, if earlier).
        stopped = min(x for x in (stop_pc, end_pc) if x is not None)
        window = min(max(stopped - start, 0.0), duration)
    else:
        window = duration
    achieved = sent / window if window > 0 else 0.0
    calls = {r.get("send_call") for r in reports} - {None}

    def mono_at(pc):
        return mono0 + int(round((pc - pc0) * 1e9))

    def unix_at(pc):
        return unix0 + int(round((pc - pc0) * 1e9))

    result = {
        "generator": GENERATOR,
        "backend": "python",
        "run_id": args.run_id,
        "dst": args.dst,
        "port": args.port,
        "target_pps": args.pps,
        "payload_bytes": args.size,
        "duration_s": duration,
        "threads": T,
        "scheduled": args.scheduled,
        "sent": sent,
        "send_errors": errors,
        "send_error_kinds": kinds,
        "failed_seqs": failed,
        "elapsed_s": round(elapsed, 6),
        "window_s": round(window, 6),
        "achieved_pps": round(achieved, 3),
        "not_offered": args.scheduled - attempted,
        "rate_sustained": achieved >= args.pps * (1.0 - SUSTAINED_TOLERANCE),
        "max_burst": max(r["max_burst"] for r in reports),
        "pattern": args.pattern,
        "burst_size": args.burst_size,
        "seed": args.seed,
        "send_path": args.send_path,
        "send_call": calls.pop() if len(calls) == 1 else None,
        "refused_retries": sum(r.get("refused_retries", 0) for r in reports),
        "batch_max": BATCH_MAX,
        "start_monotonic_ns": mono_at(start),
        "end_monotonic_ns": mono_at(end_pc),
        "start_unix_ns": unix_at(start),
        "end_unix_ns": unix_at(end_pc),
        "max_lag_us": round(max(r["max_lag_s"] for r in reports) * 1e6, 1),
        "interrupted": interrupted,
        "boot_id": _boot_id(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "sent_per_s": sent_per_second(reports, duration),
        "warmup": warmup_report(args, reports, senders, mono_at, start0, start),
        "per_thread": [
            {"thread": r["index"], "scheduled": r["scheduled"], "sent": r["attempted"] - r["send_errors"],
             "send_errors": r["send_errors"], "not_offered": r["scheduled"] - r["attempted"],
             "max_burst": r["max_burst"], "max_lag_us": round(r["max_lag_s"] * 1e6, 1)}
            for r in reports
        ],
        "source_counters": counters_report(iface, before, after, drained_s),
    }
    if caught:
        status = 128 + caught[0]
    elif gone is not None:
        status = EXIT_CONTROLLER_GONE
        _write(sys.stderr, "generator.py: error: stopped sending, the controller is gone (%s)\n" % gone)
    elif crashed:
        status = 1
    else:
        status = 0
    return result, status


# ---------------------------------------------------------------- trafgen backend
#
# --backend trafgen hands the sending to netsniff-ng's trafgen (measured 0.6.8),
# one process per phase (warm-up, then measured), and reports the same JSON.
#
# The payload header.  trafgen's runtime counters are one byte wide (no carry),
# and a protocol header after udp() is refused (an assertion in its
# udp_set_next_proto), but a protocol *field* counts as a 32-bit big-endian
# integer with carry (dinc).  So the UDP header and the first 12 payload bytes
# are written as a second IPv4 header ("IP in IP" to trafgen, never on the
# wire as such: the outer header says UDP), whose fields land on:
#
#   inner ver/ihl, tos  -> UDP source port        inner ttl, proto, csum -> magic
#   inner len           -> UDP destination port   inner saddr            -> seq (dinc: +1 per packet)
#   inner id            -> UDP length             inner daddr            -> send_ns, upper 4 bytes (0)
#   inner flags/frag    -> UDP checksum (0: none)
#
# followed by raw bytes: send_ns's lower 4 bytes (0), run_id, zeros.  Every
# inner field is given, so trafgen computes none of them (its checksum
# included: measured, the magic stays intact while saddr counts).  send_ns
# stays 0: trafgen cannot write a send time.
#
# Pacing.  trafgen --rate Npps sends through sendto() and, measured here, each
# second's N packets back to back at the start of that second (1000 pps: 1000
# packets within 6 ms, then 994 ms idle): the mean rate is exact, the spacing
# is one burst per second.  "pacing" in the report says so.  It runs one
# process (trafgen's --rate implies it), so --threads is 1.
#
# No stretch.  The measured window starts when trafgen says "Running!" (read
# from its stdout at once) and lasts --duration; trafgen gets --num scheduled
# packets, and is stopped with SIGINT (its process group: trafgen forks its
# sender) at the window's end plus END_GRACE_S if it has not finished.
# sent is trafgen's own count ("N packets outgoing", printed at its exit);
# the NIC's tx_packets delta over each phase is reported beside it.

TRAFGEN_READY_S = 5.0  # trafgen must say "Running!" within this long
TRAFGEN_STOP_S = 2.0  # after SIGINT, this long before SIGKILL
# sent_per_s samples this long before each whole second: trafgen's seconds (and
# its first packet) begin ~2 ms before its "Running!" reaches us (measured).
TRAFGEN_SAMPLE_LEAD_S = 0.02


def trafgen_config(dst_mac, src_mac, src_ip, dst_ip, sport, dport, size, run_id):
    """trafgen's packet configuration for one run: the xdplab payload header with
    seq counting from 0 (see the comment above)."""
    udp_len = UDP_HLEN + size
    return ("{\n"
            "  eth(da=%s, sa=%s),\n"
            "  ipv4(sa=%s, da=%s, ttl=64, df, id=0, proto=17),\n"
            "  /* UDP header and payload bytes 0-11, written as a second IPv4 header (32-bit seq counter) */\n"
            "  ipv4(ver=%d, ihl=%d, tos=%d, len=%d, id=%d, frag=0, ttl=%d, proto=%d, csum=%d,\n"
            "       sa=0.0.0.0, sa=dinc(), da=0.0.0.0),\n"
            "  c32(0), c16(%d)%s\n"
            "}\n") % (_mac_text(dst_mac), _mac_text(src_mac), src_ip, dst_ip, sport >> 12, (sport >> 8) & 0xF,
                      sport & 0xFF, dport, udp_len, MAGIC >> 24, (MAGIC >> 16) & 0xFF, MAGIC & 0xFFFF, run_id,
                      ",\n  fill(0x00, %d)" % (size - HEADER_LEN) if size > HEADER_LEN else "")


def parse_trafgen_stats(text):
    """trafgen's exit summary: {"packets", "bytes", "cpu_s", "per_cpu": [{"cpu", "packets", "s"}]}
    with None where a line is missing (killed before printing)."""
    out = {"packets": None, "bytes": None, "per_cpu": []}
    m = re.search(r"^\s*(\d+) packets outgoing", text, re.M)
    if m:
        out["packets"] = int(m.group(1))
    m = re.search(r"^\s*(\d+) bytes outgoing", text, re.M)
    if m:
        out["bytes"] = int(m.group(1))
    for m in re.finditer(r"^\s*(\d+) sec, (\d+) usec on CPU(\d+) \((\d+) packets\)", text, re.M):
        out["per_cpu"].append({"cpu": int(m.group(3)), "packets": int(m.group(4)),
                               "s": int(m.group(1)) + int(m.group(2)) / 1e6})
    return out


def trafgen_argv(trafgen, iface, conf, num, pps):
    """One phase's command line: --num packets at --rate pps, one process, no
    change to the host's socket memory sysctls or the NIC's IRQ affinity."""
    return [trafgen, "--dev", iface, "--conf", conf, "--num", str(num), "--rate", "%dpps" % pps, "--cpus", "1",
            "--no-sock-mem", "--notouch-irq"]


def _nic_tx(iface):
    v = _read("/sys/class/net/%s/statistics/tx_packets" % iface)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class _TrafgenPhase(object):
    """One trafgen process: started, read until "Running!", stopped at its deadline."""

    def __init__(self, argv):
        self.argv = argv
        self.proc = None
        self.out = b""
        self.err = b""
        self.ready_pc = None
        self.end_pc = None
        self.stopped = False  # SIGINT sent by us
        self.killed = False

    def start(self, poll_stop):
        """Start and wait for "Running!"; returns an error message or None."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)
        limit = time.perf_counter() + TRAFGEN_READY_S
        while self.ready_pc is None:
            self._read(0.005)
            if b"Running!" in self.out:
                self.ready_pc = time.perf_counter()
                return None
            if self.proc.poll() is not None:
                self._read(0)
                self.end_pc = time.perf_counter()
                return "trafgen exited with %s before sending: %s" % (
                    self.proc.returncode, (self.err or self.out).decode("utf-8", "replace").strip()[-300:])
            if time.perf_counter() > limit or poll_stop():
                self.stop()
                return "trafgen did not start sending within %g s" % TRAFGEN_READY_S
        return None

    def _read(self, wait):
        fds = [f for f in (self.proc.stdout, self.proc.stderr) if f is not None]
        try:
            ready, _, _ = select.select(fds, [], [], wait)
        except (OSError, ValueError):
            return
        for f in ready:
            try:
                data = os.read(f.fileno(), 65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if f is self.proc.stdout:
                self.out += data
            else:
                self.err = (self.err + data)[-65536:]

    def done(self):
        if self.proc.poll() is None:
            return False
        if self.end_pc is None:
            self.end_pc = time.perf_counter()
        return True

    def stop(self):
        """SIGINT to trafgen's process group (it prints its counts and exits), SIGKILL
        if it has not ended within TRAFGEN_STOP_S; then collect its output."""
        if self.proc.poll() is None:
            self.stopped = True
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except OSError:
                pass
            limit = time.perf_counter() + TRAFGEN_STOP_S
            while self.proc.poll() is None and time.perf_counter() < limit:
                self._read(0.01)
            if self.proc.poll() is None:
                self.killed = True
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait()
        if self.end_pc is None:
            self.end_pc = time.perf_counter()
        self.finish()

    def finish(self):
        self.proc.wait()
        while True:
            before = len(self.out) + len(self.err)
            self._read(0)
            if len(self.out) + len(self.err) == before:
                break
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def report(self):
        text = self.out.decode("utf-8", "replace")
        stats = parse_trafgen_stats(text)
        return {"argv": self.argv, "exit_status": self.proc.returncode if self.proc else None,
                "stopped_by_sigint": self.stopped, "killed": self.killed, "stats": stats,
                "stderr": self.err.decode("utf-8", "replace").strip()[-500:] or None}


def run_trafgen(args):
    """--backend trafgen: the run described by parse_args(); (result dict, exit status)."""
    iface = args.iface
    mtu = _read("/sys/class/net/%s/mtu" % iface)
    mac = _read("/sys/class/net/%s/address" % iface)
    if mtu is None or mac is None:
        _die("--iface %s: no such interface" % iface)
    if args.size + IP_HLEN + UDP_HLEN > int(mtu):
        _die("--size %d does not fit --iface %s's MTU of %d bytes (at most %d)"
             % (args.size, iface, int(mtu), int(mtu) - IP_HLEN - UDP_HLEN))
    src_ip = args.src
    if src_ip is None:
        try:
            src_ip = _iface_ipv4(iface)
        except OSError:
            _die("--backend trafgen: --iface %s has no IPv4 address; give --src" % iface)
    try:
        keep = _open_udp(src_ip)  # reserves the source port: no other program's traffic shares the flow
    except OSError as e:
        _die("--src %s cannot be bound: %s" % (src_ip, e))
    sport = keep.getsockname()[1]
    version = None
    try:
        r = subprocess.run([args.trafgen, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=5)
        version = r.stdout.decode("utf-8", "replace").strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        _die("--backend trafgen: cannot run %s" % args.trafgen)

    # Uploaded as /tmp/xdplab-generator-<run_id>.py, the configurations go beside it,
    # named after it: the controller's cleanup finds (pgrep -f) and removes them by that name.
    me = os.path.abspath(sys.argv[0] or "generator")
    tag = os.path.basename(me) + ".trafgen-"
    conf_dir = os.path.dirname(me) if os.path.basename(me).startswith("xdplab-generator-") else None
    phases = []
    if args.warmup_s > 0:
        phases.append(("warmup", args.warmup_run_id, args.warmup_scheduled, float(args.warmup_s)))
    phases.append(("measured", args.run_id, args.scheduled, float(args.duration)))
    confs = {}
    for name, run_id, _, _ in phases:
        fd, path = tempfile.mkstemp(prefix=tag + name + "-", suffix=".cfg", dir=conf_dir)
        with os.fdopen(fd, "w") as f:
            f.write(trafgen_config(args.dst_mac, _mac(mac.strip()), src_ip, args.dst, sport, args.port, args.size,
                                   run_id))
        confs[name] = path

    stop, caught = stop_on_signals()
    watch = _StreamWatch([("stdout", sys.stdout), ("stderr", sys.stderr)])
    gone = [None]

    def poll_stop():
        if gone[0] is None:
            broken = watch.broken()
            if broken:
                gone[0] = "%s lost its reader" % broken
        return bool(caught) or gone[0] is not None

    time.perf_counter(), time.monotonic_ns(), time.time_ns()
    pc0 = time.perf_counter()
    mono0 = time.monotonic_ns()
    unix0 = time.time_ns()

    def mono_at(pc):
        return mono0 + int(round((pc - pc0) * 1e9))

    def unix_at(pc):
        return unix0 + int(round((pc - pc0) * 1e9))

    before = read_counters(iface)
    results = {}
    failure = None
    progress = args.progress_s > 0
    run_start = None
    last_t, last_tx = None, _nic_tx(iface)
    total_sent_nic = 0
    try:
        for name, run_id, scheduled, duration in phases:
            if poll_stop():
                break
            if name == "measured" and "warmup" in results:
                # the measured run starts on the warm-up's schedule, not before its end
                w = results["warmup"]
                while time.perf_counter() < w["ready_pc"] + w["duration"] and not poll_stop():
                    time.sleep(0.0005)
            tx0 = _nic_tx(iface)
            ph = _TrafgenPhase(trafgen_argv(args.trafgen, iface, confs[name], scheduled, args.pps))
            failure = ph.start(poll_stop)
            if failure:
                ph.finish()
                results[name] = {"phase": ph, "ready_pc": None, "duration": duration, "tx0": tx0,
                                 "tx1": _nic_tx(iface), "samples": []}
                break
            ready = ph.ready_pc
            if run_start is None:
                run_start = ready
                last_t = ready
            deadline = ready + duration + (END_GRACE_S if name == "measured" else 0.0)
            samples = []  # NIC tx_packets before each whole second's burst (measured run)
            whole = int(duration + 1e-9) if name == "measured" else 0
            next_sample = 1
            next_report = (last_t + args.progress_s) if progress else float("inf")
            while not ph.done():
                now = time.perf_counter()
                if poll_stop() or now >= deadline:
                    break
                if next_sample <= whole and now >= ready + next_sample - TRAFGEN_SAMPLE_LEAD_S:
                    samples.append(_nic_tx(iface))
                    next_sample += 1
                if now >= next_report:
                    tx = _nic_tx(iface)
                    if tx is not None and last_tx is not None:
                        line = "progress t=%.1fs sent=%d pps=%.0f\n" % (
                            now - run_start, total_sent_nic + tx - tx0, (tx - last_tx) / max(now - last_t, 1e-9))
                        if not _write(sys.stderr, line):
                            gone[0] = "writing a progress line to stderr failed"
                    last_t, last_tx = now, tx
                    next_report += args.progress_s
                    while next_report <= now:
                        next_report += args.progress_s
                nxt = min(deadline, next_report,
                          ready + next_sample - TRAFGEN_SAMPLE_LEAD_S if next_sample <= whole else deadline)
                time.sleep(min(max(nxt - time.perf_counter(), 0.0), WATCH_S))
            ph.stop()  # a no-op when trafgen finished by itself
            if not ph.stopped and ph.proc.returncode != 0:
                failure = "trafgen exited with %s while sending: %s" % (
                    ph.proc.returncode, ph.err.decode("utf-8", "replace").strip()[-300:])
            tx1 = _nic_tx(iface)
            while len(samples) < whole:
                samples.append(tx1)  # trafgen ended before these seconds: nothing more was sent
            if tx0 is not None and tx1 is not None:
                total_sent_nic += tx1 - tx0
            results[name] = {"phase": ph, "ready_pc": ready, "duration": duration, "tx0": tx0, "tx1": tx1,
                             "samples": samples}
            if failure:
                break
    finally:
        for path in confs.values():
            try:
                os.unlink(path)
            except OSError:
                pass
    t_drain = time.perf_counter()
    after = wait_drained(iface)
    drained_s = time.perf_counter() - t_drain
    keep.close()

    def phase_figures(name, scheduled):
        r = results.get(name)
        if r is None:
            return {"sent": 0, "not_offered": scheduled, "nic_tx_packets": None, "ready_pc": None, "end_pc": None,
                    "trafgen": None}
        rep = r["phase"].report()
        sent = rep["stats"]["packets"]
        nic = r["tx1"] - r["tx0"] if r["tx0"] is not None and r["tx1"] is not None else None
        if sent is None:
            sent = nic if nic is not None else 0  # killed before its summary: the NIC's count
        return {"sent": sent, "not_offered": scheduled - sent, "nic_tx_packets": nic, "ready_pc": r["ready_pc"],
                "end_pc": r["phase"].end_pc, "trafgen": rep, "samples": r["samples"], "tx0": r["tx0"],
                "tx1": r["tx1"]}

    m = phase_figures("measured", args.scheduled)
    interrupted = bool(caught) or gone[0] is not None or failure is not None
    duration = float(args.duration)
    start = m["ready_pc"]
    if start is None:
        window = 0.0
        start = m["end_pc"] or time.perf_counter()
    elif interrupted:
        window = min(max(m["end_pc"] - start, 0.0), duration)
    else:
        window = duration
    end_pc = m["end_pc"] or start
    achieved = m["sent"] / window if window > 0 else 0.0
    per_s = []
    if m.get("samples") is not None and m.get("tx0") is not None and None not in m["samples"]:
        marks = [m["tx0"]] + m["samples"]
        per_s = [b - a for a, b in zip(marks, marks[1:])]
    warm = None
    if args.warmup_s > 0:
        w = phase_figures("warmup", args.warmup_scheduled)
        warm = {"run_id": args.warmup_run_id, "duration_s": float(args.warmup_s),
                "scheduled": args.warmup_scheduled, "sent": w["sent"], "send_errors": 0, "send_error_kinds": {},
                "not_offered": w["not_offered"], "failed_seqs": [], "nic_tx_packets": w["nic_tx_packets"],
                "start_monotonic_ns": mono_at(w["ready_pc"]) if w["ready_pc"] else None,
                "end_monotonic_ns": mono_at(w["end_pc"]) if w["end_pc"] else None,
                # from the warm-up's planned end (its start + warmup_s) to the measured run's start
                "gap_to_measured_s": (round(m["ready_pc"] - (w["ready_pc"] + float(args.warmup_s)), 6)
                                      if w["ready_pc"] and m["ready_pc"] else None),
                "trafgen": w["trafgen"]}
    result = {
        "generator": GENERATOR,
        "backend": "trafgen",
        "run_id": args.run_id,
        "dst": args.dst,
        "port": args.port,
        "target_pps": args.pps,
        "payload_bytes": args.size,
        "duration_s": duration,
        "threads": 1,
        "scheduled": args.scheduled,
        "sent": m["sent"],
        "send_errors": 0,
        "send_error_kinds": {},
        "failed_seqs": [],
        "elapsed_s": round(max(end_pc - start, 0.0), 6),
        "window_s": round(window, 6),
        "achieved_pps": round(achieved, 3),
        "not_offered": m["not_offered"],
        "rate_sustained": achieved >= args.pps * (1.0 - SUSTAINED_TOLERANCE),
        "max_burst": None,
        "pattern": "constant",
        "burst_size": None,
        "seed": None,
        "send_path": "packet",
        "send_call": "trafgen",
        "refused_retries": 0,
        "batch_max": None,
        "start_monotonic_ns": mono_at(start),
        "end_monotonic_ns": mono_at(end_pc),
        "start_unix_ns": unix_at(start),
        "end_unix_ns": unix_at(end_pc),
        "max_lag_us": None,
        "interrupted": interrupted,
        "boot_id": _boot_id(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "per_thread": [{"thread": 0, "scheduled": args.scheduled, "sent": m["sent"], "send_errors": 0,
                        "not_offered": m["not_offered"], "max_burst": None, "max_lag_us": None}],
        "sent_per_s": per_s,
        "warmup": warm,
        "source_counters": counters_report(iface, before, after, drained_s),
        "send_ns": "0 in every packet: trafgen cannot write a send time; latency not available",
        "pacing": "trafgen --rate: each second's packets back to back at the start of that second "
                  "(mean rate exact, one burst per second)",
        "methods": {
            "sent": "trafgen's own count ('packets outgoing' at its exit; the NIC's tx_packets delta "
                    "if trafgen was killed before printing it)",
            "send_errors": "not reported by trafgen: 0 here; compare sent with nic_tx_packets",
            "window": "from trafgen's 'Running!' line (read at once; its first packet leaves ~2 ms "
                      "before, measured) for duration_s; trafgen is stopped with SIGINT at its end plus "
                      "%g s" % END_GRACE_S,
            "sent_per_s": "the NIC's tx_packets read before trafgen started and %g ms before each whole "
                          "second of the window (every packet on the interface counts)"
                          % (TRAFGEN_SAMPLE_LEAD_S * 1000),
        },
        "nic_tx_packets": m["nic_tx_packets"],
        "trafgen": {"path": args.trafgen, "version": version, "sport": sport, "measured": m["trafgen"]},
    }
    if caught:
        status = 128 + caught[0]
    elif gone[0] is not None:
        status = EXIT_CONTROLLER_GONE
        _write(sys.stderr, "generator.py: error: stopped sending, the controller is gone (%s)\n" % gone[0])
    elif failure is not None:
        _write(sys.stderr, "generator.py: error: %s\n" % failure)
        status = 1
    else:
        status = 0
    return result, status


def main(argv=None):
    args = parse_args(argv)
    result, status = run_trafgen(args) if args.backend == "trafgen" else run(args)
    if not _write(sys.stdout, json.dumps(result) + "\n") and status == 0:
        status = EXIT_CONTROLLER_GONE  # nobody received the report
    return status


if __name__ == "__main__":
    sys.exit(main())
