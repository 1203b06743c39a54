"""Close the books on one trial: every packet the generators sent is accounted for.

Pure functions (no I/O).  Inputs are a trial's step records: the arm reply, the
resolved sources (connectivity), each source's generator report, the capture
verification, and the agent's results at disarm (one block per DUT interface).
Outputs are one summary row per trial (the columns docs/method.md documents), one row
per (trial, source) and per (trial, interface), and the accounting identities with
both sides shown.  A side that does not match its other side is never hidden:
each residual is reported, and their absolute sum is `unexplained`.

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

from . import timeseries

# Columns of summary.csv, in order.  The first twenty are the contract.
COLUMNS = [
    "experiment", "target_pps", "packet_size", "repeat", "duration_s",
    "sent", "achieved_pps", "rate_error_pct",
    "nic_rx", "xdp_matched", "features_received", "ringbuf_drops",
    "tcpdump_captured", "tcpdump_dropped", "lost", "unexplained",
    "xdp_ns_per_pkt", "latency_p50_us", "latency_p99_us", "softirq_cpu_pct",
    # Where loss happened, and traffic that was not ours.
    "rate_sustained", "not_offered", "loss_where",
    "lost_src_stack", "lost_src_qdisc", "lost_src_nic", "lost_dut_nic", "lost_unlocated",
    "located_excess",
    "foreign_rx", "foreign_arp", "foreign_port", "foreign_other",
    # More detail, same trial.
    "status", "testbed", "sources", "interfaces", "xdp_mode", "threads", "scheduled",
    "send_errors", "max_lag_us",
    "gap_p50_us", "gap_p99_us", "ideal_gap_us",
    "throughput_payload_mbps", "throughput_wire_mbps",
    "xdp_seen", "features_for_run", "capture_missing", "capture_duplicated", "capture_reordered",
    "unexplained_nic_vs_xdp", "unexplained_seen_vs_classified", "unexplained_xdp_vs_features",
    "unexplained_passed_vs_tcpdump", "unexplained_matched_over_sent",
    "latency_method", "run_id", "prog_tag",
    # The trial's settings (its grid point and the rest), and its warm-up.
    "point", "collector", "pattern", "xdp_mode_in_effect", "warmup_s", "warmup_sent",
    "warmup_lost", "port", "send_path", "generator", "burst_size", "seed",
    "unstable", "rx_rate_max_dev_pct", "run_index",
    # The program under test when it is the user's (program != collector): its verdicts as
    # the DUT's driver counted them over the armed window, its own cost, its identity.
    "program", "observe", "prog_seen", "prog_pass", "prog_drop", "prog_aborted", "prog_tx",
    "prog_tx_errors", "prog_redirect", "prog_ns_per_pkt", "prog_insns", "prog_jited_bytes", "prog_maps", "program_sha256",
]

# A verdict that sends the frame somewhere other than up the stack (not seen by tcpdump).
NOT_PASSED = ("drop", "aborted", "tx", "tx_errors", "redirect")

SOURCE_COLUMNS = [
    "experiment", "target_pps", "packet_size", "repeat", "point", "source", "host", "address",
    "dut_iface", "run_id", "source_pps", "scheduled", "sent", "send_errors", "not_offered",
    "warmup_sent", "warmup_lost",
    "achieved_pps", "rate_error_pct", "rate_sustained", "xdp_matched", "lost", "loss_where",
    "lost_src_stack", "lost_src_qdisc", "lost_src_nic", "lost_dut_nic", "lost_unlocated",
    "located_excess", "capture_matched", "capture_unique", "capture_missing",
    "capture_duplicated", "capture_reordered", "unexplained",
    "unexplained_matched_over_sent", "unexplained_xdp_vs_capture",
]

INTERFACE_COLUMNS = [
    "experiment", "target_pps", "packet_size", "repeat", "point", "interface", "xdp_mode", "sent",
    "nic_rx", "xdp_seen", "xdp_matched", "features_received", "ringbuf_drops",
    "tcpdump_captured", "tcpdump_dropped", "lost", "lost_dut_nic",
    "foreign_rx", "foreign_arp", "foreign_port", "foreign_other", "xdp_ns_per_pkt",
    "unexplained", "unexplained_nic_vs_xdp", "unexplained_seen_vs_classified",
    "unexplained_xdp_vs_features", "unexplained_passed_vs_tcpdump",
    "unexplained_matched_over_sent",
]

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


def _round(x, nd=3):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def _n(x) -> int:
    """A counter that may be missing (None) as a number."""
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0


def _achieved(gen: dict) -> float:
    return float(gen.get("achieved_pps") or 0.0)


def rate_sustained(gen: dict) -> bool:
    if "rate_sustained" in gen:
        return bool(gen["rate_sustained"])
    target = gen.get("target_pps") or 0
    return target <= 0 or _achieved(gen) >= target * (1 - SUSTAINED_TOLERANCE_PCT / 100)


def warmup_sent(gen: dict) -> int:
    """Packets the source sent in the trial's warm-up (before its measured window)."""
    return _n((gen.get("warmup") or {}).get("sent"))


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
    qdisc = _n(d.get("qdisc_drops"))
    nic = sum(_n(d.get(k)) for k in SRC_NIC_DROP_COUNTERS)
    stack = _n(d.get("arp_unresolved_discards")) + max(0, _n(d.get("udp_sndbuf_errors")) - qdisc - nic)
    return {"src_stack": stack, "src_qdisc": qdisc, "src_nic": nic}


