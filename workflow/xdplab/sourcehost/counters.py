"""The source's own counters around a run: where packets could be lost before
they left the source host (UDP send buffer, IP output, ARP, the qdisc, the NIC).

Read before the first packet, at the measured window's start when a warm-up
comes first (so each phase's counts are its own), and again once the traffic
drained, from /proc/net/snmp, /proc/net/stat/arp_cache, /sys/class/net/IF/statistics/tx_* and
``tc -s -j qdisc show dev IF``; None where unavailable (macOS, no interface).
"""

import json
import os
import shutil
import subprocess
import sys
import time

DRAIN_MAX_S = 1.0  # wait at most this long for the traffic to drain before the "after" counters
DRAIN_STEP_S = 0.02

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


def read_text(path):
    """A file's text, or None when it cannot be read."""
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
    snmp = read_text("/proc/net/snmp")
    if snmp:
        parsed = parse_snmp(snmp)
        for key, tf in _SNMP.items():
            c[key] = parsed.get(tf)
    arp = None
    for path in ARP_CACHE_PATHS:
        arp = read_text(path)
        if arp:
            break
    if arp:
        try:
            c["arp_unresolved_discards"] = parse_arp_cache(arp)
        except (ValueError, IndexError):
            pass
    if iface:
        for f in _NIC:
            v = read_text("/sys/class/net/%s/statistics/%s" % (iface, f))
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


class WindowStart(object):
    """The snapshot at the measured window's start (the warm-up's end), read once when it
    is due: poll(now) from the loop that waits for the senders; wait(now, limit) is how
    long that loop may sleep so as to wake on time.  at_pc None: no warm-up, nothing read.
    sent_now: a callable giving the packets sent so far over both phases (read right after
    the snapshot, it bounds the window's packets the snapshot may have seen)."""

    def __init__(self, iface, at_pc, sent_now=None):
        self.iface, self.at, self.sent_now = iface, at_pc, sent_now
        self.snap = self.late_s = self.sent_by_then = None

    def poll(self, now):
        if self.at is not None and self.snap is None and now >= self.at:
            self.snap = read_counters(self.iface)
            self.late_s = time.perf_counter() - self.at
            self.sent_by_then = self.sent_now() if self.sent_now else None

    def wait(self, now, limit):
        if self.at is None or self.snap is not None:
            return limit
        return min(limit, max(self.at - now, 0.0))


def _delta(a, b):
    return {k: (b[k] - a[k] if b[k] is not None and a[k] is not None else None) for k in COUNTER_KEYS}


def counters_report(iface, before, after, drained_s, warmup=False, at_window=None, at_window_late_s=None,
                    sent_by_then=None):
    """The source_counters block.  warmup: the run had one; at_window: the snapshot read at
    the measured window's start (None without a warm-up, or when the run stopped before),
    at_window_late_s how long after the planned start its reading ended, sent_by_then the
    packets sent over both phases right after it (None: the window had not begun).  "delta" spans
    the whole run; "warmup_delta" and "window_delta" split it there.  Without a warm-up
    "window_delta" is "delta" and "warmup_delta" null; with one but no snapshot there,
    both are null (the split is unknown)."""
    public = lambda c: {k: c[k] for k in COUNTER_KEYS}
    delta = _delta(before, after)
    split = None
    if at_window is not None:
        split = {"read_late_s": None if at_window_late_s is None else round(at_window_late_s, 6),
                 "qdisc_backlog_packets": at_window.get("_qlen"), "sent_by_then": sent_by_then}
    if sys.platform.startswith("linux"):
        method = ("read before the first packet and again after the last sender ended and the traffic "
                  "drained (root qdisc backlog empty and tx_packets unchanged for %d ms; waited %.3f s, "
                  "at most %g s); /proc/net counters are the source's network namespace's, every "
                  "process's traffic included" % (DRAIN_STEP_S * 1000, drained_s, DRAIN_MAX_S))
        if at_window is not None:
            method += ("; also read at the measured window's start (the warm-up's end), while sending "
                       "goes on: warmup_delta is before to there, window_delta there to after; the "
                       "window's packets sent before that reading ended (at most window_start.sent_by_then "
                       "less the warm-up's sent) may count in warmup_delta, and warm-up packets still in "
                       "the root qdisc then (window_start.qdisc_backlog_packets) in window_delta")
        if not iface:
            method += "; no --iface/--counters-iface: no NIC or qdisc counters"
    else:
        method = "unavailable on %s (no /proc/net, /sys/class/net or tc)" % sys.platform
    return {"iface": iface, "before": public(before),
            "at_window_start": public(at_window) if at_window is not None else None,
            "after": public(after), "delta": delta,
            "warmup_delta": _delta(before, at_window) if at_window is not None else None,
            "window_delta": (_delta(at_window, after) if at_window is not None
                             else None if warmup else delta),
            "window_start": split, "method": method, "names": counter_names(iface)}
