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
    assert "| 1000 | 64 | 3 | 1000 ± 0 | 1 ± 2.5 | 201 ± 2.5 |" in md
    tex = stats.latex(p)
    assert "\\toprule" in tex and "\\bottomrule" in tex and "$\\pm$" in tex