def dut_loss_counter(nic: dict) -> int:
    """Frames the DUT interface dropped or refused before XDP ran."""
    return sum(_n(nic.get(k)) for k in DUT_NIC_DROP_COUNTERS)


def locate(lost: int, counted: dict) -> dict:
    """Assign `lost` packets to the places on their path, in order, each at most what its
    counter says and at most what is left; the rest is unlocated, and what the counters
    said beyond `lost` is located_excess."""
    left = max(0, int(lost))
    out = {}
    for place in LOSS_PLACES:
        take = min(left, max(0, _n(counted.get(place))))
        out[f"lost_{place}"] = take
        left -= take
    out["lost_unlocated"] = left
    assigned = max(0, int(lost)) - left
    out["located_excess"] = max(0, sum(max(0, _n(counted.get(p))) for p in LOSS_PLACES) - assigned)
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
        for value, count in pairs:
            counts[value] = counts.get(value, 0) + count
    total = sum(counts.values())
    if total == 0:
        return None
    rank, seen = max(1, math.ceil(pct / 100.0 * total)), 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return None


def _percentile(blocks: list, pct: int):
    """pct of a distribution over interfaces: the interface's own figure ("p50", "p99")
    with one, the merged histograms with several."""
    blocks = [b for b in blocks if b and b.get("count")]
    if not blocks:
        return None
    if len(blocks) == 1:
        return blocks[0].get(f"p{pct}")
    return merged_percentile([b.get("histogram") for b in blocks], pct)


# -- the program under test's verdicts ----------------------------------------------------

def driver_verdicts(blk: dict) -> dict | None:
    """One interface's verdicts of a user's program over the armed window, as its driver
    counted them: {"seen", "pass", "drop", "aborted", "tx", "tx_errors", "redirect"}; None
    without such counters (no user's program, generic XDP, a driver whose names are not
    known).  tx_errors: XDP_TX verdicts the driver could not send (veth: its peer runs no
    XDP program) and dropped.  aborted: XDP_ABORTED and action values XDP does not know,
    from the xdp_exception tracepoint; the driver counts them among its drops (veth does),
    so they are taken out of drop.  What the program neither dropped, aborted on, sent
    back nor redirected, it passed."""
    prog = blk.get("program") or {}
    d = prog.get("driver_xdp")
    if d is None:
        return None
    out = {k: _n(d.get(f"xdp_{k}")) for k in ("drop", "tx", "tx_errors", "redirect")}
    exc = prog.get("exceptions") or {}
    out["aborted"] = _n(exc.get("aborted")) + _n(exc.get("invalid"))
    out["drop"] -= out["aborted"]
    out["seen"] = _n(d.get("xdp_packets"))
    out["pass"] = out["seen"] - sum(out[k] for k in NOT_PASSED)
    return out


