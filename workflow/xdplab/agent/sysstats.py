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


# --- pre-flight facts (xdplab.preflight decides on them; /environment's "preflight") -------

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
NETDEV_CMD_DEV_GET, NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES = 1, 1, 3
NLM_F_REQUEST, NLMSG_ERROR = 1, 2
# enum netdev_xdp_act (include/uapi/linux/netdev.h), bit by bit
XDP_ACT = ("basic", "redirect", "ndo-xmit", "xsk-zerocopy", "hw-offload", "rx-sg", "ndo-xmit-sg")


def _nla(kind, payload):
    import struct
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _nla_parse(buf):
    import struct
    out, i = {}, 0
    while i + 4 <= len(buf):
        length, kind = struct.unpack_from("HH", buf, i)
        if length < 4:
            break
        out[kind & 0x3fff] = buf[i + 4:i + length]
        i += (length + 3) & ~3
    return out


def _genl(sock, family, cmd, attrs, seq):
    """One generic netlink request and its reply's attributes; OSError for an error reply."""
    import struct
    sock.send(struct.pack("IHHII", 20 + len(attrs), family, NLM_F_REQUEST, seq, 0)
              + struct.pack("BBH", cmd, 1, 0) + attrs)
    data = sock.recv(65536)
    length, kind = struct.unpack_from("IH", data)
    if kind == NLMSG_ERROR:
        err = struct.unpack_from("i", data, 16)[0]
        if err:
            raise OSError(-err, os.strerror(-err))
    return _nla_parse(data[20:length])


def xdp_features(ifname):
    """The XDP features the interface's driver declares (netlink family "netdev",
    NETDEV_A_DEV_XDP_FEATURES, Linux 6.3+): a list of names, "basic" meaning native XDP;
    or (None, why) when they cannot be read.  Asks the kernel only: nothing is attached."""
    import struct
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        return None, "no interface %s" % ifname
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as s:
            s.settimeout(2.0)
            s.bind((0, 0))
            try:
                fam = _genl(s, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, _nla(CTRL_ATTR_FAMILY_NAME, b"netdev\0"), 1)
            except OSError:
                return None, ("the kernel has no netlink family netdev (Linux < 6.3): its drivers' "
                              "XDP features cannot be read without attaching")
            family = struct.unpack("H", fam[CTRL_ATTR_FAMILY_ID][:2])[0]
            dev = _genl(s, family, NETDEV_CMD_DEV_GET, _nla(NETDEV_A_DEV_IFINDEX, struct.pack("I", ifindex)), 2)
    except (OSError, KeyError, struct.error) as e:
        return None, "netlink netdev dev-get %s: %s" % (ifname, e)
    raw = dev.get(NETDEV_A_DEV_XDP_FEATURES)
    if raw is None:
        return None, "the kernel reports no xdp-features for %s" % ifname
    bits = struct.unpack("Q", raw[:8].ljust(8, b"\0"))[0]
    return [name for k, name in enumerate(XDP_ACT) if bits & (1 << k)] + \
        ["bit%d" % k for k in range(len(XDP_ACT), 64) if bits & (1 << k)]


def cpu_list(text):
    """"0-3,6" (a kernel CPU list) -> [0, 1, 2, 3, 6]."""
    cpus = []
    for part in (text or "").strip().split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus += range(int(lo), int(hi) + 1)
        elif part.strip():
            cpus.append(int(part))
    return cpus


def interface_irqs(ifname):
    """{irq: [cpus it is delivered to]} of the interface's own interrupts: the device's
    MSI vectors, its legacy IRQ, and /proc/interrupts lines naming the interface.  {} for
    a virtual interface (veth has none: its packets are processed in softirq on the
    sending CPU)."""
    irqs = set()
    dev = "/sys/class/net/%s/device" % ifname
    try:
        irqs.update(int(n) for n in os.listdir(dev + "/msi_irqs") if n.isdigit())
    except OSError:
        pass
    legacy = read_text(dev + "/irq", "").strip()
    if legacy.isdigit() and int(legacy) > 0 and not irqs:
        irqs.add(int(legacy))
    for line in read_text("/proc/interrupts", "").splitlines()[1:]:
        num, sep, rest = line.partition(":")
        if sep and num.strip().isdigit() and any(w == ifname or w.startswith(ifname + "-")
                                                 for w in rest.split()):
            irqs.add(int(num.strip()))
    out = {}
    for irq in sorted(irqs):
        text = read_text("/proc/irq/%d/effective_affinity_list" % irq, "") or \
            read_text("/proc/irq/%d/smp_affinity_list" % irq, "")
        try:
            out[str(irq)] = cpu_list(text)
        except ValueError:
            out[str(irq)] = None
    return out


