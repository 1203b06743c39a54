"""Closing the books on a trial: identities, residuals, lost and unexplained."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from xdplab import accounting  # noqa: E402

SETTINGS = {"duration_s": 5, "threads": 2}
TRIAL = {"experiment": "t", "target_pps": 10000, "packet_size": 1458, "repeat": 0}


def records(sent=50000, nic=50000, seen=50000, matched=50000, features=50000, rb_full=0,
            captured=50000, dropped=0, same_clock=True):
    gen = {"sent": sent, "scheduled": 50000, "send_errors": 50000 - sent, "achieved_pps": sent / 5.0,
           "max_lag_us": 100.0, "boot_id": "b1"}
    arm = {"run_id": 7, "prog_tag": "abc", "xdp_mode_in_effect": "native"}
    capture = {"tcpdump": {"captured": captured, "dropped_by_kernel": dropped, "received_by_filter": captured},
               "check": {"missing": 0, "duplicated": 0, "reordered": 0}}
    gathered = {"boot_id": "b1" if same_clock else "b2", "xdp_mode_in_effect": "native",
                "nic": {"rx_packets": nic},
                "xdp": {"seen": seen, "matched": matched, "features": features, "ringbuf_full": rb_full,
                        "ns_per_pkt": 210.04},
                "features": {"received": features, "for_run": features,
                             "latency_ns": {"count": features, "p50": 31000, "p99": 95500}},
                "softirq": {"cpu_pct": 1.234}}
    return arm, gen, capture, gathered


def summarize(**kw):
    return accounting.summarize(SETTINGS, TRIAL, *records(**kw))


def test_a_clean_trial_closes_with_nothing_lost_or_unexplained():
    row = summarize()["row"]
    assert list(row) == accounting.COLUMNS
    assert (row["sent"], row["nic_rx"], row["xdp_matched"], row["tcpdump_captured"]) == (50000,) * 4
    assert row["lost"] == 0 and row["unexplained"] == 0
    assert row["achieved_pps"] == 10000.0 and row["rate_error_pct"] == 0.0
    assert (row["latency_p50_us"], row["latency_p99_us"]) == (31.0, 95.5)
    assert row["throughput_payload_mbps"] == 116.64
    assert row["throughput_wire_mbps"] == round(10000 * (1458 + 66) * 8 / 1e6, 3)


def test_network_loss_is_lost_not_unexplained():
    row = summarize(nic=49000, seen=49000, matched=49000, features=49000, captured=49000)["row"]
    assert row["lost"] == 1000 and row["unexplained"] == 0


def test_ring_buffer_drops_close_the_feature_identity():
    row = summarize(features=45000, rb_full=5000)["row"]
    assert row["ringbuf_drops"] == 5000 and row["unexplained"] == 0


def test_tcpdump_drops_close_the_capture_identity():
    row = summarize(captured=40000, dropped=10000)["row"]
    assert row["unexplained"] == 0


def test_what_does_not_close_is_reported_per_identity():
    out = summarize(nic=50003, captured=49990)
    row = out["row"]
    assert row["unexplained_nic_vs_xdp"] == 3 and row["unexplained_passed_vs_tcpdump"] == 10
    assert row["unexplained"] == 13
    assert {i["name"] for i in out["identities"]} >= {"nic_vs_xdp", "passed_vs_tcpdump"}


def test_more_matched_than_sent_is_unexplained():
    row = summarize(sent=49990)["row"]
    assert row["lost"] == 0 and row["unexplained_matched_over_sent"] == 10


def test_latency_is_not_reported_across_clocks():
    row = summarize(same_clock=False)["row"]
    assert row["latency_p50_us"] is None and "not available" in row["latency_method"]


def test_wire_bytes_pads_small_frames():
    assert accounting.wire_bytes(18) == 84 and accounting.wire_bytes(1458) == 1524
