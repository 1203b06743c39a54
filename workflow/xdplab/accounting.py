"""Close the books on one trial: every packet the generator sent is accounted for.

Inputs are the four step records of a trial (arm, generator, capture
verification, gathered agent results).  The output is one summary row with the
columns README.md documents, plus the accounting identities with both sides
shown.  A side that does not match its other side is never hidden: each
residual is reported, and their absolute sum is `unexplained`.
"""

from __future__ import annotations

import math

# Columns of summary.csv, in order.  The first twenty are the contract.
COLUMNS = [
    "experiment", "target_pps", "packet_size", "repeat", "duration_s",
    "sent", "achieved_pps", "rate_error_pct",
    "nic_rx", "xdp_matched", "features_received", "ringbuf_drops",
    "tcpdump_captured", "tcpdump_dropped", "lost", "unexplained",
    "xdp_ns_per_pkt", "latency_p50_us", "latency_p99_us", "softirq_cpu_pct",
    # More detail, same trial.
    "status", "xdp_mode", "threads", "scheduled", "send_errors", "max_lag_us",
    "throughput_payload_mbps", "throughput_wire_mbps",
    "xdp_seen", "features_for_run", "capture_missing", "capture_duplicated", "capture_reordered",
    "unexplained_nic_vs_xdp", "unexplained_xdp_vs_features", "unexplained_passed_vs_tcpdump",
    "unexplained_matched_over_sent", "latency_method", "run_id", "prog_tag",
]

# Bytes a frame occupies on an Ethernet wire beyond the UDP payload:
# UDP 8 + IPv4 20 + Ethernet header 14 + FCS 4 + preamble/SFD 8 + inter-frame gap 12.
WIRE_OVERHEAD_BYTES = 66
MIN_WIRE_FRAME_BYTES = 84  # 64-byte minimum frame + preamble + gap


def wire_bytes(payload: int) -> int:
    return max(payload + WIRE_OVERHEAD_BYTES, MIN_WIRE_FRAME_BYTES)


def _round(x, nd=3):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def identities(gen: dict, capture: dict, gathered: dict) -> list[dict]:
    """Each identity that must hold for the trial, with both sides and the residual."""
    xdp = gathered["xdp"]
    feats = gathered["features"]
    tcpd = capture["tcpdump"]
    sent = gen["sent"]
    rows = [
        # Every frame the interface counted went through the XDP hook.
        {"name": "nic_vs_xdp", "left": "nic_rx", "left_value": gathered["nic"]["rx_packets"],
         "right": "xdp_seen", "right_value": xdp["seen"]},
        # Every matched packet either produced a record user space got, or a ring-buffer drop.
        {"name": "xdp_vs_features", "left": "xdp_matched", "left_value": xdp["matched"],
         "right": "features_received + ringbuf_drops",
         "right_value": feats["received"] + xdp["ringbuf_full"]},
        # The collector returns XDP_PASS for every matched packet: tcpdump saw or dropped each.
        {"name": "passed_vs_tcpdump", "left": "xdp_matched (passed up)", "left_value": xdp["matched"],
         "right": "tcpdump_captured + tcpdump_dropped",
         "right_value": tcpd["captured"] + tcpd["dropped_by_kernel"]},
        # More matched than sent means packets we did not send matched (or were duplicated).
        {"name": "matched_over_sent", "left": "xdp_matched beyond sent",
         "left_value": max(0, xdp["matched"] - sent), "right": "0", "right_value": 0},
    ]
    for r in rows:
        r["residual"] = r["left_value"] - r["right_value"]
    return rows


def summarize(settings: dict, trial: dict, arm: dict, gen: dict, capture: dict, gathered: dict) -> dict:
    """One summary row (dict keyed by COLUMNS) and the identities behind `unexplained`."""
    xdp = gathered["xdp"]
    feats = gathered["features"]
    tcpd = capture["tcpdump"]
    check = capture["check"]
    target = trial["target_pps"]
    size = trial["packet_size"]
    sent = gen["sent"]
    achieved = gen["achieved_pps"]

    ids = identities(gen, capture, gathered)
    residual = {r["name"]: r["residual"] for r in ids}
    lost = max(0, sent - xdp["matched"])

    same_clock = bool(gen.get("boot_id")) and gen.get("boot_id") == gathered.get("boot_id")
    lat = feats.get("latency_ns") or {}
    if same_clock and lat.get("count"):
        p50, p99 = lat["p50"] / 1000.0, lat["p99"] / 1000.0
        method = ("send timestamp in the payload (CLOCK_MONOTONIC before sendto on the source) to "
                  "bpf_ktime_get_ns() in XDP on the DUT; one kernel, one clock")
    else:
        p50 = p99 = None
        method = ("not available: the source and the DUT do not share a clock" if not same_clock
                  else "not available: no feature records received")

    row = {
        "experiment": trial["experiment"],
        "target_pps": target,
        "packet_size": size,
        "repeat": trial["repeat"],
        "duration_s": settings["duration_s"],
        "sent": sent,
        "achieved_pps": _round(achieved, 1),
        "rate_error_pct": _round((achieved - target) / target * 100.0, 3),
        "nic_rx": gathered["nic"]["rx_packets"],
        "xdp_matched": xdp["matched"],
        "features_received": feats["received"],
        "ringbuf_drops": xdp["ringbuf_full"],
        "tcpdump_captured": tcpd["captured"],
        "tcpdump_dropped": tcpd["dropped_by_kernel"],
        "lost": lost,
        "unexplained": sum(abs(v) for v in residual.values()),
        "xdp_ns_per_pkt": _round(xdp.get("ns_per_pkt"), 1),
        "latency_p50_us": _round(p50, 2),
        "latency_p99_us": _round(p99, 2),
        "softirq_cpu_pct": _round(gathered["softirq"].get("cpu_pct"), 2),
        "status": "ok",
        "xdp_mode": gathered.get("xdp_mode_in_effect", arm.get("xdp_mode_in_effect")),
        "threads": settings["threads"],
        "scheduled": gen["scheduled"],
        "send_errors": gen["send_errors"],
        "max_lag_us": _round(gen.get("max_lag_us"), 1),
        "throughput_payload_mbps": _round(achieved * size * 8 / 1e6, 3),
        "throughput_wire_mbps": _round(achieved * wire_bytes(size) * 8 / 1e6, 3),
        "xdp_seen": xdp["seen"],
        "features_for_run": feats["for_run"],
        "capture_missing": check["missing"],
        "capture_duplicated": check["duplicated"],
        "capture_reordered": check["reordered"],
        "unexplained_nic_vs_xdp": residual["nic_vs_xdp"],
        "unexplained_xdp_vs_features": residual["xdp_vs_features"],
        "unexplained_passed_vs_tcpdump": residual["passed_vs_tcpdump"],
        "unexplained_matched_over_sent": residual["matched_over_sent"],
        "latency_method": method,
        "run_id": arm["run_id"],
        "prog_tag": arm.get("prog_tag"),
    }
    assert list(row) == COLUMNS, "summary row and COLUMNS disagree"
    return {"row": row, "identities": ids}
