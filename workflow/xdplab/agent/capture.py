"""tcpdump beside the collector: one per interface, spawned from one
long-lived thread, stopped as soon as its file holds what XDP matched.

Readiness instead of a fixed settle: tcpdump runs with --immediate-mode (libpcap
then hands over every packet at once instead of in 1000 ms-timed TPACKET_V3
blocks, which SIGINT does not drain) and -U (each packet is written to the
file when it is read).  capture/stop counts the records in the file and sends
SIGINT once they reach the number of packets XDP matched on the interface,
or the file stopped growing for STOP_QUIET_S, within STOP_BOUND_S.  The old
fixed 1.25 s wait is gone.
"""

import collections
import hashlib
import logging
import os
import queue
import re
import signal
import struct
import subprocess
import threading
import time
import ctypes as ct


log = logging.getLogger("xdplab-agent")

PR_SET_PDEATHSIG = 1
LISTEN_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
STOP_BOUND_S = 2.0          # longest wait for the file to hold what XDP matched
STOP_QUIET_S = 0.25         # ... or for it to stop growing (collector "off": no count)
STOP_POLL_S = 0.005
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
               b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}

_libc = ct.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ct.c_int, ct.c_ulong, ct.c_ulong, ct.c_ulong, ct.c_ulong]


def capture_filter(port, magic, first_run_id, run_ids):
    """The BPF filter expression: IPv4/UDP to the port, with the payload header's
    magic and a run id of the session (the payload header starts at udp[8])."""
    last = first_run_id + run_ids - 1
    return ("ip and udp dst port %d and udp[8:4] = 0x%08x and udp[24:2] >= %d and "
            "udp[24:2] <= %d" % (port, magic, first_run_id, last))


class Spawner:
    """Starts child processes from one long-lived thread.

    Children get PR_SET_PDEATHSIG(SIGTERM) so a SIGKILLed agent does not leave
    tcpdump running.  The parent-death signal fires when the *thread* that
    forked the child exits, so forking from short-lived HTTP request threads
    would kill tcpdump at the end of the arm request; hence this thread."""

    def __init__(self):
        self._q = queue.Queue()
        self._parent = os.getpid()
        threading.Thread(target=self._run, name="spawner", daemon=True).start()

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


class PcapCounter:
    """Counts the records of a pcap file as it grows (reads record headers only)."""

    def __init__(self, path):
        self.path = path
        self.offset = 24
        self.count = 0
        self.endian = None

    def update(self):
        try:
            with open(self.path, "rb") as f:
                if self.endian is None:
                    head = f.read(24)
                    if len(head) < 24:
                        return self.count
                    self.endian = PCAP_MAGICS.get(head[:4], "<")
                size = os.fstat(f.fileno()).st_size
                while self.offset + 16 <= size:
                    f.seek(self.offset + 8)
                    incl = struct.unpack(self.endian + "I", f.read(4))[0]
                    if self.offset + 16 + incl > size:
                        break
                    self.offset += 16 + incl
                    self.count += 1
        except OSError:
            pass
        return self.count


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Tcpdump:
    """tcpdump writing a pcap; started from an argv list, stopped with SIGINT."""

    STAT_RE = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)")

    def __init__(self, spawner, ifname, snaplen, bpf_filter, path):
        # -Z root: Debian's tcpdump otherwise switches to user "tcpdump" before
        # opening the file (which it cannot write in the root-only state dir),
        # and that credential change would also clear the parent-death signal.
        self.argv = ["tcpdump", "-p", "-n", "--immediate-mode", "-U", "-i", ifname,
                     "-s", str(snaplen), "-B", "8192", "-Z", "root", "-w", path, bpf_filter]
        self.path = path
        self.lines = collections.deque(maxlen=100)   # bounded; the statistics come last
        self.listening = threading.Event()
        self.counter = PcapCounter(path)
        self.result = None
        self.proc = spawner.popen(self.argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_stderr, name="tcpdump-stderr",
                                        daemon=True)
        self._reader.start()

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if "listening on" in line:
                self.listening.set()
        self.proc.stderr.close()

    def wait_listening(self, timeout=LISTEN_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listening.wait(0.02):
                return True
            if self.proc.poll() is not None:
                self._reader.join(1)
                return False
        return False

    def wait_ready(self, expected):
        """Wait until the file holds `expected` packets (None: until it stops
        growing), within STOP_BOUND_S.  Returns (records, seconds waited)."""
        t0 = time.monotonic()
        last_n, last_change = self.counter.update(), t0
        while self.proc.poll() is None:
            now = time.monotonic()
            n = self.counter.update()
            if n != last_n:
                last_n, last_change = n, now
            if expected is not None and n >= expected:
                break
            if now - last_change >= STOP_QUIET_S or now - t0 >= STOP_BOUND_S:
                break
            time.sleep(STOP_POLL_S)
        return last_n, time.monotonic() - t0

    def stop(self, expected=None):
        if self.result is not None:
            return self.result
        records, waited = self.wait_ready(expected)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
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
            "ready_wait_s": round(waited, 3),
            "ready_expected": expected,
        }
        return self.result

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(2)
