#!/usr/bin/python3
"""xdplab DUT agent: arms the XDP collector on the device under test over REST.

Runs as root on the device under test (DUT), with the system Python that has
BCC.  It compiles bpf/collector.bpf.c, attaches it to one allowed interface
through a bpf_link (so a killed agent leaves nothing attached), consumes the
per-packet feature records from the ring buffer, runs tcpdump beside it, and
reports everything measured over the armed window.  The REST API is specified
in workflow/xdplab/PROTOCOL.md ("DUT agent REST API").

Usage:
    /usr/bin/python3 workflow/xdplab/agent.py --listen 10.201.2.2:7717 \\
        --token-file /run/xdplab/agent.token --bpf-dir /work/main/bpf \\
        --allow-interface xl-dut0 [--allow-interface IF ...] \\
        --state-dir /run/xdplab/agent

    curl -H "X-Xdplab-Token: $(cat /run/xdplab/agent.token)" \\
        http://10.201.2.2:7717/health

Logs go to stderr with timestamps.  SIGTERM, SIGINT and SIGHUP disarm any
armed session, delete the session pcaps, then exit 0.  The state directory
holds one pcap file per session the agent remembers (<session>.pcap); a pcap
is deleted when its session is forgotten (the agent keeps the last 64), when
arming fails, and at exit.  Pcaps left by a killed predecessor are deleted at
start (and logged).  One agent at a time may use a state directory (flock on
the directory); a second one exits with status 1 naming the first.  Nothing
is pinned: the program, its maps and its bpf_link live only in this process's
file descriptors, and tcpdump gets a parent-death signal, so even SIGKILL
leaves neither behind.

This file is self-contained (standard library + bcc) so it can be copied to a
DUT on its own; it needs the bpf/ directory (--bpf-dir).
"""

import argparse
import atexit
import ctypes as ct
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import platform
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AGENT = "xdplab-agent/1"
PROG_NAME = "xdplab_collect"
TOKEN_HEADER = "X-Xdplab-Token"

log = logging.getLogger("xdplab-agent")

# --- kernel ABI constants -----------------------------------------------------

BPF_XDP_ATTACH_TYPE = 37          # enum bpf_attach_type: BPF_XDP
BPF_LINK_CREATE_CMD = 28          # enum bpf_cmd
BPF_ENABLE_STATS_CMD = 32         # enum bpf_cmd
BPF_STATS_RUN_TIME = 0            # enum bpf_stats_type
XDP_FLAGS = {"generic": 2, "native": 4}   # XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE
# `ip -d link` "xdp.mode": XDP_ATTACHED_DRV=1, SKB=2, HW=3, MULTI=4
XDP_ATTACHED = {1: "native", 2: "generic", 3: "offload", 4: "multi"}
SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280}
PR_SET_PDEATHSIG = 1
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# --- limits on client input ----------------------------------------------------

SNAPLEN_MIN, SNAPLEN_MAX = 42, 262144
DEADLINE_MAX_S = 86400
EXPECTED_PACKETS_MAX = 1 << 32        # seq is a u32
RINGBUF_PAGES_MAX = 16384             # XDPLAB_RING_PAGES limit in collector.bpf.c
BITMAP_MAX_BYTES = 1 << 24            # 16 MiB = 134M seqs; seqs above go to a set
MAX_BODY_BYTES = 1 << 20
MAX_KEPT_SESSIONS = 64                # finished sessions remembered in memory
# The state directory is usually on /run (RAM): a 60 s trial at 100k pps is
# ~0.5 GB of pcap.  The controller downloads a capture before it disarms, so
# only the newest finished sessions keep theirs.
MAX_KEPT_CAPTURES = 2
TCPDUMP_LISTEN_TIMEOUT_S = 5.0
TCPDUMP_STOP_TIMEOUT_S = 10.0
# tcpdump opens the capture with a 1000 ms buffer timeout; with TPACKET_V3 a
# partly filled ring block reaches tcpdump only when that timer retires it,
# and SIGINT (pcap_breakloop) does not drain the ring: stopping right after the
# traffic gave "0 captured / 1000 received by filter" here.  So capture/stop
# first waits until this long has passed since the last matched packet.
TCPDUMP_SETTLE_S = 1.25
CONSUME_INTERVAL_S = 0.002            # ring buffer polled without wakeups
DRAIN_TIMEOUT_S = 1.0
SOFTIRQ_INTERVAL_S = 0.1
SINK_RCVBUF_BYTES = 4096
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PCAP_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\.pcap$")   # <session>.pcap
SHUTDOWN_ARMING_WAIT_S = 60.0         # a compile + attach in flight finishes first
HEX16_RE = re.compile(r"^[0-9a-f]{16}$")


class ApiError(Exception):
    """An error answered to the client as {"error": message} with a status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# --- small system helpers ------------------------------------------------------

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long
_libc.prctl.argtypes = [ct.c_int, ct.c_ulong, ct.c_ulong, ct.c_ulong, ct.c_ulong]


def _read_text(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        if default is not None:
            return default
        raise


def boot_id():
    return _read_text("/proc/sys/kernel/random/boot_id", "").strip()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fdinfo(fd):
    """Key/value pairs of /proc/self/fdinfo/<fd> (prog_tag, prog_id, run_cnt...)."""
    out = {}
    for line in _read_text("/proc/self/fdinfo/%d" % fd).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            value = value.strip()
            out[key.strip()] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return out


def run_argv(argv, timeout=10):
    """Run a command from an argv list (never through a shell)."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


def link_xdp_info(ifname):
    """The XDP program on an interface as `ip -j -d link` reports it, or None.

    Returns {"mode": "native"|"generic"|..., "progs": [{"id","name","tag"}]}.
    """
    res = run_argv(["ip", "-j", "-d", "link", "show", "dev", ifname])
    if res.returncode != 0:
        raise ApiError(500, "ip link show dev %s failed: %s" % (ifname, res.stderr.strip()))
    info = json.loads(res.stdout or "[]")
    if not info:
        raise ApiError(500, "ip link show dev %s returned nothing" % ifname)
    xdp = info[0].get("xdp")
    if not xdp:
        return None
    # iproute2 reports a single program both as "prog" and under "attached"
    # (which lists one entry per mode when several are attached): once each.
    progs = {}
    for p in [xdp.get("prog")] + [att.get("prog") for att in xdp.get("attached", [])]:
        if p and p.get("id") not in progs:
            progs[p.get("id")] = {"id": p.get("id"), "name": p.get("name"), "tag": p.get("tag")}
    return {"mode": XDP_ATTACHED.get(xdp.get("mode"), str(xdp.get("mode"))),
            "progs": list(progs.values())}


def nic_stats(ifname):
    base = "/sys/class/net/%s/statistics/" % ifname
    return {k: int(_read_text(base + k).strip()) for k in ("rx_packets", "rx_bytes", "rx_dropped")}


