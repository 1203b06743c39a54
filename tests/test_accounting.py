"""Closing the books on a trial: identities, residuals, lost, where it was lost, and
traffic that was not ours.  Pure arithmetic on synthetic step records (no root)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from xdplab import accounting, counts, trialrows, verdicts  # noqa: E402

SETTINGS = {"duration_s": 5, "threads": 2, "testbed": "embedded"}
TRIAL = {"experiment": "t", "target_pps": 10000, "packet_size": 1458, "repeat": 0}
RUN = 7


def gen(sent=50000, scheduled=50000, pps=10000, errors=None, counters=None, **over):
    g = {"sent": sent, "scheduled": scheduled, "send_errors": scheduled - sent if errors is None else errors,
         "target_pps": pps, "achieved_pps": sent / 5.0, "max_lag_us": 100.0, "boot_id": "b1",
         "source_counters": {"delta": counters or {}}}
    g.update(over)
    return g


def iface(matched=50000, seen=None, nic=None, features=None, rb_full=0, captured=None, dropped=0,
          foreign=(0, 0, 0), parse_errors=0, by_run=None, nic_drops=None, lat=(31000, 95500)):
    seen = matched + sum(foreign) + parse_errors if seen is None else seen
    features = matched - rb_full if features is None else features
    return {
        "xdp_mode_in_effect": "native",
        "nic": dict({"rx_packets": seen if nic is None else nic}, **(nic_drops or {})),
        "xdp": {"seen": seen, "matched": matched, "features": features, "ringbuf_full": rb_full,
                "parse_errors": parse_errors, "foreign_arp": foreign[0], "foreign_port": foreign[1],
                "foreign_other": foreign[2], "run_time_ns": seen * 210, "run_cnt": seen,
                "ns_per_pkt": 210.0},
        "matched_by_run": by_run if by_run is not None else {str(RUN): matched},
        "features": {"received": features, "for_run": features,
                     "latency_ns": {"count": features, "p50": lat[0], "p99": lat[1],
                                    "histogram": {"counts": [[lat[0], features // 2 + 1],
                                                             [lat[1], features // 2]]}},
                     "gap_ns": {"count": features, "p50": 100000, "p99": 180000}},
        "tcpdump": {"captured": matched - dropped if captured is None else captured,
                    "dropped_by_kernel": dropped},
    }


SRC = {"name": "src0", "host": "10.201.1.2", "address": "10.201.0.1", "dut_iface": "xl-dut0"}


def summarize(gens=None, ifaces=None, sources=None, checks=None, boot="b1"):
    gens = gens or [gen()]
    sources = sources or [SRC]
    ifaces = ifaces or {"xl-dut0": iface()}
    if checks is None:
        checks = []
        for k, s in enumerate(sources):
            m = sum((b["matched_by_run"] or {}).get(str(RUN + k), 0) for b in ifaces.values())
            dropped = ifaces[s["dut_iface"]]["tcpdump"]["dropped_by_kernel"]
            checks.append({"source": s["name"], "interface": s["dut_iface"], "matched": m - dropped,
                           "unique": m - dropped, "missing": 0, "duplicated": 0, "reordered": 0})
    arm = {"run_id": RUN, "prog_tag": "abc"}
    gathered = {"boot_id": boot, "collector": "features", "interfaces": ifaces,
                "softirq": {"cpu_pct": 1.234}}
    return accounting.summarize(SETTINGS, TRIAL, arm, sources, gens, {"checks": checks}, gathered)


def test_a_clean_trial_closes_with_nothing_lost_or_unexplained():
    out = summarize()
    row = out["row"]
    assert list(row) == accounting.COLUMNS
    assert (row["sent"], row["nic_rx"], row["xdp_matched"], row["tcpdump_captured"]) == (50000,) * 4
    assert row["lost"] == 0 and row["unexplained"] == 0 and row["loss_where"] == ""
    assert row["achieved_pps"] == 10000.0 and row["rate_error_pct"] == 0.0
    assert row["rate_sustained"] is True and row["status"] == "ok"
    assert (row["latency_p50_us"], row["latency_p99_us"]) == (31.0, 95.5)
    assert (row["gap_p50_us"], row["gap_p99_us"], row["ideal_gap_us"]) == (100.0, 180.0, 100.0)
    assert row["throughput_payload_mbps"] == 116.64
    assert row["throughput_wire_mbps"] == round(10000 * (1458 + 66) * 8 / 1e6, 3)
    assert [list(r) for r in out["sources"]] == [accounting.SOURCE_COLUMNS]
    assert [list(r) for r in out["interfaces"]] == [accounting.INTERFACE_COLUMNS]


def test_network_loss_is_lost_not_unexplained_and_unlocated_without_counters():
    row = summarize(ifaces={"xl-dut0": iface(matched=49000)})["row"]
    assert row["lost"] == 1000 and row["unexplained"] == 0
    assert row["lost_unlocated"] == 1000 and row["loss_where"] == "unlocated 1000"


def test_loss_is_located_in_path_order_without_double_counting():
    # The qdisc dropped 300 (Udp SndbufErrors counts them too), the source NIC 200,
    # the DUT NIC 100; 50 went nowhere a counter sees.
    g = gen(counters={"qdisc_drops": 300, "udp_sndbuf_errors": 500, "nic_tx_dropped": 200,
                      "arp_unresolved_discards": 0})
    ifs = {"xl-dut0": iface(matched=50000 - 650, nic_drops={"rx_dropped": 100})}
    out = summarize(gens=[g], ifaces=ifs)
    row = out["row"]
    assert row["lost"] == 650
    assert (row["lost_src_stack"], row["lost_src_qdisc"], row["lost_src_nic"], row["lost_dut_nic"],
            row["lost_unlocated"], row["located_excess"]) == (0, 300, 200, 100, 50, 0)
    assert row["loss_where"] == "src_qdisc 300, src_nic 200, dut_nic 100, unlocated 50"
    assert out["sources"][0]["lost_src_qdisc"] == 300


def test_counters_that_saw_more_than_was_lost_are_said_not_hidden():
    g = gen(counters={"nic_tx_dropped": 1299})
    ifs = {"xl-dut0": iface(matched=50000 - 1299, nic_drops={"rx_dropped": 1299})}
    row = summarize(gens=[g], ifaces=ifs)["row"]
    assert row["lost_src_nic"] == 1299 and row["lost_dut_nic"] == 0
    assert row["lost_unlocated"] == 0 and row["located_excess"] == 1299


def test_neighbour_drops_are_the_source_stack():
    g = gen(counters={"arp_unresolved_discards": 40, "udp_sndbuf_errors": 0})
    row = summarize(gens=[g], ifaces={"xl-dut0": iface(matched=50000 - 40)})["row"]
    assert row["lost_src_stack"] == 40 and row["lost_unlocated"] == 0


def test_foreign_traffic_is_reported_not_unexplained():
    row = summarize(ifaces={"xl-dut0": iface(foreign=(2, 300, 5))})["row"]
    assert (row["foreign_rx"], row["foreign_arp"], row["foreign_port"], row["foreign_other"]) == (307, 2, 300, 5)
    assert row["unexplained"] == 0 and row["lost"] == 0


def test_ring_buffer_drops_close_the_feature_identity():
    row = summarize(ifaces={"xl-dut0": iface(rb_full=5000)})["row"]
    assert row["ringbuf_drops"] == 5000 and row["unexplained"] == 0


def test_tcpdump_drops_close_the_capture_identity():
    row = summarize(ifaces={"xl-dut0": iface(dropped=10000)})["row"]
    assert row["unexplained"] == 0


def test_what_does_not_close_is_reported_per_identity():
    checks = [{"source": "src0", "interface": "xl-dut0", "matched": 49990, "unique": 49990,
               "missing": 10, "duplicated": 0, "reordered": 0}]
    out = summarize(ifaces={"xl-dut0": iface(nic=50010, captured=49990)}, checks=checks)
    row = out["row"]
    assert row["unexplained_nic_vs_xdp"] == 10 and row["unexplained_passed_vs_tcpdump"] == 10
    assert row["unexplained"] == 30  # and the source's capture is 10 short of XDP
    assert out["sources"][0]["unexplained_xdp_vs_capture"] == 10


def test_a_source_that_could_not_keep_up_is_marked():
    g = gen(sent=40000, errors=0, achieved_pps=8000.0, not_offered=10000, rate_sustained=False)
    row = summarize(gens=[g], ifaces={"xl-dut0": iface(matched=40000)})["row"]
    assert row["rate_sustained"] is False and row["status"] == "source_limited"
    assert row["not_offered"] == 10000 and row["lost"] == 0


def test_latency_is_empty_without_a_shared_clock():
    row = summarize(boot="other")["row"]
    assert row["latency_p50_us"] is None and "do not share a clock" in row["latency_method"]


def test_two_sources_two_interfaces_close_per_source_and_per_interface():
    sources = [SRC, dict(SRC, name="src1", host="10.204.1.6", address="10.204.0.5", dut_iface="xl-dut1")]
    gens = [gen(sent=25000, scheduled=25000, pps=5000), gen(sent=25000, scheduled=25000, pps=5000)]
    ifaces = {"xl-dut0": iface(matched=25000, by_run={str(RUN): 25000}),
              "xl-dut1": iface(matched=24990, by_run={str(RUN + 1): 24990}, foreign=(1, 0, 0))}
    out = summarize(gens=gens, ifaces=ifaces, sources=sources)
    row = out["row"]
    assert (row["sent"], row["xdp_matched"], row["lost"], row["unexplained"]) == (50000, 49990, 10, 0)
    assert (row["sources"], row["interfaces"], row["foreign_rx"]) == (2, 2, 1)
    assert [s["lost"] for s in out["sources"]] == [0, 10]
    assert [i["sent"] for i in out["interfaces"]] == [25000, 25000]
    assert [i["unexplained"] for i in out["interfaces"]] == [0, 0]
    # Percentiles over both interfaces come from the merged histograms.
    assert row["latency_p50_us"] == 31.0


def test_merged_percentile_is_nearest_rank():
    h1 = {"counts": [[10, 1], [20, 1]]}
    h2 = {"buckets": [[29, 30, 2]]}
    assert counts.merged_percentile([h1, h2], 50) == 20
    assert counts.merged_percentile([h1, h2], 99) == 30
    assert counts.merged_percentile([], 50) is None


def test_a_users_programs_verdicts_take_aborted_out_of_the_drivers_drops():
    """veth counts XDP_ABORTED (and unknown actions) among its XDP drops; the
    xdp_exception tracepoint's count tells them apart, and the passed packets are what
    is left of what XDP ran on."""
    blk = {"program": {"driver_xdp": {"xdp_packets": 1000, "xdp_drop": 300, "xdp_tx": 100,
                                      "xdp_tx_errors": 5, "xdp_redirect": 0},
                       "exceptions": {"aborted": 40, "invalid": 2, "tx": 5, "redirect": 0}}}
    v = verdicts.driver_verdicts(blk)
    assert v == {"seen": 1000, "drop": 258, "aborted": 42, "tx": 100, "tx_errors": 5,
                 "redirect": 0, "pass": 595}
    assert verdicts.driver_verdicts({"program": {"driver_xdp": None}}) is None
    # Without the exception counts (an older agent), aborted frames stay among the drops.
    del blk["program"]["exceptions"]
    assert verdicts.driver_verdicts(blk)["drop"] == 300
    # What passed XDP is what tcpdump saw: the identity subtracts every other verdict.
    iface = dict(blk, xdp={"seen": 1000, "matched": 1000, "chain_missed": 0},
                 tcpdump={"captured": 595, "dropped_by_kernel": 0})
    iface["program"]["exceptions"] = {"aborted": 40, "invalid": 2}
    rows = {r["name"]: r for r in trialrows.interface_identities(iface, 1000, "features")}
    assert rows["passed_vs_tcpdump"]["residual"] == 0 and rows["xdp_vs_driver"]["residual"] == 0
    assert "prog_aborted" in rows["passed_vs_tcpdump"]["left"]


# ---------------------------------------------------------------- the warm-up and the window

WARM_RUN = RUN + 2  # a warm-up's run id (run_id + sources + k)


def warm_gen(sent, warm_sent, window_counters=None, warmup_counters=None, k=0, **over):
    """A generator report with a warm-up whose counters are split at the window's start."""
    window_counters, warmup_counters = window_counters or {}, warmup_counters or {}
    both = {c: window_counters.get(c, 0) + warmup_counters.get(c, 0)
            for c in set(window_counters) | set(warmup_counters)}
    g = gen(sent=sent, scheduled=sent, pps=sent // 5, **over)
    g["warmup"] = {"run_id": WARM_RUN + k, "sent": warm_sent, "scheduled": warm_sent, "send_errors": 0}
    g["source_counters"] = {"delta": both, "window_delta": window_counters, "warmup_delta": warmup_counters}
    return g


def sums_agree(out, columns):
    """Each column of the summary row equals its sum over sources.csv's and ifaces.csv's rows."""
    row = out["row"]
    for col in columns:
        for table in ("sources", "interfaces"):
            rows = out[table]
            if rows and col in rows[0]:
                assert sum(r[col] or 0 for r in rows) == (row[col] or 0), (table, col, rows, row)


def located_add_up(r):
    """In one row, each phase's location columns add up to its loss."""
    places = ("lost_src_stack", "lost_src_qdisc", "lost_src_nic", "lost_dut_nic", "lost_unlocated")
    assert sum(r[c] for c in places) == r["lost"], r
    if r["warmup_lost"] is not None:
        assert sum(r[f"warmup_{c}"] for c in places) == r["warmup_lost"], r


def test_each_phases_loss_is_located_with_that_phases_counters():
    # A tbf cap: the qdisc drops in both phases; the window's columns are the window's.
    g = warm_gen(25000, 5000, window_counters={"qdisc_drops": 14873, "udp_sndbuf_errors": 14873},
                 warmup_counters={"qdisc_drops": 3769, "udp_sndbuf_errors": 3769})
    ifs = {"xl-dut0": iface(matched=(25000 - 14873) + (5000 - 3769),
                            by_run={str(RUN): 25000 - 14873, str(WARM_RUN): 5000 - 3769})}
    out = summarize(gens=[g], ifaces=ifs)
    row = out["row"]
    assert (row["lost"], row["lost_src_qdisc"], row["lost_src_stack"], row["located_excess"]) == (14873, 14873, 0, 0)
    assert (row["warmup_lost"], row["warmup_lost_src_qdisc"], row["warmup_located_excess"]) == (3769, 3769, 0)
    assert row["loss_where"] == "src_qdisc 14873" and row["unexplained"] == 0
    for r in [row] + out["sources"]:
        located_add_up(r)


def test_dut_drops_span_both_phases_and_go_to_the_warm_up_first():
    # The agent reads the DUT's NIC at arm and disarm only: 30 drops over both phases.
    g = warm_gen(25000, 5000)
    ifs = {"xl-dut0": iface(matched=24980 + 4990, by_run={str(RUN): 24980, str(WARM_RUN): 4990},
                            nic_drops={"rx_dropped": 30})}
    out = summarize(gens=[g], ifaces=ifs)
    row = out["row"]
    assert (row["warmup_lost"], row["warmup_lost_dut_nic"], row["warmup_lost_unlocated"]) == (10, 10, 0)
    assert (row["lost"], row["lost_dut_nic"], row["lost_unlocated"], row["located_excess"]) == (20, 20, 0, 0)
    assert out["interfaces"][0]["nic_drops"] == 30 and row["unexplained"] == 0
    located_add_up(row)


def test_an_older_report_without_the_windows_start_locates_the_warm_up_first():
    g = warm_gen(25000, 5000)
    g["source_counters"] = {"delta": {"qdisc_drops": 50}}  # spans both phases
    ifs = {"xl-dut0": iface(matched=24970 + 4980, by_run={str(RUN): 24970, str(WARM_RUN): 4980})}
    row = summarize(gens=[g], ifaces=ifs)["row"]
    assert (row["warmup_lost_src_qdisc"], row["lost_src_qdisc"], row["lost_unlocated"]) == (20, 30, 0)
    located_add_up(row)


def test_without_a_warm_up_its_columns_are_empty():
    row = summarize(ifaces={"xl-dut0": iface(matched=49000)})["row"]
    assert row["warmup_lost"] is None and row["warmup_lost_src_qdisc"] is None
    assert row["warmup_located_excess"] is None


def test_every_table_counts_the_same_window_and_adds_up_to_the_summary():
    # Two sources, each 25,000 packets in the window after 5,000 in the warm-up; src1's
    # interface dropped 10 of the window's; the source counters split at the window's start.
    sources = [SRC, dict(SRC, name="src1", host="10.204.1.6", address="10.204.0.5", dut_iface="xl-dut1")]
    gens = [warm_gen(25000, 5000, window_counters={"qdisc_drops": 7}, warmup_counters={"qdisc_drops": 2}),
            warm_gen(25000, 5000, k=1)]
    ifaces = {"xl-dut0": iface(matched=24993 + 4998, by_run={str(RUN): 24993, str(WARM_RUN): 4998}),
              "xl-dut1": iface(matched=24990 + 5000, by_run={str(RUN + 1): 24990, str(WARM_RUN + 1): 5000},
                               nic_drops={"rx_missed_errors": 10})}
    out = summarize(gens=gens, ifaces=ifaces, sources=sources)
    row = out["row"]
    assert (row["sent"], row["warmup_sent"], row["xdp_matched"], row["lost"], row["warmup_lost"]) == (
        50000, 10000, 49983, 17, 2)
    assert [i["sent"] for i in out["interfaces"]] == [25000, 25000]
    assert [i["warmup_sent"] for i in out["interfaces"]] == [5000, 5000]
    assert [i["xdp_matched"] for i in out["interfaces"]] == [24993, 24990]
    assert [i["warmup_xdp_matched"] for i in out["interfaces"]] == [4998, 5000]
    sums_agree(out, ["sent", "warmup_sent", "xdp_matched", "lost", "warmup_lost", "nic_rx",
                     "features_received", "ringbuf_drops", "tcpdump_captured", "tcpdump_dropped",
                     "foreign_rx", "lost_src_stack", "lost_src_qdisc", "lost_src_nic", "lost_dut_nic",
                     "lost_unlocated", "located_excess", "warmup_lost_src_qdisc", "warmup_lost_dut_nic",
                     "warmup_lost_unlocated"])
    assert (row["lost_src_qdisc"], row["lost_dut_nic"], row["warmup_lost_src_qdisc"]) == (7, 10, 2)
    assert row["unexplained"] == 0
    for r in [row] + out["sources"]:
        located_add_up(r)
    for r in out["interfaces"]:
        assert r["lost"] == r["sent"] - r["xdp_matched"]
        assert r["warmup_lost"] == r["warmup_sent"] - r["warmup_xdp_matched"]


def test_a_shared_interfaces_drops_are_located_per_phase_on_the_trial():
    sources = [SRC, dict(SRC, name="src1", host="10.204.1.6", address="10.204.0.6")]
    gens = [warm_gen(25000, 5000), warm_gen(25000, 5000, k=1)]
    by_run = {str(RUN): 24995, str(RUN + 1): 24995, str(WARM_RUN): 4997, str(WARM_RUN + 1): 5000}
    ifaces = {"xl-dut0": iface(matched=sum(by_run.values()), by_run=by_run,
                               nic_drops={"rx_dropped": 13})}
    out = summarize(gens=gens, ifaces=ifaces, sources=sources)
    row = out["row"]
    assert (row["warmup_lost"], row["warmup_lost_dut_nic"], row["lost"], row["lost_dut_nic"]) == (3, 3, 10, 10)
    assert row["lost_unlocated"] == 0 and row["located_excess"] == 0 and row["unexplained"] == 0
    located_add_up(row)
    sums_agree(out, ["sent", "warmup_sent", "xdp_matched", "lost", "warmup_lost"])


def test_drops_the_boundary_put_on_the_wrong_side_move_back_only_as_far_as_it_allows():
    # The snapshot at the window's start ended after 40 of the window's packets were sent
    # (sent_by_then 5040 over both phases); 30 of them were dropped by the qdisc, counted
    # in the warm-up's delta.
    def trial(sent_by_then):
        g = warm_gen(25000, 5000, window_counters={"qdisc_drops": 14843},
                     warmup_counters={"qdisc_drops": 3769 + 30})
        g["source_counters"]["window_start"] = {"read_late_s": 0.004, "qdisc_backlog_packets": 0,
                                                "sent_by_then": sent_by_then}
        ifs = {"xl-dut0": iface(matched=(25000 - 14873) + (5000 - 3769),
                                by_run={str(RUN): 25000 - 14873, str(WARM_RUN): 5000 - 3769})}
        return summarize(gens=[g], ifaces=ifs)["row"]
    row = trial(5040)
    assert (row["lost"], row["lost_src_qdisc"], row["lost_unlocated"], row["located_excess"]) == (14873, 14873, 0, 0)
    assert (row["warmup_lost_src_qdisc"], row["warmup_located_excess"]) == (3769, 0)
    # Had no packet of the window been sent by then, nothing moves: said, not hidden.
    row = trial(5000)
    assert (row["lost_src_qdisc"], row["lost_unlocated"], row["warmup_located_excess"]) == (14843, 30, 30)
    located_add_up(row)


def test_a_tbf_trials_counters_read_one_after_the_other_locate_each_phase_exactly():
    # A trial's figures on the embedded testbed (tbf 40mbit, 10,000 pps for 2 s after a 1 s
    # warm-up): /proc/net/snmp was read ~4 ms before tc at the window's start, so the
    # qdisc's split runs 23 drops ahead of SndbufErrors'.
    def d(sndbuf, qdisc):
        return {"udp_sndbuf_errors": sndbuf, "ip_out_discards": sndbuf, "qdisc_drops": qdisc}
    g = warm_gen(20000, 10000)
    g["source_counters"] = {"delta": d(19989, 19989), "warmup_delta": d(6657, 6680),
                            "window_delta": d(13332, 13309),
                            "window_start": {"read_late_s": 0.004249, "qdisc_backlog_packets": 7,
                                             "sent_by_then": 10042}}
    ifs = {"xl-dut0": iface(matched=6667 + 3344, by_run={str(RUN): 6667, str(WARM_RUN): 3344})}
    row = summarize(gens=[g], ifaces=ifs)["row"]
    assert (row["lost"], row["lost_src_qdisc"], row["lost_src_stack"], row["located_excess"]) == (13333, 13333, 0, 0)
    assert (row["warmup_lost"], row["warmup_lost_src_qdisc"], row["warmup_located_excess"]) == (6656, 6656, 0)
    located_add_up(row)


def test_frames_a_full_veth_refused_on_the_packet_path_are_not_loss():
    # On the packet path (AF_PACKET, qdisc bypassed) a full veth ring fails the send itself
    # (ENOBUFS, a send error: never sent) or, when sendmmsg swallowed the error, the frame is
    # sent again; veth's tx_dropped counts every refusal (here 7,801 retried ones beyond the
    # errors, as measured in test_loss).  On the UDP path tx_dropped is loss (the send
    # returned success).
    refused_win, refused_warm, retried, dut_drops = 30744, 512, 7801, 1000
    for path, lost_nic in (("packet", 0), ("udp", refused_win)):
        extra = retried if path == "packet" else 0
        g = warm_gen(400000, 20000, window_counters={"nic_tx_dropped": refused_win + extra},
                     warmup_counters={"nic_tx_dropped": refused_warm + extra}, send_path=path,
                     errors=refused_win if path == "packet" else 0,
                     send_error_kinds={"ENOBUFS": refused_win} if path == "packet" else {})
        if path == "packet":
            g["warmup"].update(send_errors=refused_warm, send_error_kinds={"ENOBUFS": refused_warm})
        delivered = 400000 - dut_drops - (0 if path == "packet" else refused_win)
        warm_delivered = 20000 - (0 if path == "packet" else refused_warm)
        ifs = {"xl-dut0": iface(matched=delivered + warm_delivered,
                                by_run={str(RUN): delivered, str(WARM_RUN): warm_delivered},
                                nic_drops={"rx_dropped": dut_drops})}
        row = summarize(gens=[g], ifaces=ifs)["row"]
        assert (row["lost_src_nic"], row["located_excess"], row["warmup_located_excess"]) == (lost_nic, 0, 0), \
            (path, row)
        assert row["lost"] == lost_nic + dut_drops and row["unexplained"] == 0, (path, row)
        located_add_up(row)


def observed(agent=12.0, capture=20.0, driver="veth"):
    return {"agent_cpu_pct": agent, "capture_cpu_pct": capture, "ncpu": 2,
            "drivers": {"xl-dut0": driver}}


def summarize_observed(observers, ifaces=None, gens=None, send_gaps=None):
    gens = gens or [gen()]
    ifaces = ifaces or {"xl-dut0": iface()}
    checks = [{"source": "src0", "interface": "xl-dut0", "matched": ifaces["xl-dut0"]["xdp"]["matched"],
               "unique": ifaces["xl-dut0"]["xdp"]["matched"], "missing": 0, "duplicated": 0,
               "reordered": 0}]
    gathered = {"boot_id": "b1", "collector": "features", "interfaces": ifaces,
                "softirq": {"cpu_pct": 1.0}, "observers": observers, "send_gap_ns": send_gaps}
    return accounting.summarize(SETTINGS, TRIAL, {"run_id": RUN, "prog_tag": "abc"}, [SRC], gens,
                                {"checks": checks}, gathered)["row"]


def test_the_observers_cpu_and_the_send_gaps_are_columns():
    send_gaps = {"count": 49999, "p50": 99000, "p99": 250000}
    row = summarize_observed(observed(12.345, 20.0), send_gaps=send_gaps)
    assert (row["agent_cpu_pct"], row["capture_cpu_pct"]) == (12.35, 20.0)
    assert (row["send_gap_p50_us"], row["send_gap_p99_us"]) == (99.0, 250.0)
    assert row["observers_busy"] is False                       # nothing lost
    # an older agent: no figures, no verdict; trafgen: no send times, no send gaps
    row = summarize_observed(None, gens=[gen(backend="trafgen")], send_gaps=send_gaps)
    assert row["agent_cpu_pct"] is None and row["observers_busy"] is None
    assert row["send_gap_p50_us"] is None


def test_observers_are_busy_when_the_dut_lost_at_its_receive_side_while_they_used_a_quarter_cpu():
    # veth: a full receive ring on the DUT shows as the source veth's tx_dropped
    veth_loss = [gen(counters={"nic_tx_dropped": 100})]
    lossy = {"xl-dut0": iface(matched=49900)}
    assert summarize_observed(observed(10.0, 15.0), dict(lossy), veth_loss)["observers_busy"] is True
    assert summarize_observed(observed(10.0, 14.9), dict(lossy), veth_loss)["observers_busy"] is False
    # a real NIC: the source NIC's drops are the source's, not the DUT's receive ring
    assert summarize_observed(observed(30.0, 30.0, "ixgbe"), dict(lossy), veth_loss)["observers_busy"] is False
    # the DUT NIC's own drops count whatever the driver
    dut_loss = {"xl-dut0": iface(matched=49900, nic_drops={"rx_dropped": 100})}
    row = summarize_observed(observed(30.0, 30.0, "ixgbe"), dut_loss)
    assert row["lost_dut_nic"] == 100 and row["observers_busy"] is True
    assert trialrows.OBSERVERS_BUSY_PCT == 25.0
