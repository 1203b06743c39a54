"""The rows of one trial's books (accounting.summarize puts them together): one per DUT
interface with the identities that must hold there, one per source, and the trial's
summary row, which adds them up.  Pure functions (no I/O); the columns are
accounting.INTERFACE_COLUMNS, SOURCE_COLUMNS and COLUMNS."""

from __future__ import annotations

from .counts import (LOSS_PLACES, achieved_pps, count, dut_loss_counter, interfaces_percentile,
                     locate_phases, loss_where, not_offered, rate_sustained, rounded, source_loss_counters,
                     total, warmup_sent, wire_bytes)
from .frames import frame_bytes
from .verdicts import NOT_PASSED, driver_verdicts, program_columns

# The identities of a DUT interface, in the order of their columns (unexplained_<name>).
IDENTITIES = ("nic_vs_xdp", "seen_vs_classified", "xdp_vs_features", "passed_vs_tcpdump",
              "matched_over_sent")

# Where a phase's loss went: the measured window's columns, and the warm-up's (the same
# with warmup_ in front).
LOCATED = tuple(f"lost_{p}" for p in LOSS_PLACES) + ("lost_unlocated", "located_excess")
WARMUP_LOCATED = tuple(f"warmup_{c}" for c in LOCATED)


def warmup_located(located) -> dict:
    """The warm-up's located loss under its own names (None without a warm-up)."""
    return {f"warmup_{c}": (located or {}).get(c) if located is not None else None for c in LOCATED}


# -- per interface --------------------------------------------------------------------

def interface_identities(iface: dict, sent: int, collector: str) -> list[dict]:
    """Each identity that must hold on one DUT interface, with both sides and the residual."""
    xdp, feats, tcpd = iface.get("xdp") or {}, iface.get("features") or {}, iface.get("tcpdump") or {}
    nic_rx = count((iface.get("nic") or {}).get("rx_packets"))
    rows = []
    if collector != "off":
        rows += [
            # Every frame the interface counted went through the XDP hook.
            {"name": "nic_vs_xdp", "left": "nic_rx", "left_value": nic_rx,
             "right": "xdp_seen", "right_value": count(xdp.get("seen"))},
            # Every frame XDP saw was ours, foreign, or unparsable.
            {"name": "seen_vs_classified", "left": "xdp_seen", "left_value": count(xdp.get("seen")),
             "right": ("xdp_matched + warmup_xdp_matched + foreign_arp + foreign_port + foreign_other + "
                       "parse_errors"),
             "right_value": sum(count(xdp.get(k)) for k in ("matched", "foreign_arp", "foreign_port",
                                                            "foreign_other", "parse_errors"))},
        ]
    if collector == "features":
        # Every matched packet either produced a record user space got, or a ring-buffer drop.
        rows.append({"name": "xdp_vs_features", "left": "xdp_matched + warmup_xdp_matched",
                     "left_value": count(xdp.get("matched")),
                     "right": "features_received + warmup_records + ringbuf_drops",
                     "right_value": count(feats.get("received")) + count(feats.get("warmup_records"))
                     + count(xdp.get("ringbuf_full"))})
    user = iface.get("program") is not None
    verdicts = driver_verdicts(iface)
    if verdicts is not None and collector != "off":
        # The program under test ran on every frame the collector handed on (a tail call).
        rows.append({"name": "xdp_vs_driver", "left": "xdp_seen - chain_missed",
                     "left_value": count(xdp.get("seen")) - count(xdp.get("chain_missed")),
                     "right": "prog_seen (driver: frames XDP ran on)",
                     "right_value": verdicts["seen"]})
    if collector != "off" and (not user or verdicts is not None):
        # What passed XDP goes up the stack, where tcpdump (filtered on our header) saw or
        # dropped each: every matched packet with the collector; with a user's program the
        # matched packets it did not drop, send back or redirect (it never sees those; a
        # foreign frame the program dropped would show here).
        passed = count(xdp.get("matched"))
        if verdicts is not None:
            passed -= sum(verdicts[k] for k in NOT_PASSED)
        rows += [
            {"name": "passed_vs_tcpdump",
             "left": ("xdp_matched + warmup_xdp_matched - prog_drop - prog_aborted - prog_tx - "
                      "prog_tx_errors - prog_redirect") if user
             else "xdp_matched + warmup_xdp_matched (passed up)",
             "left_value": passed, "right": "tcpdump_captured + tcpdump_dropped",
             "right_value": count(tcpd.get("captured")) + count(tcpd.get("dropped_by_kernel"))},
            # More matched than sent means packets we did not send matched (or were duplicated).
            {"name": "matched_over_sent", "left": "xdp_matched + warmup_xdp_matched beyond sent + warmup_sent",
             "left_value": max(0, count(xdp.get("matched")) - sent), "right": "0", "right_value": 0},
        ]
    for r in rows:
        r["residual"] = r["left_value"] - r["right_value"]
    return rows


