"""Close the books on one trial: every packet the generators sent is accounted for.

Pure functions (no I/O).  Inputs are a trial's step records: the arm reply, the
resolved sources (connectivity), each source's generator report, the capture
verification, and the agent's results at disarm (one block per DUT interface).
Outputs are one summary row per trial (the columns docs/method.md documents), one row
per (trial, source) and per (trial, interface), and the accounting identities with
both sides shown.  A side that does not match its other side is never hidden:
each residual is reported, and their absolute sum is `unexplained`.

The rows are built in trialrows.py, from the arithmetic in counts.py (where a lost
packet went, percentiles) and the program under test's verdicts in verdicts.py.
"""

from __future__ import annotations

from . import timeseries
from .counts import wire_bytes  # noqa: F401  (xdplab.ndr reads it here)
from .trialrows import interface_rows, source_rows, total_row
from .verdicts import PROGRAM_COLUMNS

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
    # The DUT's observers (agent, capture): their CPU, and whether they were busy when the DUT lost.
    "agent_cpu_pct", "capture_cpu_pct", "observers_busy",
    "foreign_rx", "foreign_arp", "foreign_port", "foreign_other",
    # More detail, same trial.
    "status", "source_limited", "testbed", "testbed_name", "sources", "interfaces", "xdp_mode", "threads", "scheduled",
    "send_errors", "max_lag_us",
    "gap_p50_us", "gap_p99_us", "send_gap_p50_us", "send_gap_p99_us", "ideal_gap_us",
    "frame_size", "throughput_payload_mbps", "throughput_l2_mbps", "throughput_wire_mbps",
    "xdp_seen", "features_for_run", "capture_missing", "capture_duplicated", "capture_reordered",
    "unexplained_nic_vs_xdp", "unexplained_seen_vs_classified", "unexplained_xdp_vs_features",
    "unexplained_passed_vs_tcpdump", "unexplained_matched_over_sent",
    "latency_method", "run_id", "prog_tag",
    # The trial's settings (its grid point and the rest), and its warm-up.
    "point", "collector", "pattern", "xdp_mode_in_effect", "warmup_s", "warmup_sent",
    "warmup_lost", "warmup_lost_src_stack", "warmup_lost_src_qdisc", "warmup_lost_src_nic",
    "warmup_lost_dut_nic", "warmup_lost_unlocated", "warmup_located_excess",
    "port", "send_path", "send_path_used", "generator", "burst_size", "seed",
    "unstable", "rx_rate_max_dev_pct", "run_index",
]
# Last, the program under test when it is the user's (program != collector): its verdicts
# as the DUT's driver counted them over the armed window, its own cost, its identity.
COLUMNS += PROGRAM_COLUMNS

SOURCE_COLUMNS = [
    "experiment", "target_pps", "packet_size", "repeat", "point", "source", "host", "address",
    "dut_iface", "run_id", "source_pps", "scheduled", "sent", "send_errors", "not_offered",
    "warmup_sent", "warmup_lost",
    "achieved_pps", "rate_error_pct", "rate_sustained", "xdp_matched", "lost", "loss_where",
    "lost_src_stack", "lost_src_qdisc", "lost_src_nic", "lost_dut_nic", "lost_unlocated",
    "located_excess", "warmup_lost_src_stack", "warmup_lost_src_qdisc", "warmup_lost_src_nic",
    "warmup_lost_dut_nic", "warmup_lost_unlocated", "warmup_located_excess",
    "capture_matched", "capture_unique", "capture_missing",
    "capture_duplicated", "capture_reordered", "unexplained",
    "unexplained_matched_over_sent", "unexplained_xdp_vs_capture",
]

INTERFACE_COLUMNS = [
    "experiment", "target_pps", "packet_size", "repeat", "point", "interface", "xdp_mode", "sent",
    "warmup_sent", "nic_rx", "xdp_seen", "xdp_matched", "warmup_xdp_matched", "features_received",
    "ringbuf_drops", "tcpdump_captured", "tcpdump_dropped", "lost", "warmup_lost", "nic_drops",
    "foreign_rx", "foreign_arp", "foreign_port", "foreign_other", "xdp_ns_per_pkt",
    "unexplained", "unexplained_nic_vs_xdp", "unexplained_seen_vs_classified",
    "unexplained_xdp_vs_features", "unexplained_passed_vs_tcpdump",
    "unexplained_matched_over_sent",
]


def summarize(settings: dict, trial: dict, arm: dict, sources: list[dict], gens: list[dict],
              capture: dict, gathered: dict) -> dict:
    """{"row": summary row (COLUMNS), "sources": [SOURCE_COLUMNS rows], "interfaces":
    [INTERFACE_COLUMNS rows], "identities": [every identity, tagged with its interface or
    source], "timeseries": [one row per second of the measured window]}."""
    collector = gathered.get("collector") or arm.get("collector") or "features"
    key = {"experiment": trial["experiment"], "target_pps": trial["target_pps"],
           "packet_size": trial["packet_size"], "repeat": trial["repeat"], "point": trial.get("point")}
    checks = capture.get("checks") or []
    iface_rows, iface_identities = interface_rows(key, arm, gathered, sources, gens, collector)
    src_rows, src_identities = source_rows(key, arm, gathered, sources, gens, checks, collector, iface_rows)
    seconds = timeseries.per_second(gathered, gens, settings["duration_s"],
                                    warmup=bool(settings.get("warmup_s")))
    stable = timeseries.stability(seconds, settings.get("stability_pct", 5))
    row = total_row(settings, trial, arm, gens, gathered, checks, collector, iface_rows, src_rows, stable)
    assert list(row) == COLUMNS, "summary row and COLUMNS disagree"
    return {"row": row, "sources": src_rows, "interfaces": iface_rows,
            "identities": iface_identities + src_identities, "timeseries": seconds}