def udp_snmp():
    """The Udp: line pair of /proc/net/snmp as a dict (this network namespace)."""
    lines = [l.split() for l in _read_text("/proc/net/snmp").splitlines() if l.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


def udp_socket_drops(inode):
    """The `drops` column of /proc/net/udp for the socket with this inode."""
    for line in _read_text("/proc/net/udp", "").splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 13 and cols[9] == str(inode):
            return int(cols[12])
    return None


def proc_stat_cpu():
    """(softirq, total) jiffies of the aggregate `cpu` line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    vals = [int(v) for v in fields[1:9]]   # user nice system idle iowait irq softirq steal
    return vals[6], sum(vals)              # guest/guest_nice are already in user/nice


def parse_counter_enum(header_text):
    """Counter indices from `enum xdplab_counter` in xdplab.h: {"XDPLAB_SEEN": 0, ...}."""
    m = re.search(r"enum\s+xdplab_counter\s*\{(.*?)\}", header_text, re.S)
    if not m:
        raise RuntimeError("enum xdplab_counter not found in xdplab.h")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    body = re.sub(r"//[^\n]*", "", body)
    out, nxt = {}, 0
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, value = item.partition("=")
        idx = int(value.strip(), 0) if value.strip() else nxt
        out[name.strip()] = idx
        nxt = idx + 1
    if "XDPLAB_NR_COUNTERS" not in out:
        raise RuntimeError("enum xdplab_counter has no XDPLAB_NR_COUNTERS")
    return out


_CTYPES = {"__u64": ct.c_uint64, "__u32": ct.c_uint32, "__u16": ct.c_uint16, "__u8": ct.c_uint8,
           "__be64": ct.c_uint64, "__be32": ct.c_uint32, "__be16": ct.c_uint16,
           "__s64": ct.c_int64, "__s32": ct.c_int32, "__s16": ct.c_int16, "__s8": ct.c_int8,
           "u64": ct.c_uint64, "u32": ct.c_uint32, "u16": ct.c_uint16, "u8": ct.c_uint8}


def parse_feature_struct(header_text):
    """A ctypes mirror of `struct xdplab_feature` built from xdplab.h itself.

    BCC 0.26's RingBuf.event() cannot map the kernel's __u64/__u32 types (it
    exits the process), so the record layout is read from the header, which
    stays the only definition.  Natural C alignment, as the struct has no
    packed attribute."""
    m = re.search(r"struct\s+xdplab_feature\s*\{(.*?)\}\s*(__attribute__[^;]*)?;",
                  header_text, re.S)
    if not m:
        raise RuntimeError("struct xdplab_feature not found in xdplab.h")
    if m.group(2):
        raise RuntimeError("struct xdplab_feature has attributes the agent does not handle")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    body = re.sub(r"//[^\n]*", "", body)
    fields = []
    for decl in body.split(";"):
        decl = decl.strip()
        if not decl:
            continue
        fm = re.fullmatch(r"(\w+)\s+(\w+)", decl)
        if not fm or fm.group(1) not in _CTYPES:
            raise RuntimeError("struct xdplab_feature: cannot map field %r" % decl)
        fields.append((fm.group(2), _CTYPES[fm.group(1)]))
    return type("XdplabFeature", (ct.Structure,), {"_fields_": fields})


def nearest_rank(sorted_vals, pct):
    """Nearest-rank percentile: the smallest value with at least pct% of the
    samples at or below it, i.e. sorted_vals[ceil(pct/100 * n) - 1]."""
    n = len(sorted_vals)
    if n == 0:
        return None
    return sorted_vals[max(1, math.ceil(pct / 100.0 * n)) - 1]


def lock_state_dir(path):
    """flock the state directory for this agent's lifetime; returns the fd.

    Two agents on one state directory would delete each other's captures (a
    starting agent removes the pcaps a killed predecessor left).  The lock
    goes away with the process, also on SIGKILL."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)   # O_CLOEXEC: children do not hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        ino = os.fstat(fd).st_ino
        os.close(fd)
        holders = []
        for line in _read_text("/proc/locks", "").splitlines():
            cols = line.split()
            if len(cols) >= 6 and cols[1] == "FLOCK" and cols[5].rsplit(":", 1)[-1] == str(ino):
                holders.append(cols[4])
        raise SystemExit("state dir %s is in use by another agent (pid %s); stop it first"
                         % (path, ", ".join(holders) or "unknown"))
    return fd


def remove_stale_pcaps(state_dir):
    """Delete <session>.pcap files in the state directory: at start they can
    only be a killed predecessor's, whose sessions nobody can fetch any more.
    Returns [{"file", "bytes"}] of what was removed."""
    removed = []
    for name in sorted(os.listdir(state_dir)):
        if not PCAP_NAME_RE.match(name):
            continue
        path = os.path.join(state_dir, name)
        try:
            st = os.lstat(path)
            if not (st.st_mode & 0o170000) == 0o100000:   # regular files only, no symlinks
                continue
            os.unlink(path)
        except OSError as e:
            log.warning("could not remove stale capture %s: %s", path, e)
            continue
        removed.append({"file": name, "bytes": st.st_size})
        log.warning("removed stale capture %s (%d bytes) left by an earlier agent",
                    path, st.st_size)
    return removed


def get_ring_pages(body):
    """The optional ringbuf_pages field: None (the compiled default) or a power of two."""
    v = body.get("ringbuf_pages")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= RINGBUF_PAGES_MAX \
            or v & (v - 1):
        raise ApiError(400, "ringbuf_pages: must be a power of two from 1 to %d (or null for "
                            "the collector's default), got %s"
                       % (RINGBUF_PAGES_MAX, json.dumps(v)[:40]))
    return v


# --- BPF plumbing ----------------------------------------------------------------

class _LinkCreateOpts(ct.Structure):
    # struct bpf_link_create_opts prefix: size_t sz; __u32 flags; + padding.
    _fields_ = [("sz", ct.c_size_t), ("flags", ct.c_uint32), ("pad", ct.c_uint32)]


class _LinkCreateAttr(ct.Structure):
    # union bpf_attr, link_create member: prog_fd, target_ifindex, attach_type, flags.
    _fields_ = [("prog_fd", ct.c_uint32), ("target_ifindex", ct.c_uint32),
                ("attach_type", ct.c_uint32), ("flags", ct.c_uint32),
                ("pad", ct.c_uint64 * 4)]


def _sys_bpf_nr():
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise ApiError(500, "bpf syscall number unknown for machine %s" % platform.machine())
    return nr


_libbpf = None


