"""The arithmetic of the books on a trial's raw counts (accounting.py closes them).

Pure functions (no I/O).  A counter that is missing counts as 0; a figure that is
missing stays None.  What a generator's report says about its rate; where lost packets
went; percentiles over the DUT interfaces' histograms.

Where a lost packet went is read from each host's own counters, deltas over the
trial: the source's (read by the generator before sending, at the measured
window's start when a warm-up precedes it, and after its traffic drained) and the
DUT interface's (read by the agent at arm and disarm only).  Each phase's loss
(the measured window's `lost`, the warm-up's `warmup_lost`) is located on its
own: the source's counters of that phase; a counter that spans both phases (the
DUT interface's, or an older generator's report without the window's start) is
given to the warm-up's loss first (it came first) and what is left of it to the
window's.  Within a phase loss is assigned in the order a packet travels (source
stack, source qdisc, source NIC, DUT NIC): each place gets at most what is left,
so a loss counted at both ends of a link is not counted twice; whatever the
counters saw beyond the phase's loss (others' packets, double counting) is its
`located_excess`, and what no counter saw is its `lost_unlocated`.  So a phase's
`lost_*` columns add up to its loss.
"""

from __future__ import annotations

import math

from .frames import wire_bytes  # noqa: F401  (line bytes of a frame: xdplab.frames; read here)

# A rate counts as sustained when the achieved rate falls short of the target by at
# most this much (the generator decides; this is the fallback for old reports).
SUSTAINED_TOLERANCE_PCT = 0.1

# Where a packet can be lost, in the order it travels, with the counters read there.
LOSS_PLACES = ("src_stack", "src_qdisc", "src_nic", "dut_nic")
DUT_NIC_DROP_COUNTERS = ("rx_dropped", "rx_missed_errors", "rx_errors")
SRC_NIC_DROP_COUNTERS = ("nic_tx_dropped", "nic_tx_errors")


def rounded(x, nd=3):
    """x rounded to nd digits; None (and NaN) as None."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def count(x) -> int:
    """A counter that may be missing (None) as a number."""
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0


def total(rows: list, col: str):
    """The sum of a column over rows, None when no row has it."""
    vals = [r[col] for r in rows if r.get(col) is not None]
    return sum(vals) if vals else None


# -- a generator's report -----------------------------------------------------------

def achieved_pps(gen: dict) -> float:
    return float(gen.get("achieved_pps") or 0.0)


def rate_sustained(gen: dict) -> bool:
    if "rate_sustained" in gen:
        return bool(gen["rate_sustained"])
    target = gen.get("target_pps") or 0
    return target <= 0 or achieved_pps(gen) >= target * (1 - SUSTAINED_TOLERANCE_PCT / 100)


def warmup_sent(gen: dict) -> int:
    """Packets the source sent in the trial's warm-up (before its measured window)."""
    return count((gen.get("warmup") or {}).get("sent"))


def not_offered(gen: dict) -> int:
    if gen.get("not_offered") is not None:
        return int(gen["not_offered"])
    return max(0, gen["scheduled"] - gen["sent"] - gen["send_errors"])


# -- loss location -----------------------------------------------------------------

def _sndbuf_beyond(d: dict) -> int:
    """Udp SndbufErrors beyond the qdisc's and the NIC's drops (which it counts too)."""
    d = d or {}
    return max(0, count(d.get("udp_sndbuf_errors")) - count(d.get("qdisc_drops"))
               - sum(count(d.get(k)) for k in SRC_NIC_DROP_COUNTERS))


def _source_places(d: dict, beyond=None) -> dict:
    """{place: packets} from one delta of the source's counters.

    A UDP send that the qdisc or the driver drops still returns success to the
    sender, and the kernel counts it in Udp SndbufErrors too; so the stack's share is
    SndbufErrors beyond the qdisc's and the NIC's drops (beyond, when given), plus
    packets dropped while waiting for neighbour resolution."""
    d = d or {}
    qdisc = count(d.get("qdisc_drops"))
    nic = sum(count(d.get(k)) for k in SRC_NIC_DROP_COUNTERS)
    stack = count(d.get("arp_unresolved_discards")) + (_sndbuf_beyond(d) if beyond is None else beyond)
    return {"src_stack": stack, "src_qdisc": qdisc, "src_nic": nic}


def source_loss_counters(gen: dict) -> dict:
    """Packets the source host's own counters say it did not transmit, by place and
    phase: {"window": {place: n}, "warmup": {place: n}, "both": {place: n}} ("both":
    counts that span the warm-up and the window, when the report cannot split them), and
    "cross": how many of one phase's packets the other's counts may hold, the snapshot
    between them being read just after the window began ({"to_window": the window's
    packets sent before that reading ended, "to_warmup": warm-up packets still queued in
    the source's root qdisc then})."""
    sc = gen.get("source_counters") or {}
    out = {"window": {}, "warmup": {}, "both": {}, "cross": {}}
    if sc.get("window_delta") is not None and sc.get("warmup_delta") is not None:
        # The stack's share is a difference of counters read one after the other
        # (/proc/net/snmp, then tc's): exact over the whole run (both read after the drain),
        # while at the window's start the qdisc's count runs a few ms ahead.  Each phase's
        # share is kept within the run's, the window's first.
        run = _sndbuf_beyond(sc.get("delta"))
        win = min(run, _sndbuf_beyond(sc["window_delta"]))
        warm = min(run - win, _sndbuf_beyond(sc["warmup_delta"]))
        out["window"] = _source_places(sc["window_delta"], win)
        out["warmup"] = _source_places(sc["warmup_delta"], warm)
        ws = sc.get("window_start") or {}
        out["cross"] = {"to_window": max(0, count(ws.get("sent_by_then")) - warmup_sent(gen)),
                        "to_warmup": count(ws.get("qdisc_backlog_packets"))}
    elif sc.get("window_delta") is not None:
        out["window"] = _source_places(sc["window_delta"])
    elif gen.get("warmup"):
        out["both"] = _source_places(sc.get("delta"))
    else:
        out["window"] = _source_places(sc.get("delta"))
    if gen.get("send_path") == "packet":
        # The packet path (AF_PACKET, qdisc bypassed) hands each frame to the driver in the
        # send call: a frame the device refuses (a full veth ring) fails that call, and the
        # sender either counts it as a send error (ENOBUFS) or, when sendmmsg swallowed the
        # error after earlier frames of its batch went out, sends it again.  tx_dropped
        # counts those refusals, not frames lost: no loss at the source's NIC but tx_errors.
        for phase, places in out.items():
            if phase != "cross" and "src_nic" in places:
                places["src_nic"] = _nic_errors_only(gen, phase)
    return out


