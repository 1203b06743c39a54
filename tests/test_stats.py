"""Statistics over repeats: Student t intervals, and the per-point table."""

import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from xdplab import stats  # noqa: E402


def test_t_quantiles_match_the_tables():
    assert stats.t975(1) == 12.706 and stats.t975(2) == 4.303 and stats.t975(30) == 2.042
    assert abs(stats.t975(60) - 2.000) < 1e-9 and abs(stats.t975(100) - 1.984) < 0.002
    assert abs(stats.t975(10**9) - 1.960) < 1e-3


def test_describe_three_repeats():
    d = stats.describe([10.0, 12.0, 14.0])
    assert d["n"] == 3 and d["mean"] == 12.0 and d["sd"] == 2.0
    half = 4.303 * 2.0 / math.sqrt(3)
    assert abs(d["ci95_lo"] - (12 - half)) < 1e-9 and abs(d["ci95_hi"] - (12 + half)) < 1e-9


def test_one_value_has_no_interval_and_missing_values_are_skipped():
    assert stats.describe([5.0]) == {"n": 1, "mean": 5.0, "sd": None, "ci95_lo": None, "ci95_hi": None}
    assert stats.describe([None, float("nan"), 4.0, 6.0])["n"] == 2


def test_points_summarise_repeats_per_rate_and_size():
    rows = []
    for pps in (1000, 2000):
        for rep, lost in enumerate((0, 10, 20)):
            rows.append({"target_pps": pps, "packet_size": 64, "repeat": rep, "sent": 1000,
                         "lost": lost, "achieved_pps": pps, "xdp_ns_per_pkt": 200 + rep,
                         "latency_p50_us": 10.0, "latency_p99_us": None, "softirq_cpu_pct": 1.0})
    p = stats.points(pd.DataFrame(rows))
    assert list(p["target_pps"]) == [1000, 2000] and list(p["repeats"]) == [3, 3]
    assert list(p["loss_pct_mean"]) == [1.0, 1.0] and p["xdp_ns_per_pkt_sd"][0] == 1.0
    assert p["latency_p99_us_n"][0] == 0
    md = stats.markdown(p)
    assert "| target_pps | packet_size | frame_size | n |" in md  # the frame beside the payload
    assert "| 1000 | 64 | 110 | 3 | 1000 ± 0 | 1 ± 2.5 | 201 ± 2.5 |" in md
    tex = stats.latex(p)
    assert "\\toprule" in tex and "\\bottomrule" in tex and "$\\pm$" in tex


def _rows(codes):
    """One point's repeats, made by the code labelled `codes` (one per repeat)."""
    return pd.DataFrame([{"target_pps": 1000, "packet_size": 64, "repeat": rep, "sent": 1000, "lost": 0,
                          "achieved_pps": 1000, "xdp_ns_per_pkt": 200, "latency_p50_us": 10.0,
                          "latency_p99_us": 20.0, "softirq_cpu_pct": 1.0, "code_version": c}
                         for rep, c in enumerate(codes)])


def test_points_csv_columns():
    """points.csv's columns, in order: the point, the repeats, each metric's statistics, then
    how many versions of the code made the repeats, and which; then the DUT's kernels, likewise.
    The point's frame (bytes, packet_size + 46) stands beside its payload."""
    p = stats.points(_rows(["0123456789ab"] * 2))
    assert list(p.columns) == (["target_pps", "packet_size", "frame_size", "repeats"]
                               + [f"{m}_{k}" for m, _ in stats.METRICS
                                  for k in ("n", "mean", "sd", "ci95_lo", "ci95_hi")]
                               + ["code_versions", "code", "dut_kernels", "dut_kernel"])


def test_a_point_of_one_code_version_is_not_flagged():
    p = stats.points(_rows(["0123456789ab"] * 3))
    assert list(p["code_versions"]) == [1] and list(p["code"]) == ["0123456789ab"]
    assert stats.mixed_code(p).empty and stats.code_warning(p) is None
    assert "warning" not in stats.markdown(p)


def test_a_point_pooling_trials_of_different_code_is_flagged():
    rows = pd.concat([_rows(["0123456789ab", "0123456789ab+dirty", "unrecorded"]),
                      _rows(["0123456789ab"] * 2).assign(target_pps=2000)])
    p = stats.points(rows)
    assert list(p["code_versions"]) == [3, 1]
    assert p["code"][0] == "0123456789ab; 0123456789ab+dirty; unrecorded"
    assert list(stats.mixed_code(p)["target_pps"]) == [1000]
    warning = stats.code_warning(p)
    assert warning.startswith("warning: 1 of 2 point(s) in points.csv pool repeats made by different code")
    assert "target_pps=1000, packet_size=64, frame_size=110 (0123456789ab; 0123456789ab+dirty; unrecorded)" in warning
    assert "2000" not in warning
    assert warning in stats.markdown(p)


def test_a_summary_without_code_versions_is_unrecorded():
    """A summary.csv written before trials recorded their code: one version, unrecorded."""
    p = stats.points(_rows(["x", "y"]).drop(columns="code_version"))
    assert list(p["code_versions"]) == [1] and list(p["code"]) == ["unrecorded"]
    assert list(stats.points(_rows([None, float("nan")]))["code"]) == ["unrecorded"]


def test_a_point_run_on_two_dut_kernels_is_flagged():
    df = _rows(["x", "x"])
    df["dut_kernel"] = ["6.18.0", "6.19.1"]
    p = stats.points(df)
    assert list(p["dut_kernels"]) == [2] and list(p["dut_kernel"]) == ["6.18.0; 6.19.1"]
    warning = stats.code_warning(p)
    assert warning and "different DUT kernels (dut_kernels > 1)" in warning and "6.19.1" in warning
    assert stats.code_warning(stats.points(_rows(["x", "x"]))) is None   # no kernel column: unrecorded, one

