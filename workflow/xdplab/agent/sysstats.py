"""What the system says: NIC counters, /proc, interface facts, softirq load."""

import json
import logging
import os
import socket
import subprocess
import threading
import time
from array import array

log = logging.getLogger("xdplab-agent")

# `ip -d link` "xdp.mode": XDP_ATTACHED_DRV=1, SKB=2, HW=3, MULTI=4
XDP_ATTACHED = {1: "native", 2: "generic", 3: "offload", 4: "multi"}
SOFTIRQ_INTERVAL_S = 0.1
SOFTIRQ_MAX_SAMPLES = 4096     # then every other sample is dropped and the interval doubles


def read_text(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        if default is not None:
            return default
        raise


def boot_id():
    return read_text("/proc/sys/kernel/random/boot_id", "").strip()


def run_argv(argv, timeout=10):
    """Run a command from an argv list (never through a shell)."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


def nic_stats(ifname):
    """Every /sys/class/net/<if>/statistics/rx_* counter."""
    base = "/sys/class/net/%s/statistics/" % ifname
    out = {}
    for name in sorted(os.listdir(base)):
        if name.startswith("rx_"):
            try:
                out[name] = int(read_text(base + name).strip())
            except (OSError, ValueError):
                pass
    return out


def delta(before, after):
    return {k: after[k] - before[k] for k in after if k in before}


def _ip_json(*argv):
    res = run_argv(["ip", "-j", "-d"] + list(argv))
    if res.returncode != 0:
        raise OSError("ip %s failed: %s" % (" ".join(argv), res.stderr.strip()))
    return json.loads(res.stdout or "[]")


def xdp_of(link):
    """{"mode", "progs": [{"id","name","tag"}]} from one `ip -j -d link` entry, or None."""
    xdp = link.get("xdp")
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


def link_xdp_info(ifname):
    info = _ip_json("link", "show", "dev", ifname)
    return xdp_of(info[0]) if info else None


def interface_facts(ifname):
    """What /health tells about an interface (exists False when it is gone)."""
    try:
        info = _ip_json("addr", "show", "dev", ifname)
    except OSError:
        info = []
    if not info:
        return {"exists": False}
    link = info[0]
    try:
        driver = os.path.basename(os.readlink("/sys/class/net/%s/device/driver" % ifname))
    except OSError:
        driver = (link.get("linkinfo") or {}).get("info_kind")
    return {"exists": True, "ifindex": link.get("ifindex"), "mac": link.get("address"),
            "mtu": link.get("mtu"), "operstate": link.get("operstate"),
            "ipv4": ["%s/%s" % (a.get("local"), a.get("prefixlen"))
                     for a in link.get("addr_info", []) if a.get("family") == "inet"],
            "driver": driver, "xdp": xdp_of(link)}


SIOCETHTOOL, ETHTOOL_GDRVINFO = 0x8946, 3


def interface_driver(ifname):
    """The interface's driver as ethtool names it (ETHTOOL_GDRVINFO: "veth", "ixgbe", ...);
    None when it cannot be read.  One ioctl, no child process."""
    import fcntl
    import struct
    info = array("B", struct.pack("I", ETHTOOL_GDRVINFO) + bytes(192))   # struct ethtool_drvinfo
    ifreq = struct.pack("16sP", ifname.encode()[:15], info.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    except OSError:
        return None
    return bytes(info[4:36]).split(b"\0")[0].decode("ascii", "replace") or None


def udp_snmp():
    """The Udp: line pair of /proc/net/snmp as a dict (this network namespace)."""
    lines = [l.split() for l in read_text("/proc/net/snmp").splitlines() if l.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


def udp_socket_drops(inode):
    """The `drops` column of /proc/net/udp for the socket with this inode."""
    for line in read_text("/proc/net/udp", "").splitlines()[1:]:
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


def task_cpu_ns(pid, tid):
    """CPU time one task (thread) has run, ns: the first field of
    /proc/<pid>/task/<tid>/schedstat (the scheduler's sum_exec_runtime, user and system
    time together); None when the task is gone or the kernel has no schedstat."""
    try:
        with open("/proc/%d/task/%d/schedstat" % (pid, tid)) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def process_cpu_ns(pid):
    """CPU time all live threads of a process have run, ns (each task's schedstat); None
    when the process is gone."""
    try:
        tids = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
    except (OSError, ValueError):
        return None
    vals = [task_cpu_ns(pid, t) for t in tids]
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None


class CpuClock:
    """A cumulative CPU time that may start or end within a session: 0 before what it
    measures existed (a tcpdump not yet spawned ran for no time), its last reading once it
    is gone (a reaped process, an ended thread), so that the difference of two samples is
    always the time it ran between them."""

    def __init__(self, read):
        self.read = read                 # () -> ns or None (gone)
        self.last = 0

    def __call__(self):
        v = self.read()
        if v is not None and v >= self.last:
            self.last = v
        return self.last


# The parts of the observers' CPU the sampler follows besides the agent as a whole.
OBSERVER_PARTS = ("capture", "consumer", "polling")
OBSERVERS_METHOD = (
    "CPU time (user + system) over the same samples as the softirq share, in % of one CPU "
    "(100 = one CPU busy all the time; at most 100 x ncpu): agent = the agent process, all its "
    "threads (CLOCK_PROCESS_CPUTIME_ID: the ring-buffer consumer and features writer, the "
    "counter polling, its HTTP API); capture = the session's tcpdump processes "
    "(/proc/<pid>/task/*/schedstat); consumer = the ring-buffer consumer thread, which also "
    "writes the features file; polling = the time-series and CPU samplers' threads.  Packet work "
    "the kernel does in softirq for them (a capture socket's copy) is in softirq_cpu_pct where "
    "the kernel accounts softirq time apart (IRQ time accounting)")


class SoftirqSampler:
    """Samples /proc/stat every 100 ms while a session is armed, in bounded
    memory: past SOFTIRQ_MAX_SAMPLES every other sample goes and the interval
    doubles (a 24 h deadline stays within 4096 samples).  With each sample, the CPU
    time the session's observers have used so far: the agent process (all its threads)
    and the parts in OBSERVER_PARTS (watch_process, watch_thread add what they follow)."""

    def __init__(self, name, threads=None):
        self.t, self.soft, self.total = array("q"), array("q"), array("q")
        self.agent = array("q")
        self.parts = {p: array("q") for p in OBSERVER_PARTS}
        self._clocks = {p: [] for p in OBSERVER_PARTS}
        self._watch_lock = threading.Lock()
        self.interval = SOFTIRQ_INTERVAL_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="softirq-" + name, daemon=True)
        for part, ths in (threads or {}).items():
            for th in ths:
                self.watch_thread(part, th)
        self._thread.start()
        self.watch_thread("polling", self._thread)

    def watch_thread(self, part, thread):
        """Follow a started thread of this process as part of `part`."""
        tid = getattr(thread, "native_id", None)
        if tid is not None:
            self._watch(part, CpuClock(lambda pid=os.getpid(), tid=tid: task_cpu_ns(pid, tid)))

    def watch_process(self, part, proc):
        """Follow a child process (a subprocess.Popen) as part of `part`, until it is reaped
        (its pid may then be another process's)."""
        def read(proc=proc):
            return process_cpu_ns(proc.pid) if proc.returncode is None else None
        self._watch(part, CpuClock(read))

    def _watch(self, part, clock):
        clock()
        with self._watch_lock:
            self._clocks[part].append(clock)

    def _loop(self):
        while True:
            try:
                soft, tot = proc_stat_cpu()
                agent = time.process_time_ns()
                with self._watch_lock:
                    parts = {p: sum(c() for c in cs) for p, cs in self._clocks.items()}
                self.t.append(time.monotonic_ns())
                self.soft.append(soft)
                self.total.append(tot)
                self.agent.append(agent)
                for p, v in parts.items():
                    self.parts[p].append(v)
                if len(self.t) > SOFTIRQ_MAX_SAMPLES:
                    for a in (self.t, self.soft, self.total, self.agent, *self.parts.values()):
                        a[:] = a[::2]
                    self.interval *= 2
            except Exception as e:
                log.warning("/proc/stat sample failed: %s", e)
            if self._stop.wait(self.interval):
                return

    def stop(self):
        self._stop.set()
        self._thread.join(2)

    def _span(self, t0, t1):
        """(i0, i1): the last sample at or before t0 and the first at or after t1 (at
        least two samples apart), or None with fewer than two samples."""
        ts = self.t
        n = min(len(ts), len(self.agent), *(len(a) for a in self.parts.values()))
        if n < 2:
            return None
        i0 = max([i for i in range(n) if ts[i] <= t0], default=0)
        i1 = min([i for i in range(n) if ts[i] >= t1], default=n - 1)
        if i1 <= i0:
            i1 = min(i0 + 1, n - 1)
            i0 = i1 - 1
        return i0, i1

    def window(self, t0, t1, label):
        """Softirq share of all CPUs' time between the last sample at or
        before t0 and the first sample at or after t1 (at least two samples)."""
        span = self._span(t0, t1)
        if span is None:
            return {"cpu_pct": None, "window": label, "samples": len(self.t)}
        i0, i1 = span
        ts, soft, total = self.t, self.soft, self.total
        d_soft, d_tot = soft[i1] - soft[i0], total[i1] - total[i0]
        return {"cpu_pct": round(100.0 * d_soft / d_tot, 3) if d_tot > 0 else None,
                "window": label, "samples": i1 - i0 + 1,
                "from_monotonic_ns": ts[i0], "to_monotonic_ns": ts[i1],
                "softirq_jiffies": d_soft, "total_jiffies": d_tot}

    def observers(self, t0, t1, label):
        """The observers' CPU over the same samples as window(): % of one CPU each, with
        the CPU time behind it (ns) and the DUT's CPU count."""
        out = {"window": label, "ncpu": os.cpu_count(), "method": OBSERVERS_METHOD}
        span = self._span(t0, t1)
        names = ("agent",) + OBSERVER_PARTS
        if span is None:
            out.update({"%s_cpu_pct" % k: None for k in names})
            out["samples"] = len(self.t)
            return out
        i0, i1 = span
        dt = self.t[i1] - self.t[i0]
        cols = dict(self.parts, agent=self.agent)
        for k in names:
            used = cols[k][i1] - cols[k][i0]
            out["%s_cpu_ns" % k] = used
            out["%s_cpu_pct" % k] = round(100.0 * used / dt, 3) if dt > 0 else None
        out.update({"samples": i1 - i0 + 1, "from_monotonic_ns": self.t[i0],
                    "to_monotonic_ns": self.t[i1]})
        return out


def hostname():
    return socket.gethostname()


def free_bytes(path):
    """Bytes an unprivileged writer may still use on the file system holding path (the
    controller plans each trial's captures against it); None when it cannot be read."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