# -- identities ---------------------------------------------------------------------

def interface_identities(iface: dict, sent: int, collector: str) -> list[dict]:
    """Each identity that must hold on one DUT interface, with both sides and the residual."""
    xdp, feats, tcpd = iface.get("xdp") or {}, iface.get("features") or {}, iface.get("tcpdump") or {}
    nic_rx = _n((iface.get("nic") or {}).get("rx_packets"))
    rows = []
    if collector != "off":
        rows += [
            # Every frame the interface counted went through the XDP hook.
            {"name": "nic_vs_xdp", "left": "nic_rx", "left_value": nic_rx,
             "right": "xdp_seen", "right_value": _n(xdp.get("seen"))},
            # Every frame XDP saw was ours, foreign, or unparsable.
            {"name": "seen_vs_classified", "left": "xdp_seen", "left_value": _n(xdp.get("seen")),
             "right": "xdp_matched + foreign_arp + foreign_port + foreign_other + parse_errors",
             "right_value": sum(_n(xdp.get(k)) for k in ("matched", "foreign_arp", "foreign_port",
                                                          "foreign_other", "parse_errors"))},
        ]
    if collector == "features":
        # Every matched packet either produced a record user space got, or a ring-buffer drop.
        rows.append({"name": "xdp_vs_features", "left": "xdp_matched", "left_value": _n(xdp.get("matched")),
                     "right": "features_received + warmup_records + ringbuf_drops",
                     "right_value": _n(feats.get("received")) + _n(feats.get("warmup_records"))
                     + _n(xdp.get("ringbuf_full"))})
    user = iface.get("program") is not None
    verdicts = driver_verdicts(iface)
    if verdicts is not None and collector != "off":
        # The program under test ran on every frame the collector handed on (a tail call).
        rows.append({"name": "xdp_vs_driver", "left": "xdp_seen - chain_missed",
                     "left_value": _n(xdp.get("seen")) - _n(xdp.get("chain_missed")),
                     "right": "prog_seen (driver: frames XDP ran on)",
                     "right_value": verdicts["seen"]})
    if collector != "off" and (not user or verdicts is not None):
        # What passed XDP goes up the stack, where tcpdump (filtered on our header) saw or
        # dropped each: every matched packet with the collector; with a user's program the
        # matched packets it did not drop, send back or redirect (it never sees those; a
        # foreign frame the program dropped would show here).
        passed = _n(xdp.get("matched"))
        if verdicts is not None:
            passed -= sum(verdicts[k] for k in NOT_PASSED)
        rows += [
            {"name": "passed_vs_tcpdump",
             "left": ("xdp_matched - prog_drop - prog_aborted - prog_tx - prog_tx_errors - "
                      "prog_redirect") if user
             else "xdp_matched (passed up)",
             "left_value": passed, "right": "tcpdump_captured + tcpdump_dropped",
             "right_value": _n(tcpd.get("captured")) + _n(tcpd.get("dropped_by_kernel"))},
            # More matched than sent means packets we did not send matched (or were duplicated).
            {"name": "matched_over_sent", "left": "xdp_matched beyond sent",
             "left_value": max(0, _n(xdp.get("matched")) - sent), "right": "0", "right_value": 0},
        ]
    for r in rows:
        r["residual"] = r["left_value"] - r["right_value"]
    return rows


def _residuals(rows: list[dict]) -> dict:
    return {r["name"]: r["residual"] for r in rows}


# -- the trial ------------------------------------------------------------------------