def cpufreq_governors():
    """{governor: [cpus]} from /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor, or
    (None, why) where the kernel has no cpufreq (a VM, a fixed clock)."""
    base = "/sys/devices/system/cpu"
    found = {}
    try:
        names = os.listdir(base)
    except OSError as e:
        return None, str(e)
    for name in names:
        if name.startswith("cpu") and name[3:].isdigit():
            gov = read_text("%s/%s/cpufreq/scaling_governor" % (base, name), "").strip()
            if gov:
                found.setdefault(gov, []).append(int(name[3:]))
    if not found:
        return None, "no %s/cpu*/cpufreq: the kernel does not scale the CPU frequency here" % base
    return {g: sorted(c) for g, c in sorted(found.items())}


PTP4L_SOCKET = "/var/run/ptp4l"


def clock_status(run):
    """What says whether this host's clock is synchronised, as the tools print it (the
    controller parses it, xdplab.preflight): `chronyc tracking`, and `pmc GET
    TIME_STATUS_NP` when ptp4l's socket exists.  None for a tool that is not there."""
    out = {}
    for key, argv, needs in (("chronyc_tracking", ["chronyc", "tracking"], None),
                             ("pmc_time_status", ["pmc", "-u", "-b", "0", "GET TIME_STATUS_NP"], PTP4L_SOCKET)):
        if needs and not os.path.exists(needs):
            out[key] = None
            continue
        try:
            r = run(argv)
        except (OSError, subprocess.SubprocessError):
            out[key] = None
            continue
        out[key] = {"exit": r.returncode, "text": ((r.stdout or "") + (r.stderr or ""))[-4000:]}
    return out


def run_quick(argv):
    return run_argv(argv, timeout=3)


def bpf_jit_enabled():
    """net.core.bpf_jit_enable: "0", "1" or "2".  The sysctl exists in the initial network
    namespace only, so an agent in another one (the embedded testbed's) loads a
    two-instruction socket filter instead and asks the kernel whether it was JIT-compiled
    (fdinfo prog_jited): "1" or "0".  (None, why) when neither can be read."""
    text = read_text("/proc/sys/net/core/bpf_jit_enable", "").strip()
    if text:
        return text
    import ctypes as ct

    from .bpf import _sys_bpf, fdinfo

    class _ProgLoadAttr(ct.Structure):   # union bpf_attr, BPF_PROG_LOAD's first members
        _fields_ = [("prog_type", ct.c_uint32), ("insn_cnt", ct.c_uint32), ("insns", ct.c_uint64),
                    ("license", ct.c_uint64), ("log_level", ct.c_uint32), ("log_size", ct.c_uint32),
                    ("log_buf", ct.c_uint64), ("kern_version", ct.c_uint32), ("prog_flags", ct.c_uint32),
                    ("pad", ct.c_uint8 * 96)]

    insns = (ct.c_uint8 * 16)(0xb7, 0, 0, 0, 0, 0, 0, 0,     # r0 = 0
                              0x95, 0, 0, 0, 0, 0, 0, 0)     # exit
    gpl = ct.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(prog_type=1, insn_cnt=2, insns=ct.addressof(insns), license=ct.addressof(gpl))
    try:
        fd = _sys_bpf(5, attr)                                  # BPF_PROG_LOAD, a socket filter
    except OSError as e:
        return None, ("/proc/sys/net/core/bpf_jit_enable is not in this network namespace, and "
                      "loading a probe program failed: %s" % e)
    try:
        jited = fdinfo(fd).get("prog_jited")
    finally:
        os.close(fd)
    if jited is None:
        return None, "the kernel's fdinfo of a BPF program has no prog_jited"
    return "1" if jited else "0"
