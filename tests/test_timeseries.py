"""A trial second by second (workflow/xdplab/timeseries.py) and the warm-up's place in the
books (accounting.summarize): pure functions on synthetic agent and generator records."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab import accounting, timeseries  # noqa: E402

NS = 1_000_000_000
COLS = ["t_ns", "nic_rx_packets", "xdp_seen", "xdp_matched_measured", "features_measured",
        "ringbuf_drops", "softirq_pct"]


def samples(t0, seconds, rate, step=0.1, jitter=None):
    """Cumulative counters sampled every `step` s from t0 - 0.5 s, `rate` packets/s from t0."""
    rows, n = [], int((seconds + 1) / step) + 1
    for i in range(n):
        t = t0 - 0.5 * NS + int(i * step * NS)
        since = max(0.0, (t - t0) / NS)
        c = rate * min(since, seconds) if jitter is None else jitter(since)
        rows.append([t, int(c), int(c), int(c), int(c), 0, 12.5])
    return {"columns": COLS, "rows": rows}


def test_one_row_per_second_with_exact_rates():
    t0 = 5 * NS
    gathered = {"interfaces": {"xl-dut0": {"timeseries": samples(t0, 3, 1000),
                                           "measured_window_ns": [t0, t0 + 3 * NS - 1000]}}}
    gens = [{"sent_per_s": [1000, 1000, 1000]}]
    rows = timeseries.per_second(gathered, gens, 3)
    assert [r["second"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["sent_pps"] == 1000
        assert abs(r["nic_rx_pps"] - 1000) <= 1 and abs(r["xdp_matched_pps"] - 1000) <= 1
        assert r["ringbuf_drops_per_s"] == 0 and r["softirq_pct"] == 12.5
    text = timeseries.csv_text(rows)
    assert text.splitlines()[0] == ",".join(timeseries.NAMES) and len(text.splitlines()) == 4


def test_two_interfaces_add_up():
    t0 = 5 * NS
    blk = {"timeseries": samples(t0, 2, 500), "measured_window_ns": [t0, t0 + 2 * NS]}
    rows = timeseries.per_second({"interfaces": {"a": blk, "b": blk}}, [], 2)
    assert all(abs(r["nic_rx_pps"] - 1000) <= 2 and r["sent_pps"] is None for r in rows)


def test_no_samples_no_rows():
    assert timeseries.per_second({"interfaces": {"a": {}}}, [], 5) == []
    assert timeseries.stability([], 5) == {"unstable": None, "max_dev_pct": None}


def test_a_second_off_the_mean_flags_the_trial_unstable():
    steady = [{"nic_rx_pps": 1000.0} for _ in range(9)]
    assert timeseries.stability(steady + [{"nic_rx_pps": 1040.0}], 5)["unstable"] is False
    bad = timeseries.stability(steady + [{"nic_rx_pps": 500.0}], 5)
    assert bad["unstable"] is True and bad["max_dev_pct"] > 40


def test_a_stall_shows_in_its_second():
    t0 = 5 * NS

    def stalled(since):   # 1000/s, nothing during the second second
        return 1000 * min(since, 1) + 1000 * max(0.0, min(since, 3) - 2)

    gathered = {"interfaces": {"a": {"timeseries": samples(t0, 3, 0, jitter=stalled),
                                     "measured_window_ns": [t0, t0 + 3 * NS]}}}
    rows = timeseries.per_second(gathered, [], 3)
    assert [round(r["nic_rx_pps"]) for r in rows] == [1000, 0, 1000]
    assert timeseries.stability(rows, 5)["unstable"] is True


def _trial(warm_sent, warm_matched, sent, matched, qdisc_drops=0):
    run = 100
    gen = {"sent": sent, "scheduled": sent, "send_errors": 0, "target_pps": sent, "achieved_pps": sent,
           "rate_sustained": True, "warmup": {"run_id": run + 1, "sent": warm_sent, "scheduled": warm_sent},
           "source_counters": {"delta": {"qdisc_drops": qdisc_drops}}}
    total = warm_matched + matched
    iface = {"nic": {"rx_packets": total}, "xdp": {"seen": total, "matched": total, "ringbuf_full": 0},
             "features": {"received": matched, "warmup_records": warm_matched},
             "tcpdump": {"captured": total, "dropped_by_kernel": 0},
             "matched_by_run": {str(run): matched, str(run + 1): warm_matched}}
    src = {"name": "src0", "host": "h", "dut_iface": "xl-dut0"}
    return accounting.summarize({"duration_s": 1, "threads": 1, "warmup_s": 1}, {
        "experiment": "e", "target_pps": sent, "packet_size": 64, "repeat": 0, "point": "p"},
        {"run_id": run}, [src], [gen], {"checks": [{"source": "src0", "matched": matched}]},
        {"interfaces": {"xl-dut0": iface}})


def test_the_warm_up_counts_in_the_books_but_not_in_the_figures():
    s = _trial(warm_sent=1000, warm_matched=1000, sent=5000, matched=5000)
    row = s["row"]
    assert (row["sent"], row["lost"], row["warmup_sent"], row["warmup_lost"]) == (5000, 0, 1000, 0)
    assert row["nic_rx"] == 6000 and row["unexplained"] == 0, row


def test_loss_in_the_warm_up_is_its_own_and_located():
    s = _trial(warm_sent=1000, warm_matched=990, sent=5000, matched=5000, qdisc_drops=10)
    row = s["row"]
    # A report whose counters span both phases (no window_delta): the warm-up's loss is
    # located first, the window's columns add up to its own lost (0).
    assert (row["lost"], row["warmup_lost"], row["warmup_lost_src_qdisc"], row["warmup_lost_unlocated"]) == (
        0, 10, 10, 0)
    assert (row["lost_src_qdisc"], row["lost_unlocated"], row["located_excess"]) == (0, 0, 0), row
    assert row["loss_where"] == "" and row["unexplained"] == 0, row