def summarize(settings: dict, trial: dict, arm: dict, sources: list[dict], gens: list[dict],
              capture: dict, gathered: dict) -> dict:
    """{"row": summary row (COLUMNS), "sources": [SOURCE_COLUMNS rows], "interfaces":
    [INTERFACE_COLUMNS rows], "identities": [every identity, tagged with its interface or
    source]}."""
    collector = gathered.get("collector") or arm.get("collector") or "features"
    size = trial["packet_size"]
    target = trial["target_pps"]
    duration = settings["duration_s"]
    base_run = arm["run_id"]
    key = {"experiment": trial["experiment"], "target_pps": target, "packet_size": size,
           "repeat": trial["repeat"], "point": trial.get("point")}
    ifaces = gathered.get("interfaces") or {}
    checks = capture.get("checks") or []

    # -- per interface
    # What each DUT interface was sent, warm-up included (its counters count both).
    sent_to = {}
    for src, gen in zip(sources, gens):
        sent_to[src["dut_iface"]] = sent_to.get(src["dut_iface"], 0) + gen["sent"] + warmup_sent(gen)
    iface_rows, identities = [], []
    for name, blk in ifaces.items():
        xdp, feats = blk.get("xdp") or {}, blk.get("features") or {}
        tcpd, nic = blk.get("tcpdump") or {}, blk.get("nic") or {}
        sent = sent_to.get(name, 0)
        ids = interface_identities(blk, sent, collector)
        for r in ids:
            identities.append(dict(r, interface=name))
        res = _residuals(ids)
        matched = xdp.get("matched")
        foreign = {k: xdp.get(k) for k in ("foreign_arp", "foreign_port", "foreign_other")}
        iface_rows.append({
            **key, "interface": name, "xdp_mode": blk.get("xdp_mode_in_effect"), "sent": sent,
            "nic_rx": nic.get("rx_packets"), "xdp_seen": xdp.get("seen"), "xdp_matched": matched,
            "features_received": feats.get("received"), "ringbuf_drops": xdp.get("ringbuf_full"),
            "tcpdump_captured": tcpd.get("captured"), "tcpdump_dropped": tcpd.get("dropped_by_kernel"),
            "lost": max(0, sent - _n(matched)) if matched is not None else None,
            "lost_dut_nic": dut_loss_counter(nic),
            "foreign_rx": (_n(xdp.get("seen")) - _n(matched)) if matched is not None else None,
            **foreign,
            "xdp_ns_per_pkt": _round(xdp.get("ns_per_pkt"), 1),
            "unexplained": sum(abs(v) for v in res.values()),
            **{f"unexplained_{n}": res.get(n) for n in ("nic_vs_xdp", "seen_vs_classified",
                                                          "xdp_vs_features", "passed_vs_tcpdump",
                                                          "matched_over_sent")},
        })
        if "xdp_vs_driver" in res:
            iface_rows[-1]["unexplained"] = sum(abs(v) for v in res.values())

    # -- per source
    source_rows = []
    by_iface_dut_loss = {r["interface"]: r["lost_dut_nic"] for r in iface_rows}
    sources_per_iface = {}
    for src in sources:
        sources_per_iface[src["dut_iface"]] = sources_per_iface.get(src["dut_iface"], 0) + 1
    for k, (src, gen) in enumerate(zip(sources, gens)):
        run = base_run + k

        def matched_of(run_id):
            return sum(_n((blk.get("matched_by_run") or {}).get(str(run_id))) for blk in ifaces.values())

        matched = matched_of(run)
        # A user's program may drop what it is handed: the capture is checked against XDP
        # per interface then (its verdicts are counted per interface, not per run).
        user = any(b.get("program") is not None for b in ifaces.values())
        lost = max(0, gen["sent"] - matched) if collector != "off" else None
        warm = gen.get("warmup") or {}
        warm_lost = (max(0, _n(warm.get("sent")) - matched_of(warm["run_id"]))
                     if warm and collector != "off" else None)
        counted = source_loss_counters(gen)
        # The DUT interface's drops belong to this source only when it is the interface's only one.
        if sources_per_iface.get(src["dut_iface"]) == 1:
            counted["dut_nic"] = by_iface_dut_loss.get(src["dut_iface"], 0)
        # The counters cover the whole run: they locate the warm-up's losses too.
        located = locate((lost or 0) + (warm_lost or 0), counted)
        check = next((c for c in checks if c.get("source") == src["name"]), {})
        dropped = _n((ifaces.get(src["dut_iface"], {}).get("tcpdump") or {}).get("dropped_by_kernel"))
        diff = matched - _n(check.get("matched"))
        res = {"matched_over_sent": max(0, matched - gen["sent"]),
               # tcpdump's own drops on the interface may explain a capture short of XDP
               "xdp_vs_capture": max(0, diff - dropped) if diff > 0 else diff}
        if collector == "off" or user:
            res = {"matched_over_sent": 0 if collector == "off" else res["matched_over_sent"],
                   "xdp_vs_capture": 0}
        achieved = _achieved(gen)
        src_target = gen.get("target_pps") or 0
        source_rows.append({
            **key, "source": src["name"], "host": src["host"], "address": src.get("address"),
            "dut_iface": src["dut_iface"], "run_id": run, "source_pps": src_target,
            "scheduled": gen["scheduled"], "sent": gen["sent"], "send_errors": gen["send_errors"],
            "not_offered": not_offered(gen), "warmup_sent": warmup_sent(gen), "warmup_lost": warm_lost,
            "achieved_pps": _round(achieved, 1),
            "rate_error_pct": _round((achieved - src_target) / src_target * 100.0, 3) if src_target else None,
            "rate_sustained": rate_sustained(gen), "xdp_matched": matched if collector != "off" else None,
            "lost": lost, "loss_where": loss_where(located) if (lost or warm_lost) else "",
            **located,
            "capture_matched": check.get("matched"), "capture_unique": check.get("unique"),
            "capture_missing": check.get("missing"), "capture_duplicated": check.get("duplicated"),
            "capture_reordered": check.get("reordered"),
            "unexplained": sum(abs(v) for v in res.values()),
            "unexplained_matched_over_sent": res["matched_over_sent"],
            "unexplained_xdp_vs_capture": res["xdp_vs_capture"],
        })
        for name, value in res.items():
            identities.append({"name": name, "source": src["name"], "residual": value})

    seconds = timeseries.per_second(gathered, gens, duration, warmup=bool(settings.get("warmup_s")))
    stable = timeseries.stability(seconds, settings.get("stability_pct", 5))
    row = _total_row(settings, trial, arm, gens, gathered, iface_rows, source_rows, checks, collector,
                     key, duration, size, target, stable)
    return {"row": row, "sources": source_rows, "interfaces": iface_rows, "identities": identities,
            "timeseries": seconds}