def _load_libbpf():
    global _libbpf
    if _libbpf is None:
        try:
            lib = ct.CDLL("libbpf.so.1", use_errno=True)
            lib.bpf_link_create.argtypes = [ct.c_int, ct.c_int, ct.c_int,
                                            ct.POINTER(_LinkCreateOpts)]
            lib.bpf_link_create.restype = ct.c_int
            _libbpf = lib
        except OSError:
            _libbpf = False
    return _libbpf


def xdp_link_create(prog_fd, ifindex, mode):
    """Attach an XDP program through a bpf_link; returns the link fd.

    The link goes away when its last fd is closed, including when the agent is
    killed, so nothing stays attached behind a dead agent."""
    flags = XDP_FLAGS[mode]
    lib = _load_libbpf()
    if lib:
        opts = _LinkCreateOpts(sz=ct.sizeof(_LinkCreateOpts), flags=flags, pad=0)
        fd = lib.bpf_link_create(prog_fd, ifindex, BPF_XDP_ATTACH_TYPE, ct.byref(opts))
        err = -fd if fd < 0 else 0
    else:   # raw syscall when libbpf.so.1 is not installed
        attr = _LinkCreateAttr(prog_fd=prog_fd, target_ifindex=ifindex,
                               attach_type=BPF_XDP_ATTACH_TYPE, flags=flags)
        fd = _libc.syscall(ct.c_long(_sys_bpf_nr()), ct.c_int(BPF_LINK_CREATE_CMD),
                           ct.byref(attr), ct.c_uint(ct.sizeof(attr)))
        err = ct.get_errno() if fd < 0 else 0
    if fd < 0:
        err = err or ct.get_errno() or errno.EINVAL
        raise OSError(err, "bpf_link_create(XDP, %s): %s" % (mode, os.strerror(err)))
    return fd