def interface_rows(key: dict, arm: dict, gathered: dict, sources: list, gens: list, collector: str):
    """([one row per DUT interface], [its identities, tagged with the interface])."""
    # What each DUT interface was sent in the window and in the warm-up; the run ids of each.
    sent_to, warm_to = {}, {}
    for src, gen in zip(sources, gens):
        sent_to[src["dut_iface"]] = sent_to.get(src["dut_iface"], 0) + gen["sent"]
        warm_to[src["dut_iface"]] = warm_to.get(src["dut_iface"], 0) + warmup_sent(gen)
    runs = [arm["run_id"] + k for k in range(len(gens))]
    warm_runs = [g["warmup"]["run_id"] for g in gens if g.get("warmup")]
    rows, identities = [], []
    for name, blk in (gathered.get("interfaces") or {}).items():
        sent, warm = sent_to.get(name, 0), (warm_to.get(name, 0) if warm_runs else None)
        # The identities count every packet of the armed window, warm-up included (the NIC's
        # counters and tcpdump's cannot tell the two apart).
        ids = interface_identities(blk, sent + (warm or 0), collector)
        identities += [dict(r, interface=name) for r in ids]
        rows.append(_interface_row(key, name, blk, sent, warm, runs, warm_runs,
                                   {r["name"]: r["residual"] for r in ids}))
    return rows, identities


def _interface_row(key: dict, name: str, blk: dict, sent: int, warm, runs: list, warm_runs: list,
                   residuals: dict) -> dict:
    xdp, feats = blk.get("xdp") or {}, blk.get("features") or {}
    tcpd, nic = blk.get("tcpdump") or {}, blk.get("nic") or {}
    ifaces = {name: blk}
    on = xdp.get("matched") is not None
    matched = sum(_matched_of(ifaces, r) for r in runs) if on else None
    warm_matched = sum(_matched_of(ifaces, r) for r in warm_runs) if on and warm is not None else None
    return {
        **key, "interface": name, "xdp_mode": blk.get("xdp_mode_in_effect"), "sent": sent,
        "warmup_sent": warm,
        "nic_rx": nic.get("rx_packets"), "xdp_seen": xdp.get("seen"), "xdp_matched": matched,
        "warmup_xdp_matched": warm_matched,
        "features_received": feats.get("received"), "ringbuf_drops": xdp.get("ringbuf_full"),
        "tcpdump_captured": tcpd.get("captured"), "tcpdump_dropped": tcpd.get("dropped_by_kernel"),
        "lost": max(0, sent - matched) if matched is not None else None,
        "warmup_lost": max(0, warm - warm_matched) if warm_matched is not None else None,
        "nic_drops": dut_loss_counter(nic),
        "foreign_rx": (count(xdp.get("seen")) - count(xdp.get("matched"))) if on else None,
        **{k: xdp.get(k) for k in ("foreign_arp", "foreign_port", "foreign_other")},
        "xdp_ns_per_pkt": rounded(xdp.get("ns_per_pkt"), 1),
        # every identity's, xdp_vs_driver's too (which has no column of its own)
        "unexplained": sum(abs(v) for v in residuals.values()),
        **{f"unexplained_{n}": residuals.get(n) for n in IDENTITIES},
    }


# -- per source -----------------------------------------------------------------------