def _total_row(settings, trial, arm, gens, gathered, iface_rows, source_rows, checks, collector,
               key, duration, size, target, stability) -> dict:
    def total(rows, col):
        vals = [r[col] for r in rows if r.get(col) is not None]
        return sum(vals) if vals else None

    sent = sum(g["sent"] for g in gens)
    achieved = sum(_achieved(g) for g in gens)
    ifaces = gathered.get("interfaces") or {}
    xdps = [b.get("xdp") or {} for b in ifaces.values()]
    run_time = sum(_n(x.get("run_time_ns")) for x in xdps)
    run_cnt = sum(_n(x.get("run_cnt")) for x in xdps)
    feats = [b.get("features") or {} for b in ifaces.values()]

    same_clock = bool(gens) and all(g.get("boot_id") and g.get("boot_id") == gathered.get("boot_id")
                                    for g in gens)
    lat_blocks = [f.get("latency_ns") for f in feats]
    p50, p99 = _percentile(lat_blocks, 50), _percentile(lat_blocks, 99)
    no_send_time = any(g.get("backend") == "trafgen" for g in gens)
    if same_clock and p50 is not None and not no_send_time:
        method = ("send timestamp in the payload (CLOCK_MONOTONIC before sendto on the source) to "
                  "bpf_ktime_get_ns() in XDP on the DUT; one kernel, one clock; percentiles from a "
                  "log-linear histogram (3 significant digits)")
        p50, p99 = p50 / 1000.0, p99 / 1000.0
    else:
        p50 = p99 = None
        method = ("not available: trafgen writes no send time into its packets" if no_send_time
                  else "not available: the source and the DUT do not share a clock" if not same_clock
                  else "not available: no feature records received" if collector == "features"
                  else f"not available: collector {collector} exports no records")
    gap_blocks = [f.get("gap_ns") for f in feats]
    g50, g99 = _percentile(gap_blocks, 50), _percentile(gap_blocks, 99)

    lost = total(source_rows, "lost")
    located = {c: total(source_rows, c) or 0 for c in
               ("lost_src_stack", "lost_src_qdisc", "lost_src_nic", "lost_dut_nic", "lost_unlocated",
                "located_excess")}
    # A DUT interface shared by several sources: its drops are located at the trial level.
    shared = [r for r in iface_rows if sum(1 for s in source_rows if s["dut_iface"] == r["interface"]) > 1]
    if shared and lost:
        extra = min(located["lost_unlocated"], sum(r["lost_dut_nic"] for r in shared))
        located["lost_dut_nic"] += extra
        located["lost_unlocated"] -= extra
    residual = {}
    for r in iface_rows:
        for n in ("nic_vs_xdp", "seen_vs_classified", "xdp_vs_features", "passed_vs_tcpdump",
                  "matched_over_sent"):
            if r.get(f"unexplained_{n}") is not None:
                residual[n] = residual.get(n, 0) + r[f"unexplained_{n}"]
    unexplained = (sum(r["unexplained"] for r in iface_rows)
                   + sum(abs(s["unexplained_xdp_vs_capture"] or 0) for s in source_rows))
    modes = sorted({r["xdp_mode"] for r in iface_rows if r.get("xdp_mode")})
    row = {
        **{k: key[k] for k in ("experiment", "target_pps", "packet_size", "repeat")},
        "duration_s": duration,
        "sent": sent,
        "achieved_pps": _round(achieved, 1),
        "rate_error_pct": _round((achieved - target) / target * 100.0, 3),
        "nic_rx": total(iface_rows, "nic_rx"),
        # the measured run ids' (the interfaces' rows count the warm-up's too)
        "xdp_matched": total(source_rows, "xdp_matched"),
        "features_received": total(iface_rows, "features_received"),
        "ringbuf_drops": total(iface_rows, "ringbuf_drops"),
        "tcpdump_captured": total(iface_rows, "tcpdump_captured"),
        "tcpdump_dropped": total(iface_rows, "tcpdump_dropped"),
        "lost": lost,
        "unexplained": unexplained,
        "xdp_ns_per_pkt": _round(run_time / run_cnt, 1) if run_cnt else None,
        "latency_p50_us": _round(p50, 2),
        "latency_p99_us": _round(p99, 2),
        "softirq_cpu_pct": _round((gathered.get("softirq") or {}).get("cpu_pct"), 2),
        "rate_sustained": all(s["rate_sustained"] for s in source_rows),
        "not_offered": sum(s["not_offered"] for s in source_rows),
        "loss_where": loss_where(located) if (lost or total(source_rows, "warmup_lost")) else "",
        **located,
        "foreign_rx": total(iface_rows, "foreign_rx"),
        "foreign_arp": total(iface_rows, "foreign_arp"),
        "foreign_port": total(iface_rows, "foreign_port"),
        "foreign_other": total(iface_rows, "foreign_other"),
        "status": "ok" if all(s["rate_sustained"] for s in source_rows) else "source_limited",
        "testbed": settings.get("testbed", "embedded"),
        "sources": len(source_rows),
        "interfaces": len(iface_rows),
        "xdp_mode": settings.get("xdp_mode") or "/".join(modes) or None,
        "threads": settings["threads"],
        "scheduled": sum(g["scheduled"] for g in gens),
        "send_errors": sum(g["send_errors"] for g in gens),
        "max_lag_us": _round(max((g.get("max_lag_us") or 0) for g in gens), 1),
        "gap_p50_us": _round(g50 / 1000.0, 2) if g50 is not None else None,
        "gap_p99_us": _round(g99 / 1000.0, 2) if g99 is not None else None,
        "ideal_gap_us": _round(1e6 / target, 3),
        "throughput_payload_mbps": _round(achieved * size * 8 / 1e6, 3),
        "throughput_wire_mbps": _round(achieved * wire_bytes(size) * 8 / 1e6, 3),
        "xdp_seen": total(iface_rows, "xdp_seen"),
        "features_for_run": sum(_n(f.get("for_run")) for f in feats) if collector == "features" else None,
        "capture_missing": sum(_n(c.get("missing")) for c in checks),
        "capture_duplicated": sum(_n(c.get("duplicated")) for c in checks),
        "capture_reordered": sum(_n(c.get("reordered")) for c in checks),
        **{f"unexplained_{n}": residual.get(n) for n in ("nic_vs_xdp", "seen_vs_classified",
                                                           "xdp_vs_features", "passed_vs_tcpdump",
                                                           "matched_over_sent")},
        "latency_method": method,
        "run_id": arm["run_id"],
        "prog_tag": arm.get("prog_tag"),
        "point": trial.get("point"),
        "collector": collector,
        "pattern": settings.get("pattern", "constant"),
        "xdp_mode_in_effect": "/".join(modes) or None,
        "warmup_s": settings.get("warmup_s", 0),
        "warmup_sent": sum(warmup_sent(g) for g in gens),
        "warmup_lost": total(source_rows, "warmup_lost"),
        "port": settings.get("port"),
        "send_path": settings.get("send_path", "udp"),
        "generator": settings.get("generator", "python"),
        "burst_size": settings.get("burst_size") if settings.get("pattern") == "burst" else None,
        "seed": settings.get("seed") if settings.get("pattern") == "poisson" else None,
        "unstable": stability.get("unstable"),
        "rx_rate_max_dev_pct": stability.get("max_dev_pct"),
        "run_index": (arm.get("place_in_run") or {}).get("index"),
    }
    row.update(program_columns(settings, arm, gathered, source_rows, gens))
    assert list(row) == COLUMNS, "summary row and COLUMNS disagree"
    return row