def enable_run_time_stats():
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): stats are on while the fd is held."""
    attr = (ct.c_uint32 * 2)(BPF_STATS_RUN_TIME, 0)
    fd = _libc.syscall(ct.c_long(_sys_bpf_nr()), ct.c_int(BPF_ENABLE_STATS_CMD),
                       ct.byref(attr), ct.c_uint(ct.sizeof(attr)))
    if fd < 0:
        err = ct.get_errno()
        raise OSError(err, "BPF_ENABLE_STATS: %s" % os.strerror(err))
    return int(fd)


class Compiled:
    """One BCC compile + verifier load of the collector (not attached)."""

    def __init__(self, bpf, fn, info, cflags, compile_s, source_sha256, header_sha256,
                 insn_count, ring_bytes):
        self.bpf = bpf
        self.ring_bytes = ring_bytes      # max_entries of the ring map, as the kernel has it
        self.ring_pages = ring_bytes // PAGE_SIZE if ring_bytes else None
        self.fn = fn
        self.info = info
        self.cflags = cflags
        self.compile_s = compile_s
        self.source_sha256 = source_sha256
        self.header_sha256 = header_sha256
        self.insn_count = insn_count

    @property
    def prog_fd(self):
        return self.fn.fd

    def close(self):
        try:
            self.bpf.cleanup()
        except Exception as e:   # cleanup must not hide the caller's error
            log.warning("BPF cleanup failed: %s", e)
        # BCC registers an atexit cleanup per BPF object, which would keep every
        # session's object alive until exit.
        atexit.unregister(self.bpf.cleanup)


# --- process spawning --------------------------------------------------------------

class Spawner:
    """Starts child processes from one long-lived thread.

    Children get PR_SET_PDEATHSIG(SIGTERM) so a SIGKILLed agent does not leave
    tcpdump running.  The parent-death signal fires when the *thread* that
    forked the child exits, so forking from short-lived HTTP request threads
    would kill tcpdump at the end of the arm request; hence this thread."""

    def __init__(self):
        self._q = queue.Queue()
        self._parent = os.getpid()
        self._thread = threading.Thread(target=self._run, name="spawner", daemon=True)
        self._thread.start()

    def _preexec(self):
        # Only async-signal-safe work here: prctl and getppid.  If the agent
        # died between fork and prctl, the signal will never come: leave now.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != self._parent:
            os._exit(1)

    def _run(self):
        while True:
            argv, kwargs, box, done = self._q.get()
            try:
                box["proc"] = subprocess.Popen(argv, preexec_fn=self._preexec, **kwargs)
            except BaseException as e:
                box["error"] = e
            done.set()

    def popen(self, argv, **kwargs):
        box, done = {}, threading.Event()
        self._q.put((argv, kwargs, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["proc"]


class Tcpdump:
    """tcpdump writing a pcap; started from an argv list, stopped with SIGINT."""

    STAT_RE = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)")

    def __init__(self, spawner, ifname, snaplen, port, path):
        # -Z root: Debian's tcpdump otherwise switches to user "tcpdump" before
        # opening the file (which it cannot write in the root-only state dir),
        # and that credential change would also clear the parent-death signal.
        self.argv = ["tcpdump", "-p", "-n", "-i", ifname, "-s", str(snaplen), "-B", "8192",
                     "-Z", "root", "-w", path, "udp dst port %d" % port]
        self.path = path
        self.lines = []
        self.listening = threading.Event()
        self.listening_ns = 0
        self.proc = spawner.popen(self.argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_stderr, name="tcpdump-stderr",
                                        daemon=True)
        self._reader.start()
        self.result = None

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if "listening on" in line:
                self.listening_ns = time.monotonic_ns()
                self.listening.set()
        self.proc.stderr.close()

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listening.wait(0.05):
                return True
            if self.proc.poll() is not None:
                self._reader.join(1)
                return False
        return False

    def stop(self, last_packet_ns=0):
        """SIGINT tcpdump once TCPDUMP_SETTLE_S have passed since the last
        packet (monotonic ns) it could still hold in an unretired ring block."""
        if self.result is not None:
            return self.result
        settle = 0.0
        if self.proc.poll() is None:
            settle = max(0.0, (max(last_packet_ns, self.listening_ns) - time.monotonic_ns()) / 1e9
                         + TCPDUMP_SETTLE_S)
            time.sleep(settle)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(TCPDUMP_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("tcpdump did not stop on SIGINT; killing it")
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        stats = {}
        for line in self.lines:
            m = self.STAT_RE.match(line.strip())
            if m:
                stats[m.group(2).replace(" ", "_")] = int(m.group(1))
        try:
            pcap_bytes, pcap_sha = os.path.getsize(self.path), sha256_file(self.path)
        except OSError:
            pcap_bytes, pcap_sha = None, None
        self.result = {
            "captured": stats.get("captured"),
            "received_by_filter": stats.get("received_by_filter"),
            "dropped_by_kernel": stats.get("dropped_by_kernel"),
            "pcap_bytes": pcap_bytes,
            "pcap_sha256": pcap_sha,
            "exit_code": self.proc.returncode,
            "settle_wait_s": round(settle, 3),
        }
        return self.result

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- a session -------------------------------------------------------------------------

class Features:
    """Accumulates feature records; touched only by the consumer thread until
    it has been joined."""

    def __init__(self, run_id, expected_packets):
        self.run_id = run_id
        self.received = 0
        self.for_run = 0
        self.other_run = 0
        self.unique = 0
        self.duplicates = 0
        self.first_arrival = None
        self.last_arrival = None
        self.last_any_arrival = 0
        self.latency = array("q")
        self.latency_out_of_range = 0
        self.per_cpu = {}
        self.callback_errors = 0
        self.bitmap = bytearray(min(BITMAP_MAX_BYTES, expected_packets // 8 + 1))
        self.overflow = set()

    def add(self, ev):
        self.received += 1
        self.last_any_arrival = ev.arrival_ns
        if ev.run_id != self.run_id:
            self.other_run += 1
            return
        self.for_run += 1
        seq = ev.seq
        byte = seq >> 3
        if byte < BITMAP_MAX_BYTES:
            bm = self.bitmap
            if byte >= len(bm):
                bm.extend(bytes(min(BITMAP_MAX_BYTES, max(2 * len(bm), byte + 1)) - len(bm)))
            bit = 1 << (seq & 7)
            if bm[byte] & bit:
                self.duplicates += 1
            else:
                bm[byte] |= bit
                self.unique += 1
        elif seq in self.overflow:
            self.duplicates += 1
        else:
            self.overflow.add(seq)
            self.unique += 1
        arrival = ev.arrival_ns
        if self.first_arrival is None or arrival < self.first_arrival:
            self.first_arrival = arrival
        if self.last_arrival is None or arrival > self.last_arrival:
            self.last_arrival = arrival
        try:
            self.latency.append(arrival - ev.send_ns)
        except OverflowError:
            self.latency_out_of_range += 1
        cpu = ev.cpu
        self.per_cpu[cpu] = self.per_cpu.get(cpu, 0) + 1

    def summary(self):
        lat = sorted(self.latency)
        n = len(lat)
        return {
            "received": self.received,
            "for_run": self.for_run,
            "other_run": self.other_run,
            "unique_seqs": self.unique,
            "duplicates": self.duplicates,
            "first_arrival_ns": self.first_arrival,
            "last_arrival_ns": self.last_arrival,
            "per_cpu": {str(k): v for k, v in sorted(self.per_cpu.items())},
            "callback_errors": self.callback_errors,
            "latency_ns": {
                "count": n,
                "method": "arrival_ns - send_ns per record of this run (duplicates "
                          "included); percentiles by nearest rank",
                "p50": nearest_rank(lat, 50),
                "p99": nearest_rank(lat, 99),
                "mean": (sum(lat) / n) if n else None,
                "min": lat[0] if n else None,
                "max": lat[-1] if n else None,
                "out_of_range": self.latency_out_of_range,
            },
        }


class Session:
    def __init__(self, sid, req, ifindex):
        self.id = sid
        self.trial = req["trial"]
        self.run_id = req["run_id"]
        self.interface = req["interface"]
        self.ifindex = ifindex
        self.xdp_mode_requested = req["xdp_mode"]
        self.port = req["port"]
        self.expected_tag = req.get("expected_tag")
        self.snaplen = req["snaplen"]
        self.deadline_s = req["deadline_s"]
        self.expected_packets = req["expected_packets"]
        self.lock = threading.RLock()
        self.state = "arming"
        self.compiled = None
        self.link_fd = None
        self.link_id = None
        self.stats_fd = None
        self.sink = None
        self.tcpdump = None
        self.pcap_path = None
        self.features = Features(self.run_id, self.expected_packets)
        self.stop_consume = threading.Event()
        self.consumer = None
        self.drained = None
        self.consumer_error = None
        self.stop_sampling = threading.Event()
        self.sampler = None
        self.samples_t = array("q")      # CLOCK_MONOTONIC ns
        self.samples_soft = array("q")   # softirq jiffies, all CPUs
        self.samples_total = array("q")  # all jiffies, all CPUs
        self.disarmed = threading.Event()
        self.watchdog = None
        self.watchdog_fired = False
        self.arm_reply = None
        self.capture_result = None
        self.result = None
        self.disarm_error = None
        self.base = {}
        self.events = None
        self.record_ptr = None
        self.record_size = 0
        self.sink_inode = None
        self.armed_ns = None
        self.deadline_ns = None
        self.ringbuf_pages_requested = req.get("ringbuf_pages")
        self.agent_instance = None

    # consumer thread: polls the ring buffer; the program submits with
    # BPF_RB_NO_WAKEUP, so epoll would never wake up (ring_buffer_poll is useless).
    def consume_loop(self):
        bpf = self.compiled.bpf
        try:
            while not self.stop_consume.is_set():
                bpf.ring_buffer_consume()
                time.sleep(CONSUME_INTERVAL_S)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            empty = 0
            while empty < 2 and time.monotonic() < deadline:
                before = self.features.received
                bpf.ring_buffer_consume()
                empty = empty + 1 if self.features.received == before else 0
                if empty < 2:
                    time.sleep(CONSUME_INTERVAL_S)
            self.drained = empty >= 2
        except Exception as e:
            self.consumer_error = "%s: %s" % (type(e).__name__, e)
            log.error("session %s: ring buffer consumer failed: %s", self.id, e)

    def on_event(self, ctx, data, size):
        try:
            if size < self.record_size:
                raise ValueError("short record")
            self.features.add(ct.cast(data, self.record_ptr).contents)
        except Exception:
            self.features.callback_errors += 1
        return 0

    def sample_loop(self):
        start = time.monotonic()
        k = 0
        while True:
            try:
                soft, tot = proc_stat_cpu()
                self.samples_t.append(time.monotonic_ns())
                self.samples_soft.append(soft)
                self.samples_total.append(tot)
            except Exception as e:
                log.warning("session %s: /proc/stat sample failed: %s", self.id, e)
            if self.stop_sampling.is_set():
                return
            k += 1
            self.stop_sampling.wait(max(0.0, start + k * SOFTIRQ_INTERVAL_S - time.monotonic()))

    def softirq(self, t0, t1, window):
        """Softirq share of all CPUs' time between the last sample at or
        before t0 and the first sample at or after t1 (at least two samples)."""
        ts, soft, total = self.samples_t, self.samples_soft, self.samples_total
        n = len(ts)
        if n < 2:
            return {"cpu_pct": None, "window": window, "samples": n}
        i0 = max([i for i in range(n) if ts[i] <= t0], default=0)
        i1 = min([i for i in range(n) if ts[i] >= t1], default=n - 1)
        if i1 <= i0:
            i1 = min(i0 + 1, n - 1)
            i0 = i1 - 1
        d_soft = soft[i1] - soft[i0]
        d_tot = total[i1] - total[i0]
        return {
            "cpu_pct": round(100.0 * d_soft / d_tot, 3) if d_tot > 0 else None,
            "window": window,
            "samples": i1 - i0 + 1,
            "from_monotonic_ns": ts[i0],
            "to_monotonic_ns": ts[i1],
            "softirq_jiffies": d_soft,
            "total_jiffies": d_tot,
        }

    def summary(self):
        d = dict(self.arm_reply or {"session": self.id, "trial": self.trial})
        d["agent_instance"] = self.agent_instance
        d["state"] = self.state
        d["watchdog"] = self.watchdog_fired
        d["features_received"] = self.features.received if self.result is None \
            else self.result["features"]["received"]
        d["capture"] = self.capture_result
        d["result"] = self.result
        return d


class Agent:
    def __init__(self, args):
        self.bpf_dir = os.path.abspath(args.bpf_dir)
        self.source_path = os.path.join(self.bpf_dir, "collector.bpf.c")
        self.header_path = os.path.join(self.bpf_dir, "xdplab.h")
        self.allowed = list(dict.fromkeys(args.allow_interface))
        self.state_dir = os.path.abspath(args.state_dir)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        # Who this agent is: a controller compares it with the one it armed
        # with, to tell that the agent was restarted (and the session lost).
        self.instance = secrets.token_hex(8)
        self.pid = os.getpid()
        self.started_ns = time.monotonic_ns()
        self.state_lock_fd = lock_state_dir(self.state_dir)
        self.stale_removed = remove_stale_pcaps(self.state_dir)
        with open(args.token_file) as f:
            self.token = f.read().strip()
        if not self.token:
            raise SystemExit("token file %s is empty" % args.token_file)
        self.counters = {name: idx for name, idx in
                         parse_counter_enum(_read_text(self.header_path)).items()
                         if name != "XDPLAB_NR_COUNTERS"}
        self.feature_cls = parse_feature_struct(_read_text(self.header_path))
        import bcc   # imported late so --help works without bcc
        self.bcc = bcc
        self.bcc_version = getattr(bcc, "__version__", "unknown")
        self.lock = threading.Lock()          # guards sessions / armed / arming
        self.compile_lock = threading.Lock()  # LLVM in BCC: one compile at a time
        self.sessions = {}
        self.armed = None
        self.arming = False
        self.closing = False
        self.spawner = Spawner()

    # --- build -------------------------------------------------------------------
    def compile(self, port, ring_pages=None):
        from bcc import BPF, libbcc
        with self.compile_lock:
            with open(self.source_path, "rb") as f:
                src = f.read()
            with open(self.header_path, "rb") as f:
                hdr = f.read()
            cflags = ["-I" + self.bpf_dir, "-DXDPLAB_PORT=%d" % port]
            if ring_pages is not None:
                cflags.append("-DXDPLAB_RING_PAGES=%d" % ring_pages)
            t0 = time.monotonic()
            try:
                b = BPF(text=src, cflags=cflags)
            except Exception as e:
                raise ApiError(500, "compiling %s failed: %s" % (self.source_path, e))
            try:
                fn = b.load_func(PROG_NAME, BPF.XDP)
            except Exception as e:
                b.cleanup()
                atexit.unregister(b.cleanup)
                raise ApiError(500, "loading %s through the verifier failed: %s" % (PROG_NAME, e))
            compile_s = time.monotonic() - t0
            try:
                insn_count = libbcc.lib.bpf_function_size(b.module, PROG_NAME.encode()) // 8
            except Exception:
                insn_count = len(b.dump_func(PROG_NAME)) // 8
            info = fdinfo(fn.fd)
            try:
                ring_bytes = fdinfo(b["events"].map_fd).get("max_entries")
            except Exception as e:
                b.cleanup()
                atexit.unregister(b.cleanup)
                raise ApiError(500, "reading the ring buffer map of %s failed: %s"
                               % (PROG_NAME, e))
            return Compiled(b, fn, info, cflags, compile_s, hashlib.sha256(src).hexdigest(),
                            hashlib.sha256(hdr).hexdigest(), insn_count, ring_bytes)

    def build(self, body):
        body = require_object(body)
        check_fields(body, {"port", "ringbuf_pages"})
        port = get_int(body, "port", 1, 65535)
        c = self.compile(port, get_ring_pages(body))
        try:
            return {
                "source_sha256": c.source_sha256,
                "header_sha256": c.header_sha256,
                "prog_name": PROG_NAME,
                "prog_tag": c.info.get("prog_tag"),
                "insn_count": c.insn_count,
                "verified_insns": c.info.get("verified_insns"),
                "bcc_version": self.bcc_version,
                "kernel_release": platform.release(),
                "cflags": c.cflags,
                "compile_s": round(c.compile_s, 3),
                "ringbuf_pages": c.ring_pages,
                "ringbuf_bytes": c.ring_bytes,
            }
        finally:
            c.close()

    # --- health --------------------------------------------------------------------
    def health(self):
        with self.lock:
            s = self.armed
        return {"ok": True, "agent": AGENT, "hostname": socket.gethostname(),
                "kernel": platform.release(), "bcc_version": self.bcc_version,
                "boot_id": boot_id(), "interfaces": self.allowed,
                "agent_instance": self.instance, "pid": self.pid,
                "started_monotonic_ns": self.started_ns,
                "stale_files_removed": self.stale_removed,
                "session": s.summary() if s else None}

    # --- arm -------------------------------------------------------------------------
    def validate_arm(self, body):
        body = require_object(body)
        check_fields(body, {"trial", "run_id", "interface", "xdp_mode", "port", "expected_tag",
                            "snaplen", "deadline_s", "expected_packets", "ringbuf_pages"})
        req = {}
        trial = body.get("trial")
        if not isinstance(trial, str) or not (1 <= len(trial) <= 512) or \
                any(ord(ch) < 32 or ord(ch) == 127 for ch in trial):
            raise ApiError(400, "trial: must be a non-empty string of at most 512 "
                                "printable characters")
        req["trial"] = trial
        req["run_id"] = get_int(body, "run_id", 0, 65535)
        iface = body.get("interface")
        if not isinstance(iface, str):
            raise ApiError(400, "interface: must be a string")
        if iface not in self.allowed:
            raise ApiError(400, "interface: %r is not in the agent's --allow-interface list %s"
                           % (iface, self.allowed))
        req["interface"] = iface
        mode = body.get("xdp_mode")
        if mode not in XDP_FLAGS:
            raise ApiError(400, "xdp_mode: must be \"native\" or \"generic\"")
        req["xdp_mode"] = mode
        req["port"] = get_int(body, "port", 1, 65535)
        tag = body.get("expected_tag")
        if tag is not None and (not isinstance(tag, str) or not HEX16_RE.match(tag)):
            raise ApiError(400, "expected_tag: must be 16 lowercase hex digits or null")
        req["expected_tag"] = tag
        req["snaplen"] = get_int(body, "snaplen", SNAPLEN_MIN, SNAPLEN_MAX)
        dl = body.get("deadline_s")
        if isinstance(dl, bool) or not isinstance(dl, (int, float)) or \
                not math.isfinite(dl) or not (0 < dl <= DEADLINE_MAX_S):
            raise ApiError(400, "deadline_s: must be a number > 0 and <= %d" % DEADLINE_MAX_S)
        req["deadline_s"] = float(dl)
        req["expected_packets"] = get_int(body, "expected_packets", 0, EXPECTED_PACKETS_MAX)
        req["ringbuf_pages"] = get_ring_pages(body)
        return req

    def arm(self, body):
        req = self.validate_arm(body)
        with self.lock:
            if self.closing:
                raise ApiError(409, "the agent is shutting down")
            if self.armed is not None:
                raise ApiError(409, "session %s (trial %s) is armed; disarm it first"
                               % (self.armed.id, self.armed.trial))
            if self.arming:
                raise ApiError(409, "another session is being armed")
            self.arming = True
        try:
            try:
                ifindex = socket.if_nametoindex(req["interface"])
            except OSError:
                raise ApiError(400, "interface: %s does not exist on the DUT" % req["interface"])
            sid = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)
            s = Session(sid, req, ifindex)
            s.agent_instance = self.instance
            try:
                self._arm(s)
            except BaseException:
                self._teardown(s)
                self._remove_pcap(s)   # the session never existed for a client
                raise
            with self.lock:
                self.sessions[sid] = s
                self.armed = s
                self._forget_old_sessions()
            s.watchdog = threading.Thread(target=self._watchdog, args=(s,),
                                          name="watchdog-" + sid, daemon=True)
            s.watchdog.start()
            log.info("session %s armed: trial=%s run_id=%d %s port=%d mode=%s prog_id=%s "
                     "link_id=%s", sid, s.trial, s.run_id, s.interface, s.port,
                     s.arm_reply["xdp_mode_in_effect"], s.arm_reply["prog_id"], s.link_id)
            if self.closing:
                self.disarm(s)
            return s.arm_reply
        finally:
            with self.lock:
                self.arming = False

    def _arm(self, s):
        foreign = link_xdp_info(s.interface)
        if foreign:
            desc = ", ".join("id %s name %s tag %s" % (p["id"], p["name"], p["tag"])
                             for p in foreign["progs"]) or "unknown program"
            raise ApiError(409, "interface %s already has an XDP program attached (%s mode: %s); "
                                "left in place" % (s.interface, foreign["mode"], desc))
        s.compiled = c = self.compile(s.port, s.ringbuf_pages_requested)
        tag = c.info.get("prog_tag")
        if s.expected_tag is not None and tag != s.expected_tag:
            raise ApiError(422, "prog_tag %s of the compiled program differs from expected_tag %s"
                           % (tag, s.expected_tag))
        s.events = c.bpf["events"]
        s.record_ptr = ct.POINTER(self.feature_cls)
        s.record_size = ct.sizeof(self.feature_cls)
        s.events.open_ring_buffer(s.on_event)
        s.sampler = threading.Thread(target=s.sample_loop, name="softirq-" + s.id, daemon=True)
        s.sampler.start()
        # The sink keeps the stack from answering our datagrams with ICMP port
        # unreachable; it is never read, so its tiny buffer overflows quietly.
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sink = sink
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SINK_RCVBUF_BYTES)
        try:
            sink.bind(("0.0.0.0", s.port))
        except OSError as e:
            raise ApiError(409, "port: UDP port %d is already bound on the DUT (%s)"
                           % (s.port, e.strerror))
        s.sink_inode = os.fstat(sink.fileno()).st_ino
        try:
            s.stats_fd = enable_run_time_stats()
        except OSError as e:
            raise ApiError(500, "enabling BPF run-time stats failed: %s" % e)
        s.consumer = threading.Thread(target=s.consume_loop, name="ringbuf-" + s.id, daemon=True)
        s.consumer.start()
        try:
            s.link_fd = xdp_link_create(c.prog_fd, s.ifindex, s.xdp_mode_requested)
        except OSError as e:
            status = 409 if e.errno in (errno.EBUSY, errno.EEXIST) else 500
            raise ApiError(status, "attaching %s to %s in %s mode failed: %s"
                           % (PROG_NAME, s.interface, s.xdp_mode_requested, e.strerror))
        s.link_id = fdinfo(s.link_fd).get("link_id")
        now = link_xdp_info(s.interface)
        pinfo = fdinfo(c.prog_fd)
        if not now or pinfo.get("prog_id") not in [p["id"] for p in now["progs"]]:
            raise ApiError(500, "after attaching, %s does not show prog id %s (shows %s)"
                           % (s.interface, pinfo.get("prog_id"), now))
        # Counter baselines right after attach; the trial's numbers are differences.
        s.base = {"counters": self.read_counters(c), "nic": nic_stats(s.interface),
                  "run_time_ns": pinfo.get("run_time_ns", 0), "run_cnt": pinfo.get("run_cnt", 0),
                  "snmp": udp_snmp(), "sink_drops": udp_socket_drops(s.sink_inode) or 0}
        armed_ns = time.monotonic_ns()
        s.pcap_path = os.path.join(self.state_dir, s.id + ".pcap")
        try:
            s.tcpdump = Tcpdump(self.spawner, s.interface, s.snaplen, s.port, s.pcap_path)
        except OSError as e:
            raise ApiError(500, "starting tcpdump failed: %s" % e)
        if not s.tcpdump.wait_listening(TCPDUMP_LISTEN_TIMEOUT_S):
            raise ApiError(500, "tcpdump did not report listening within %.0f s: %s"
                           % (TCPDUMP_LISTEN_TIMEOUT_S, " | ".join(s.tcpdump.lines[-5:])))
        s.armed_ns = armed_ns
        s.deadline_ns = armed_ns + int(s.deadline_s * 1e9)
        s.state = "armed"
        s.arm_reply = {
            "session": s.id, "trial": s.trial, "run_id": s.run_id, "interface": s.interface,
            "xdp_mode_requested": s.xdp_mode_requested,
            "xdp_mode_in_effect": now["mode"],
            "prog_id": pinfo.get("prog_id"), "prog_tag": tag, "link_id": s.link_id,
            "insn_count": c.insn_count, "verified_insns": pinfo.get("verified_insns"),
            "port": s.port, "snaplen": s.snaplen, "expected_packets": s.expected_packets,
            "ringbuf_pages": c.ring_pages, "ringbuf_bytes": c.ring_bytes,
            "ringbuf_pages_requested": s.ringbuf_pages_requested,
            "armed_monotonic_ns": armed_ns, "deadline_monotonic_ns": s.deadline_ns,
            "agent_instance": s.agent_instance,
        }

    def read_counters(self, c):
        tbl = c.bpf["counters"]
        return {name: int(tbl.sum(idx).value) for name, idx in self.counters.items()}

    def _forget_old_sessions(self):
        done = [sid for sid, s in self.sessions.items() if s.state == "disarmed"]
        for sid in done[:max(0, len(done) - MAX_KEPT_SESSIONS)]:
            self._remove_pcap(self.sessions.pop(sid))
        for sid in done[:max(0, len(done) - MAX_KEPT_CAPTURES)]:
            if sid in self.sessions:
                self._remove_pcap(self.sessions[sid])

    def _remove_pcap(self, s):
        """Delete a session's capture file (never raises)."""
        path = s.pcap_path
        if not path:
            return
        s.pcap_path = None
        try:
            os.unlink(path)
            log.info("session %s: removed its capture %s", s.id, path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error("session %s: could not remove its capture %s: %s", s.id, path, e)

    def _watchdog(self, s):
        while not s.disarmed.is_set():
            left = (s.deadline_ns - time.monotonic_ns()) / 1e9
            if left <= 0:
                log.warning("session %s: deadline of %.1f s passed; disarming (watchdog)",
                            s.id, s.deadline_s)
                try:
                    self.disarm(s, watchdog=True)
                except Exception as e:
                    log.error("session %s: watchdog disarm failed: %s", s.id, e)
                return
            s.disarmed.wait(min(left, 1.0))

    # --- session operations --------------------------------------------------------------
    def get_session(self, sid):
        with self.lock:
            s = self.sessions.get(sid)
        if s is None:
            raise ApiError(404, "no session %s on this agent" % sid)
        return s

    def capture_stop(self, s):
        with s.lock:
            if s.capture_result is None:
                s.capture_result = s.tcpdump.stop(s.features.last_any_arrival)
                if s.state == "armed":
                    s.state = "capture_stopped"
                log.info("session %s: capture stopped: %s", s.id, s.capture_result)
            return s.capture_result

    def disarm(self, s, watchdog=False):
        with s.lock:
            if s.result is not None:
                return s.result
            if s.state == "disarmed":
                raise ApiError(500, "session %s: disarm failed earlier: %s"
                               % (s.id, s.disarm_error))
            try:
                s.watchdog_fired = watchdog
                if s.capture_result is None:
                    s.capture_result = s.tcpdump.stop(s.features.last_any_arrival)
                s.stop_consume.set()
                s.consumer.join(DRAIN_TIMEOUT_S + 5)
                c = s.compiled
                counters = self.read_counters(c)
                nic = nic_stats(s.interface)
                pinfo = fdinfo(c.prog_fd)
                snmp = udp_snmp()
                sink_drops = udp_socket_drops(s.sink_inode)
                disarmed_ns = time.monotonic_ns()
                s.result = self._result(s, counters, nic, pinfo, snmp, sink_drops, disarmed_ns)
            except BaseException as e:
                s.disarm_error = "%s: %s" % (type(e).__name__, e)
                log.error("session %s: disarm failed: %s", s.id, s.disarm_error)
                raise
            finally:
                self._teardown(s)
                with self.lock:
                    if self.armed is s:
                        self.armed = None
            log.info("session %s disarmed%s: matched=%s features.for_run=%s unique=%s nic.rx=%s",
                     s.id, " by the watchdog" if watchdog else "", s.result["xdp"]["matched"],
                     s.result["features"]["for_run"], s.result["features"]["unique_seqs"],
                     s.result["nic"]["rx_packets"])
            return s.result

    def _result(self, s, counters, nic, pinfo, snmp, sink_drops, disarmed_ns):
        base = s.base
        xdp = {k[len("XDPLAB_"):].lower(): counters[k] - base["counters"][k] for k in counters}
        run_time = pinfo.get("run_time_ns", 0) - base["run_time_ns"]
        run_cnt = pinfo.get("run_cnt", 0) - base["run_cnt"]
        xdp.update({"run_time_ns": run_time, "run_cnt": run_cnt,
                    "ns_per_pkt": round(run_time / run_cnt, 1) if run_cnt else None})
        queued = 0
        try:   # datagrams still queued on the sink (it was never read)
            while True:
                s.sink.recv(1, socket.MSG_DONTWAIT)
                queued += 1
        except OSError:
            pass
        feats = s.features.summary()
        feats["drained"] = s.drained
        feats["consumer_error"] = s.consumer_error
        s.sampling_stop_ns = time.monotonic_ns()
        s.stop_sampling.set()
        s.sampler.join(2)
        if s.features.first_arrival is not None:
            softirq = s.softirq(s.features.first_arrival, s.features.last_arrival,
                                "first to last matched arrival")
        else:
            softirq = s.softirq(s.armed_ns, disarmed_ns, "armed window (no matched arrivals)")
        cap = dict(s.capture_result or {})
        return {
            "session": s.id, "trial": s.trial, "run_id": s.run_id, "watchdog": s.watchdog_fired,
            "interface": s.interface, "port": s.port,
            "xdp_mode_in_effect": s.arm_reply["xdp_mode_in_effect"],
            "prog_id": s.arm_reply["prog_id"], "prog_tag": s.arm_reply["prog_tag"],
            "link_id": s.link_id, "agent_instance": s.agent_instance,
            "ringbuf_pages": s.arm_reply["ringbuf_pages"],
            "window": {"armed_monotonic_ns": s.armed_ns, "disarmed_monotonic_ns": disarmed_ns},
            "nic": {k: nic[k] - base["nic"][k] for k in nic},
            "xdp": xdp,
            "features": feats,
            "tcpdump": cap,
            "udp_sink": {
                "received_by_socket_or_dropped":
                    queued + ((sink_drops or 0) - base["sink_drops"]),
                "queued": queued,
                "socket_drops": (sink_drops or 0) - base["sink_drops"],
                "rcvbuf_errors_delta": snmp.get("RcvbufErrors", 0)
                - base["snmp"].get("RcvbufErrors", 0),
            },
            "softirq": softirq,
            "boot_id": boot_id(),
        }

    def _teardown(self, s):
        """Release everything a (possibly half-armed) session holds; never raises."""
        steps = []
        if s.tcpdump is not None:
            steps.append(("tcpdump", lambda: s.tcpdump.kill() if s.capture_result is None
                          else None))
        steps.append(("consumer", lambda: (s.stop_consume.set(),
                                           s.consumer and s.consumer.join(DRAIN_TIMEOUT_S + 5))))
        if s.link_fd is not None:
            steps.append(("link", lambda: os.close(s.link_fd)))        # detaches XDP
        if s.stats_fd is not None:
            steps.append(("stats", lambda: os.close(s.stats_fd)))
        if s.sink is not None:
            steps.append(("sink", s.sink.close))
        steps.append(("sampler", lambda: (s.stop_sampling.set(),
                                          s.sampler and s.sampler.join(2))))
        if s.compiled is not None:
            steps.append(("bpf", s.compiled.close))
        for name, fn in steps:
            try:
                fn()
            except Exception as e:
                log.error("session %s: teardown of %s failed: %s", s.id, name, e)
        s.link_fd = s.stats_fd = None
        s.sink = None
        s.compiled = None
        s.features.latency = array("q")
        s.features.bitmap = bytearray()
        s.features.overflow = set()
        s.state = "disarmed"
        s.disarmed.set()

    def reset(self):
        with self.lock:
            armed = [s for s in self.sessions.values() if s.state in ("armed", "capture_stopped")]
        out = []
        for s in armed:
            self.disarm(s)
            out.append(s.id)
        return {"disarmed": out}

    def shutdown(self):
        """Disarm, then delete every capture: after exit nobody can fetch them."""
        with self.lock:
            self.closing = True
        deadline = time.monotonic() + SHUTDOWN_ARMING_WAIT_S
        while time.monotonic() < deadline:   # an arm in flight disarms itself (closing)
            with self.lock:
                if not self.arming:
                    break
            time.sleep(0.05)
        try:
            r = self.reset()
            if r["disarmed"]:
                log.info("disarmed on shutdown: %s", r["disarmed"])
        except Exception as e:
            log.error("disarm on shutdown failed: %s", e)
        with self.lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            self._remove_pcap(s)


# --- input validation helpers --------------------------------------------------------

def require_object(body):
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object")
    return body


def check_fields(body, allowed):
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, "%s: unknown field" % unknown[0])