def _matched_of(ifaces: dict, run_id) -> int:
    """Packets of one run id XDP matched, over every DUT interface."""
    return sum(count((blk.get("matched_by_run") or {}).get(str(run_id))) for blk in ifaces.values())


def source_rows(key: dict, arm: dict, gathered: dict, sources: list, gens: list, checks: list,
                collector: str, iface_rows: list):
    """([one row per source], [its identities, tagged with the source])."""
    ifaces = gathered.get("interfaces") or {}
    by_iface_dut_loss = {r["interface"]: r["nic_drops"] for r in iface_rows}
    sources_per_iface = {}
    for src in sources:
        sources_per_iface[src["dut_iface"]] = sources_per_iface.get(src["dut_iface"], 0) + 1
    rows, identities = [], []
    for k, (src, gen) in enumerate(zip(sources, gens)):
        counted = source_loss_counters(gen)
        # The DUT interface's drops belong to this source only when it is the interface's only
        # one; read at arm and disarm, they span the warm-up and the window.
        if sources_per_iface.get(src["dut_iface"]) == 1:
            counted["both"]["dut_nic"] = by_iface_dut_loss.get(src["dut_iface"], 0)
        check = next((c for c in checks if c.get("source") == src["name"]), {})
        row, residuals = _source_row(key, arm["run_id"] + k, src, gen, ifaces, counted, check, collector)
        rows.append(row)
        identities += [{"name": name, "source": src["name"], "residual": value}
                       for name, value in residuals.items()]
    return rows, identities


def _source_residuals(matched: int, gen: dict, dropped: int, check: dict, collector: str,
                      user: bool) -> dict:
    diff = matched - count(check.get("matched"))
    res = {"matched_over_sent": max(0, matched - gen["sent"]),
           # tcpdump's own drops on the interface may explain a capture short of XDP
           "xdp_vs_capture": max(0, diff - dropped) if diff > 0 else diff}
    if collector == "off" or user:
        res = {"matched_over_sent": 0 if collector == "off" else res["matched_over_sent"],
               "xdp_vs_capture": 0}
    return res


def _source_row(key: dict, run: int, src: dict, gen: dict, ifaces: dict, counted: dict, check: dict,
                collector: str):
    """(the source's row, its residuals by identity)."""
    matched = _matched_of(ifaces, run)
    # A user's program may drop what it is handed: the capture is checked against XDP
    # per interface then (its verdicts are counted per interface, not per run).
    user = any(b.get("program") is not None for b in ifaces.values())
    lost = max(0, gen["sent"] - matched) if collector != "off" else None
    warm = gen.get("warmup") or {}
    warm_lost = (max(0, count(warm.get("sent")) - _matched_of(ifaces, warm["run_id"]))
                 if warm and collector != "off" else None)
    # Each phase's loss located on its own (counts.locate_phases).
    located, warm_located = locate_phases(lost, warm_lost, counted)
    dropped = count((ifaces.get(src["dut_iface"], {}).get("tcpdump") or {}).get("dropped_by_kernel"))
    res = _source_residuals(matched, gen, dropped, check, collector, user)
    achieved = achieved_pps(gen)
    src_target = gen.get("target_pps") or 0
    return {
        **key, "source": src["name"], "host": src["host"], "address": src.get("address"),
        "dut_iface": src["dut_iface"], "run_id": run, "source_pps": src_target,
        "scheduled": gen["scheduled"], "sent": gen["sent"], "send_errors": gen["send_errors"],
        "not_offered": not_offered(gen), "warmup_sent": warmup_sent(gen), "warmup_lost": warm_lost,
        "achieved_pps": rounded(achieved, 1),
        "rate_error_pct": rounded((achieved - src_target) / src_target * 100.0, 3) if src_target else None,
        "rate_sustained": rate_sustained(gen), "xdp_matched": matched if collector != "off" else None,
        "lost": lost, "loss_where": loss_where(located) if lost else "",
        **located, **warmup_located(warm_located),
        "capture_matched": check.get("matched"), "capture_unique": check.get("unique"),
        "capture_missing": check.get("missing"), "capture_duplicated": check.get("duplicated"),
        "capture_reordered": check.get("reordered"),
        "unexplained": sum(abs(v) for v in res.values()),
        "unexplained_matched_over_sent": res["matched_over_sent"],
        "unexplained_xdp_vs_capture": res["xdp_vs_capture"],
    }, res


