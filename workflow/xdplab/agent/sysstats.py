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


class SoftirqSampler:
    """Samples /proc/stat every 100 ms while a session is armed, in bounded
    memory: past SOFTIRQ_MAX_SAMPLES every other sample goes and the interval
    doubles (a 24 h deadline stays within 4096 samples)."""

    def __init__(self, name):
        self.t, self.soft, self.total = array("q"), array("q"), array("q")
        self.interval = SOFTIRQ_INTERVAL_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="softirq-" + name, daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            try:
                soft, tot = proc_stat_cpu()
                self.t.append(time.monotonic_ns())
                self.soft.append(soft)
                self.total.append(tot)
                if len(self.t) > SOFTIRQ_MAX_SAMPLES:
                    for a in (self.t, self.soft, self.total):
                        a[:] = a[::2]
                    self.interval *= 2
            except Exception as e:
                log.warning("/proc/stat sample failed: %s", e)
            if self._stop.wait(self.interval):
                return

    def stop(self):
        self._stop.set()
        self._thread.join(2)

    def window(self, t0, t1, label):
        """Softirq share of all CPUs' time between the last sample at or
        before t0 and the first sample at or after t1 (at least two samples)."""
        ts, soft, total = self.t, self.soft, self.total
        n = len(ts)
        if n < 2:
            return {"cpu_pct": None, "window": label, "samples": n}
        i0 = max([i for i in range(n) if ts[i] <= t0], default=0)
        i1 = min([i for i in range(n) if ts[i] >= t1], default=n - 1)
        if i1 <= i0:
            i1 = min(i0 + 1, n - 1)
            i0 = i1 - 1
        d_soft, d_tot = soft[i1] - soft[i0], total[i1] - total[i0]
        return {"cpu_pct": round(100.0 * d_soft / d_tot, 3) if d_tot > 0 else None,
                "window": label, "samples": i1 - i0 + 1,
                "from_monotonic_ns": ts[i0], "to_monotonic_ns": ts[i1],
                "softirq_jiffies": d_soft, "total_jiffies": d_tot}


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