def program_columns(settings: dict, arm: dict, gathered: dict, source_rows: list, gens: list) -> dict:
    """The program-under-test columns: empty (None) for xdplab's own collector."""
    program = settings.get("program") or "collector"
    out = {c: None for c in COLUMNS[COLUMNS.index("program"):]}
    out["program"] = program
    if program == "collector":
        return out
    ifaces = gathered.get("interfaces") or {}
    blocks = [b.get("program") for b in ifaces.values() if b.get("program")]
    out["observe"] = "off" if program == "attached" else settings.get("observe")
    first = blocks[0] if blocks else (arm.get("program") or {})
    out["program_sha256"] = first.get("sha256")
    out["prog_insns"] = first.get("xlated_insns")
    out["prog_jited_bytes"] = first.get("jited_bytes")
    out["prog_maps"] = first.get("nr_map_ids")
    # Its own run-time statistics exist only when it runs by itself (collector off): reached
    # by the collector's tail call, its time is accounted to the collector (xdp_ns_per_pkt).
    if blocks and not any(b.get("chained") for b in blocks):
        run_time = sum(_n(b.get("run_time_ns")) for b in blocks)
        run_cnt = sum(_n(b.get("run_cnt")) for b in blocks)
        out["prog_ns_per_pkt"] = _round(run_time / run_cnt, 1) if run_cnt else None
    verdicts = [driver_verdicts(b) for b in ifaces.values()]
    if verdicts and all(v is not None for v in verdicts):
        for col in ("seen", "pass") + NOT_PASSED:
            out[f"prog_{col}"] = sum(v[col] for v in verdicts)
    return out