# -- the trial ------------------------------------------------------------------------

# The observers were busy when, together, they kept at least this share of one CPU busy
# (agent_cpu_pct + capture_cpu_pct, % of one CPU): a receive queue is served by one CPU, so
# what they take is measured against one, whatever the DUT's size.  See observers_busy.
OBSERVERS_BUSY_PCT = 25.0

def total_row(settings: dict, trial: dict, arm: dict, gens: list, gathered: dict, checks: list,
              collector: str, iface_rows: list, source_rows: list, stability: dict) -> dict:
    """The trial's summary row (accounting.COLUMNS): the interfaces' and sources' rows
    added up, beside what only the trial as a whole has (latency, rates, settings)."""
    feats = [b.get("features") or {} for b in (gathered.get("interfaces") or {}).values()]
    latency = _latency(gens, gathered, feats, collector)
    achieved = sum(achieved_pps(g) for g in gens)
    return {
        **_counted_columns(settings, trial, gens, gathered, iface_rows, source_rows, achieved, latency),
        **_where_lost_columns(iface_rows, source_rows, gathered.get("observers")),
        **_detail_columns(settings, trial, arm, gens, iface_rows, source_rows, checks, collector, feats,
                          achieved, latency, gathered.get("send_gap_ns")),
        **_settings_columns(settings, trial, arm, gens, iface_rows, source_rows, collector, stability),
        **program_columns(settings, arm, gathered),
    }


def _latency(gens: list, gathered: dict, feats: list, collector: str) -> tuple:
    """(p50 in us, p99 in us, how they were measured or why not)."""
    same_clock = bool(gens) and all(g.get("boot_id") and g.get("boot_id") == gathered.get("boot_id")
                                    for g in gens)
    lat_blocks = [f.get("latency_ns") for f in feats]
    p50, p99 = interfaces_percentile(lat_blocks, 50), interfaces_percentile(lat_blocks, 99)
    no_send_time = any(g.get("backend") == "trafgen" for g in gens)
    if same_clock and p50 is not None and not no_send_time:
        method = ("send timestamp in the payload (CLOCK_MONOTONIC before the send call on the source) to "
                  "bpf_ktime_get_ns() in XDP on the DUT; one kernel, one clock; percentiles from a "
                  "log-linear histogram (3 significant digits)")
        return p50 / 1000.0, p99 / 1000.0, method
    method = ("not available: trafgen writes no send time into its packets" if no_send_time
              else "not available: the source and the DUT do not share a clock" if not same_clock
              else "not available: no feature records received" if collector == "features"
              else f"not available: collector {collector} exports no records")
    return None, None, method


def _counted_columns(settings, trial, gens, gathered, iface_rows, source_rows, achieved, latency) -> dict:
    """The contract's columns: the packet counted at each stage, its rate, cost and latency."""
    target = trial["target_pps"]
    xdps = [b.get("xdp") or {} for b in (gathered.get("interfaces") or {}).values()]
    run_time = sum(count(x.get("run_time_ns")) for x in xdps)
    run_cnt = sum(count(x.get("run_cnt")) for x in xdps)
    p50, p99, _ = latency
    return {
        **{k: trial[k] for k in ("experiment", "target_pps", "packet_size", "repeat")},
        "duration_s": settings["duration_s"],
        "sent": sum(g["sent"] for g in gens),
        "achieved_pps": rounded(achieved, 1),
        "rate_error_pct": rounded((achieved - target) / target * 100.0, 3),
        "nic_rx": total(iface_rows, "nic_rx"),
        # the measured run ids' (as the sources' and the interfaces' rows count it)
        "xdp_matched": total(source_rows, "xdp_matched"),
        "features_received": total(iface_rows, "features_received"),
        "ringbuf_drops": total(iface_rows, "ringbuf_drops"),
        "tcpdump_captured": total(iface_rows, "tcpdump_captured"),
        "tcpdump_dropped": total(iface_rows, "tcpdump_dropped"),
        "lost": total(source_rows, "lost"),
        "unexplained": (sum(r["unexplained"] for r in iface_rows)
                        + sum(abs(s["unexplained_xdp_vs_capture"] or 0) for s in source_rows)),
        "xdp_ns_per_pkt": rounded(run_time / run_cnt, 1) if run_cnt else None,
        "latency_p50_us": rounded(p50, 2),
        "latency_p99_us": rounded(p99, 2),
        "softirq_cpu_pct": rounded((gathered.get("softirq") or {}).get("cpu_pct"), 2),
    }