def get_int(body, name, lo, hi):
    v = body.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(400, "%s: must be an integer from %d to %d" % (name, lo, hi))
    if not lo <= v <= hi:
        raise ApiError(400, "%s: %d is out of range %d..%d" % (name, v, lo, hi))
    return v


# --- HTTP ---------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = AGENT

    def log_message(self, fmt, *args):
        log.info("%s %s", self.client_address[0], fmt % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _send_json(self, status, obj):
        data = (json.dumps(obj, indent=1) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self):
        """The raw request body (read before the token check, so the
        connection stays usable for keep-alive)."""
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Content-Length: not an integer")
        if n < 0 or n > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(400, "Content-Length: must be 0..%d" % MAX_BODY_BYTES)
        return self.rfile.read(n)

    @staticmethod
    def _parse_json(raw):
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "body: not valid JSON (%s)" % e)

    def _dispatch(self, method):
        agent = self.server.agent
        try:
            raw = self._read_body()
            token = self.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(token.encode(), agent.token.encode()):
                raise ApiError(401, "%s header: missing or wrong token" % TOKEN_HEADER)
            body = self._parse_json(raw) if method in ("POST", "PUT") else None
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            parts = path.strip("/").split("/")
            route = None
            if path == "/health":
                route = {"GET": lambda: (200, agent.health())}
            elif path == "/build":
                route = {"POST": lambda: (200, agent.build(body))}
            elif path == "/sessions":
                route = {"POST": lambda: (201, agent.arm(body))}
            elif path == "/reset":
                route = {"POST": lambda: (200, agent.reset())}
            elif len(parts) >= 2 and parts[0] == "sessions":
                sid, rest = parts[1], "/".join(parts[2:])
                if not SESSION_ID_RE.match(sid):
                    raise ApiError(404, "no session %r on this agent" % sid[:80])
                if rest == "":
                    route = {"GET": lambda: (200, agent.get_session(sid).summary())}
                elif rest == "capture/stop":
                    route = {"POST": lambda: (200, agent.capture_stop(agent.get_session(sid)))}
                elif rest == "capture.pcap":
                    route = {"GET": lambda: self._send_pcap(agent.get_session(sid))}
                elif rest == "disarm":
                    route = {"POST": lambda: (200, agent.disarm(agent.get_session(sid)))}
            if route is None:
                raise ApiError(404, "no such endpoint: %s" % path[:200])
            if method not in route:
                raise ApiError(405, "method %s not allowed on %s" % (method, path[:200]))
            out = route[method]()
            if out is not None:
                self._send_json(*out)
        except ApiError as e:
            self._send_json(e.status, {"error": e.message})
        except Exception as e:
            log.error("%s %s failed:\n%s", method, self.path, traceback.format_exc())
            self._send_json(500, {"error": "%s %s failed: %s: %s"
                                  % (method, self.path[:200], type(e).__name__, e)})

    def _send_pcap(self, s):
        with s.lock:
            if s.capture_result is None:
                raise ApiError(409, "session %s: capture is still running; stop it first" % s.id)
            path = s.pcap_path
        if path is None:
            raise ApiError(410, "session %s: its capture was removed (the agent keeps the captures "
                                "of the last %d finished sessions)" % (s.id, MAX_KEPT_CAPTURES))
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ApiError(500, "session %s: cannot open capture %s: %s" % (s.id, path, e.strerror))
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.tcpdump.pcap")
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Disposition", "attachment; filename=%s.pcap" % s.id)
            self.end_headers()
            try:
                for chunk in iter(lambda: f.read(1 << 16), b""):
                    self.wfile.write(chunk)
            except OSError as e:   # headers are out: no JSON error possible any more
                log.warning("session %s: pcap download aborted: %s", s.id, e)
                self.close_connection = True
        return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def parse_listen(value):
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % value)
    return host.strip("[]"), int(port)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="xdplab DUT agent: arms the XDP collector over a token-protected REST API.",
        epilog="example: %(prog)s --listen 10.201.2.2:7717 --token-file /run/xdplab/agent.token "
               "--bpf-dir /work/main/bpf --allow-interface xl-dut0 --state-dir /run/xdplab/agent")
    p.add_argument("--listen", type=parse_listen, required=True, help="HOST:PORT to serve on")
    p.add_argument("--token-file", required=True, help="file holding the shared token")
    p.add_argument("--bpf-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "..", "..", "bpf"),
                   help="directory with collector.bpf.c and xdplab.h")
    p.add_argument("--allow-interface", action="append", required=True,
                   help="interface the collector may attach to (repeatable)")
    p.add_argument("--state-dir", required=True, help="directory for pcap files")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")

    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("got %s; shutting down", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    agent = Agent(args)
    server = Server(args.listen, Handler)
    server.agent = agent
    log.info("%s listening on %s:%d (instance %s, pid %d, bcc %s, interfaces %s, bpf dir %s, "
             "state dir %s)", AGENT, args.listen[0], args.listen[1], agent.instance, agent.pid,
             agent.bcc_version, agent.allowed, agent.bpf_dir, agent.state_dir)
    t = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    t.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        agent.shutdown()
        server.server_close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