def _nic_errors_only(gen: dict, phase: str) -> int:
    """The source NIC's tx_errors alone, in one phase's counters (see source_loss_counters)."""
    sc = gen.get("source_counters") or {}
    d = {"window": sc.get("window_delta") if sc.get("window_delta") is not None else sc.get("delta"),
         "warmup": sc.get("warmup_delta"), "both": sc.get("delta")}.get(phase) or {}
    return sum(count(d.get(k)) for k in SRC_NIC_DROP_COUNTERS if k != "nic_tx_dropped")


def dut_loss_counter(nic: dict) -> int:
    """Frames the DUT interface dropped or refused before XDP ran."""
    return sum(count(nic.get(k)) for k in DUT_NIC_DROP_COUNTERS)


def locate_phases(lost, warm_lost, counted: dict) -> tuple:
    """(the window's, the warm-up's) located loss: for each, {"lost_<place>": n,
    "lost_unlocated": n, "located_excess": n}, whose first five add up to its loss.
    counted: {"window": {place: n}, "warmup": {place: n}, "both": {place: n}, "cross":
    {"to_window": n, "to_warmup": n}}.  A place counted in "both" gives the warm-up's
    loss first, what is left of it the window's, and what is left after both is the
    window's located_excess.  What one phase's counter at a place holds beyond that
    phase's loss goes to the other phase's loss at the same place, up to "cross" (the
    packets the boundary between the two counts may have put on the wrong side).  The
    warm-up's is None when warm_lost is None (no warm-up, or no collector)."""
    left = {"window": max(0, count(lost)), "warmup": max(0, count(warm_lost))}
    out = {"window": {}, "warmup": {}}
    excess = {"window": 0, "warmup": 0}
    cross = {"window": count((counted.get("cross") or {}).get("to_window")),
             "warmup": count((counted.get("cross") or {}).get("to_warmup"))}
    for place in LOSS_PLACES:
        spare = {}
        for phase in ("warmup", "window"):
            own = max(0, count((counted.get(phase) or {}).get(place)))
            take = min(left[phase], own)
            out[phase][f"lost_{place}"] = take
            left[phase] -= take
            spare[phase] = own - take
        for phase, other in (("warmup", "window"), ("window", "warmup")):
            take = min(left[phase], spare[other], cross[phase])
            out[phase][f"lost_{place}"] += take
            left[phase] -= take
            spare[other] -= take
            cross[phase] -= take
        for phase in ("warmup", "window"):
            excess[phase] += spare[phase]
        span = max(0, count((counted.get("both") or {}).get(place)))
        for phase in ("warmup", "window"):
            take = min(left[phase], span)
            out[phase][f"lost_{place}"] += take
            left[phase] -= take
            span -= take
        excess["window"] += span
    for phase in ("window", "warmup"):
        out[phase]["lost_unlocated"] = left[phase]
        out[phase]["located_excess"] = excess[phase]
    return out["window"], (out["warmup"] if warm_lost is not None else None)


def loss_where(located: dict) -> str:
    """One readable cell: where the loss is, e.g. 'src_nic 1299' or 'unlocated 10, dut_nic 2'."""
    parts = [(located[f"lost_{p}"], p) for p in LOSS_PLACES] + [(located["lost_unlocated"], "unlocated")]
    return ", ".join(f"{name} {n}" for n, name in sorted(parts, key=lambda x: -x[0]) if n > 0)


# -- percentiles from histograms ----------------------------------------------------

def merged_percentile(hists: list, pct: float):
    """The pct-th percentile (nearest rank) of several sparse histograms added together;
    None without counts.  A histogram is the agent's {"buckets": [[lowest, highest,
    count], ...]} (a bucket stands for its highest value, as the agent reports its own
    percentiles) or {"counts": [[value, count], ...]}."""
    counts: dict = {}
    for h in hists:
        h = h or {}
        pairs = [(b[1], b[2]) for b in h.get("buckets") or []] + [tuple(c) for c in h.get("counts") or []]
        for value, n in pairs:
            counts[value] = counts.get(value, 0) + n
    grand = sum(counts.values())
    if grand == 0:
        return None
    rank, seen = max(1, math.ceil(pct / 100.0 * grand)), 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return None


def interfaces_percentile(blocks: list, pct: int):
    """pct of a distribution over interfaces: the interface's own figure ("p50", "p99")
    with one, the merged histograms with several."""
    blocks = [b for b in blocks if b and b.get("count")]
    if not blocks:
        return None
    if len(blocks) == 1:
        return blocks[0].get(f"p{pct}")
    return merged_percentile([b.get("histogram") for b in blocks], pct)