def located_totals(iface_rows: list, source_rows: list) -> tuple:
    """(the window's, the warm-up's or None) located loss of the trial: the sources' added
    up, and the drops of a DUT interface shared by several sources (no source's own) given
    to what is still unlocated, the warm-up's first (counts.locate_phases's rule)."""
    window = {c: total(source_rows, c) or 0 for c in LOCATED}
    warm = None
    if total(source_rows, "warmup_lost") is not None:
        warm = {c: total(source_rows, f"warmup_{c}") or 0 for c in LOCATED}
    shared = [r for r in iface_rows if sum(1 for s in source_rows if s["dut_iface"] == r["interface"]) > 1]
    span = sum(r["nic_drops"] for r in shared)
    for phase in (warm, window):
        if phase is not None and span:
            take = min(phase["lost_unlocated"], span)
            phase["lost_dut_nic"] += take
            phase["lost_unlocated"] -= take
            span -= take
    window["located_excess"] += span
    return window, warm


def observers_busy(located: dict, observers: dict | None):
    """Whether the DUT lost packets at its receive side while its observers were busy: loss
    located at the DUT NIC (lost_dut_nic; on veth also lost_src_nic, where veth drops what
    the DUT's receive ring has no room for) and the agent and the capture together using at
    least OBSERVERS_BUSY_PCT % of one CPU over the window.  None when the agent did not
    report its observers' CPU (an older agent, or too short a window to sample)."""
    obs = observers or {}
    agent, capture = obs.get("agent_cpu_pct"), obs.get("capture_cpu_pct")
    if agent is None:
        return None
    veth = "veth" in (obs.get("drivers") or {}).values()
    at_rx = count(located.get("lost_dut_nic")) + (count(located.get("lost_src_nic")) if veth else 0)
    return at_rx > 0 and agent + (capture or 0) >= OBSERVERS_BUSY_PCT


def _where_lost_columns(iface_rows: list, source_rows: list, observers: dict | None) -> dict:
    """Where the window's loss happened (the sources' located loss added up), the DUT's
    observers' CPU beside it, and traffic that was not ours."""
    lost = total(source_rows, "lost")
    located, _ = located_totals(iface_rows, source_rows)
    obs = observers or {}
    return {
        "rate_sustained": all(s["rate_sustained"] for s in source_rows),
        "not_offered": sum(s["not_offered"] for s in source_rows),
        "loss_where": loss_where(located) if lost else "",
        **located,
        "agent_cpu_pct": rounded(obs.get("agent_cpu_pct"), 2),
        "capture_cpu_pct": rounded(obs.get("capture_cpu_pct"), 2),
        "observers_busy": observers_busy(located, observers),
        **{c: total(iface_rows, c) for c in ("foreign_rx", "foreign_arp", "foreign_port", "foreign_other")},
    }


def _modes(iface_rows: list) -> list:
    return sorted({r["xdp_mode"] for r in iface_rows if r.get("xdp_mode")})


