"""The arithmetic of the books on a trial's raw counts (accounting.py closes them).

Pure functions (no I/O).  A counter that is missing counts as 0; a figure that is
missing stays None.  What a generator's report says about its rate; where lost packets
went; percentiles over the DUT interfaces' histograms.

Where a lost packet went is read from each host's own counters, deltas over the
trial: the source's (read by the generator before sending and after its traffic
drained) and the DUT interface's (read by the agent at arm and disarm).  Loss is
assigned in the order a packet travels (source stack, source qdisc, source NIC,
DUT NIC): each place gets at most what is left, so a loss counted at both ends of
a link is not counted twice; whatever the counters saw beyond `lost` (others'
packets, double counting) is `located_excess`, and what no counter saw is
`lost_unlocated`.
"""

from __future__ import annotations

import math

# Bytes a frame occupies on an Ethernet wire beyond the UDP payload:
# UDP 8 + IPv4 20 + Ethernet header 14 + FCS 4 + preamble/SFD 8 + inter-frame gap 12.
WIRE_OVERHEAD_BYTES = 66
MIN_WIRE_FRAME_BYTES = 84  # 64-byte minimum frame + preamble + gap

# A rate counts as sustained when the achieved rate falls short of the target by at
# most this much (the generator decides; this is the fallback for old reports).
SUSTAINED_TOLERANCE_PCT = 0.1

# Where a packet can be lost, in the order it travels, with the counters read there.
LOSS_PLACES = ("src_stack", "src_qdisc", "src_nic", "dut_nic")
DUT_NIC_DROP_COUNTERS = ("rx_dropped", "rx_missed_errors", "rx_errors")
SRC_NIC_DROP_COUNTERS = ("nic_tx_dropped", "nic_tx_errors")


def wire_bytes(payload: int) -> int:
    return max(payload + WIRE_OVERHEAD_BYTES, MIN_WIRE_FRAME_BYTES)


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

def source_loss_counters(gen: dict) -> dict:
    """Packets the source host's own counters say it did not transmit, by place.

    A UDP send that the qdisc or the driver drops still returns success to the
    sender, and the kernel counts it in Udp SndbufErrors too; so the stack's share is
    SndbufErrors beyond the qdisc's and the NIC's drops, plus packets dropped while
    waiting for neighbour resolution."""
    d = (gen.get("source_counters") or {}).get("delta") or {}
    qdisc = count(d.get("qdisc_drops"))
    nic = sum(count(d.get(k)) for k in SRC_NIC_DROP_COUNTERS)
    stack = count(d.get("arp_unresolved_discards")) + max(0, count(d.get("udp_sndbuf_errors")) - qdisc - nic)
    return {"src_stack": stack, "src_qdisc": qdisc, "src_nic": nic}


def dut_loss_counter(nic: dict) -> int:
    """Frames the DUT interface dropped or refused before XDP ran."""
    return sum(count(nic.get(k)) for k in DUT_NIC_DROP_COUNTERS)


def locate(lost: int, counted: dict) -> dict:
    """Assign `lost` packets to the places on their path, in order, each at most what its
    counter says and at most what is left; the rest is unlocated, and what the counters
    said beyond `lost` is located_excess."""
    left = max(0, int(lost))
    out = {}
    for place in LOSS_PLACES:
        take = min(left, max(0, count(counted.get(place))))
        out[f"lost_{place}"] = take
        left -= take
    out["lost_unlocated"] = left
    assigned = max(0, int(lost)) - left
    out["located_excess"] = max(0, sum(max(0, count(counted.get(p))) for p in LOSS_PLACES) - assigned)
    return out


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