def _detail_columns(settings, trial, arm, gens, iface_rows, source_rows, checks, collector, feats,
                    achieved, latency, send_gaps=None) -> dict:
    """More detail on the same trial: its sending, gaps, throughput, capture and identities."""
    size, target = trial["packet_size"], trial["target_pps"]
    gap_blocks = [f.get("gap_ns") for f in feats]
    g50, g99 = interfaces_percentile(gap_blocks, 50), interfaces_percentile(gap_blocks, 99)
    # from the feature records kept (steps.results, featurefile.SendGaps); trafgen writes no
    # send time
    send = None if any(g.get("backend") == "trafgen" for g in gens) else send_gaps
    s50, s99 = interfaces_percentile([send], 50), interfaces_percentile([send], 99)
    residual = {}
    for r in iface_rows:
        for n in IDENTITIES:
            if r.get(f"unexplained_{n}") is not None:
                residual[n] = residual.get(n, 0) + r[f"unexplained_{n}"]
    return {
        "status": "ok" if all(s["rate_sustained"] for s in source_rows) else "source_limited",
        # the source could not offer the target: a source fell short of its rate, or (a pool's
        # job, xdplab.steps.pooled) the testbed's calibrated ceiling is below it
        "source_limited": not all(s["rate_sustained"] for s in source_rows),
        "testbed": settings.get("testbed", "embedded"),
        # which testbed ran it: a pool's entry name (config `testbeds`), else the kind
        "testbed_name": settings.get("testbed_name") or settings.get("testbed", "embedded"),
        "sources": len(source_rows),
        "interfaces": len(iface_rows),
        "xdp_mode": settings.get("xdp_mode") or "/".join(_modes(iface_rows)) or None,
        "threads": settings["threads"],
        "scheduled": sum(g["scheduled"] for g in gens),
        "send_errors": sum(g["send_errors"] for g in gens),
        "max_lag_us": rounded(max((g.get("max_lag_us") or 0) for g in gens), 1),
        "gap_p50_us": rounded(g50 / 1000.0, 2) if g50 is not None else None,
        "gap_p99_us": rounded(g99 / 1000.0, 2) if g99 is not None else None,
        "send_gap_p50_us": rounded(s50 / 1000.0, 2) if s50 is not None else None,
        "send_gap_p99_us": rounded(s99 / 1000.0, 2) if s99 is not None else None,
        "ideal_gap_us": rounded(1e6 / target, 3),
        "frame_size": frame_bytes(size),
        "throughput_payload_mbps": rounded(achieved * size * 8 / 1e6, 3),
        "throughput_l2_mbps": rounded(achieved * frame_bytes(size) * 8 / 1e6, 3),
        "throughput_wire_mbps": rounded(achieved * wire_bytes(size) * 8 / 1e6, 3),
        "xdp_seen": total(iface_rows, "xdp_seen"),
        "features_for_run": sum(count(f.get("for_run")) for f in feats) if collector == "features" else None,
        "capture_missing": sum(count(c.get("missing")) for c in checks),
        "capture_duplicated": sum(count(c.get("duplicated")) for c in checks),
        "capture_reordered": sum(count(c.get("reordered")) for c in checks),
        **{f"unexplained_{n}": residual.get(n) for n in IDENTITIES},
        "latency_method": latency[2],
        "run_id": arm["run_id"],
        "prog_tag": arm.get("prog_tag"),
    }


def send_path_used(gens) -> str | None:
    """The path the generators took (auto resolved on each source: sourcehost/cli.resolve_auto),
    sources that differ joined with "/"; None from a report without it."""
    paths = [g.get("send_path") for g in gens if g.get("send_path")]
    return "/".join(dict.fromkeys(paths)) or None


def _settings_columns(settings, trial, arm, gens, iface_rows, source_rows, collector, stability) -> dict:
    """The trial's settings (its grid point and the rest), its warm-up and its stability."""
    return {
        "point": trial.get("point"),
        "collector": collector,
        "pattern": settings.get("pattern", "constant"),
        "xdp_mode_in_effect": "/".join(_modes(iface_rows)) or None,
        "warmup_s": settings.get("warmup_s", 0),
        "warmup_sent": sum(warmup_sent(g) for g in gens),
        "warmup_lost": total(source_rows, "warmup_lost"),
        **warmup_located(located_totals(iface_rows, source_rows)[1]),
        "port": settings.get("port"),
        "send_path": settings.get("send_path", "auto"),
        "send_path_used": send_path_used(gens),
        "generator": settings.get("generator", "python"),
        "burst_size": settings.get("burst_size") if settings.get("pattern") == "burst" else None,
        "seed": settings.get("seed") if settings.get("pattern") == "poisson" else None,
        "unstable": stability.get("unstable"),
        "rx_rate_max_dev_pct": stability.get("max_dev_pct"),
        "run_index": (arm.get("place_in_run") or {}).get("index"),
    }
