"""Comparing programs (A/B): differences with Welch's interval, the test chosen by normality,
verdicts that say the right direction and size, and the tables and figure that carry them.
Pure: synthetic summary tables with fixed seeds, no testbed."""

import math
import random
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from xdplab import compare  # noqa: E402

V1, V2 = "programs/v1.bpf.c", "programs/v2.bpf.c"


def trials(costs: dict, repeats=5, seed=7, points=((10000, 64),), sd=3.0, **extra):
    """Summary rows: per point and program, `repeats` trials whose program run time per packet
    is normal around the program's mean cost (ns); a few other metrics around fixed values."""
    rnd = random.Random(seed)
    rows = []
    for (pps, size) in points:
        for prog, cost in costs.items():
            mean = cost(pps) if callable(cost) else cost
            for rep in range(repeats):
                rows.append({"target_pps": pps, "packet_size": size, "repeat": rep, "xdp_mode": "native",
                             "collector": "features", "pattern": "constant", "duration_s": 10,
                             "program": prog, "prog_ns_per_pkt": rnd.gauss(mean, sd),
                             "latency_p50_us": rnd.gauss(20.0, 1.0), "latency_p99_us": rnd.gauss(40.0, 2.0),
                             "softirq_cpu_pct": rnd.gauss(5.0, 0.2), "achieved_pps": pps - rnd.random(),
                             **extra})
    return pd.DataFrame(rows)


def row(df, metric="prog_ns_per_pkt", **point):
    sel = df[df["metric"] == metric]
    for k, v in point.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_a_clearly_cheaper_program_is_significant_with_the_right_percentage():
    summary = trials({V1: 200.0, V2: 176.4})
    df = compare.compare(summary, [V1, V2])
    r = row(df)
    a = summary.loc[summary["program"] == V1, "prog_ns_per_pkt"]
    b = summary.loc[summary["program"] == V2, "prog_ns_per_pkt"]
    assert (r["n_a"], r["n_b"]) == (5, 5)
    assert r["diff"] == pytest.approx(b.mean() - a.mean(), abs=1e-5)
    pct = 100 * (b.mean() - a.mean()) / a.mean()
    assert r["diff_pct"] == pytest.approx(pct, abs=1e-5) and -14 < pct < -10
    assert r["significant"] and r["p_value"] < 0.001 and r["test"] == "Welch's t-test"
    assert r["diff_ci95_lo"] < r["diff"] < r["diff_ci95_hi"] < 0          # excludes 0
    assert r["diff_ci95_hi_pct"] == pytest.approx(100 * r["diff_ci95_hi"] / a.mean(), abs=1e-5)
    lo, hi = -r["diff_ci95_hi_pct"], -r["diff_ci95_lo_pct"]
    assert r["verdict"] == (f"{V2} costs {abs(pct):.1f} % less per packet than {V1} "
                            f"(95 % CI {lo:.1f}-{hi:.1f} %, p < 0.001, Welch's t-test, n = 5 + 5)")
    # The other way round: more.
    r = row(compare.compare(summary, [V2, V1]))
    assert r["significant"] and r["diff"] > 0 and " costs " in r["verdict"] and "% more per packet than" in r["verdict"]
    assert r["verdict"].startswith(f"{V1} costs ")


def test_welch_interval_and_test_are_the_textbook_ones():
    a, b = [1.0, 2.0, 3.0, 2.5], [4.0, 5.0, 7.0, 6.1]
    lo, hi, df = compare.welch_interval(a, b)
    ref = st.ttest_ind(b, a, equal_var=False)
    assert df == pytest.approx(ref.df)
    ci = ref.confidence_interval(0.95)
    assert (lo, hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    s = compare.significance(a, b)
    assert s["test"] == "Welch's t-test" and s["p_value"] == pytest.approx(ref.pvalue)


def test_a_program_against_itself_is_not_significant():
    summary = trials({V1: 200.0, "programs/v1_again.bpf.c": 200.0}, seed=11)
    df = compare.compare(summary, [V1, "programs/v1_again.bpf.c"])
    r = row(df)
    assert not r["significant"] and r["p_value"] > 0.05
    assert r["diff_ci95_lo"] < 0 < r["diff_ci95_hi"]
    assert r["verdict"].startswith("no significant difference in program run time per packet between "
                                   f"programs/v1_again.bpf.c and {V1} (")
    assert f"p = {r['p_value']:.2f}" in r["verdict"] and "n = 5 + 5" in r["verdict"]
    assert not df["significant"].any()   # nor in any other metric


def test_samples_that_are_not_normal_take_mann_whitney():
    summary = trials({V1: 200.0, V2: 150.0}, sd=1.0)
    # One trial of A far out: Shapiro-Wilk rejects normality.
    i = summary.index[summary["program"] == V1][0]
    summary.loc[i, "prog_ns_per_pkt"] = 400.0
    r = row(compare.compare(summary, [V1, V2]))
    assert r["shapiro_p_a"] < 0.05 and r["test"] == "Mann-Whitney U"
    a = summary.loc[summary["program"] == V1, "prog_ns_per_pkt"].tolist()
    b = summary.loc[summary["program"] == V2, "prog_ns_per_pkt"].tolist()
    assert r["p_value"] == pytest.approx(st.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert r["significant"] and "Mann-Whitney U" in r["verdict"] and "less per packet" in r["verdict"]
    # A sample without spread is not a normal sample either.
    assert compare.significance([5.0] * 5, [6.0] * 5)["test"] == "Mann-Whitney U"
    # Two values a side: normality cannot be checked, so the rank test.
    assert compare.significance([1.0, 2.0], [3.0, 4.0])["test"] == "Mann-Whitney U"


def test_one_repeat_is_too_few():
    summary = trials({V1: 200.0, V2: 100.0})
    summary = summary[(summary["program"] == V1) | (summary["repeat"] == 0)]
    r = row(compare.compare(summary, [V1, V2]))
    assert (r["n_a"], r["n_b"]) == (5, 1) and r["test"] == "none"
    assert math.isnan(r["p_value"]) and not r["significant"] and math.isnan(r["diff_ci95_lo"])
    assert r["verdict"].startswith("too few repeats") and "n = 5 + 1" in r["verdict"]
    assert r["diff"] == pytest.approx(r["mean_b"] - r["mean_a"])


def test_points_are_kept_apart_and_programs_keep_the_callers_order():
    # At 1,000 pps B is cheaper; at 100,000 pps it costs more.
    costs = {V1: 200.0, V2: lambda pps: 150.0 if pps == 1000 else 260.0, "programs/v3.bpf.c": 200.0}
    summary = trials(costs, points=((1000, 64), (100000, 64)))
    df = compare.compare(summary, [V1, V2, "programs/v3.bpf.c"])
    assert set(df["program_a"]) == {V1} and list(dict.fromkeys(df["program_b"])) == [V2, "programs/v3.bpf.c"]
    low, high = row(df, target_pps=1000, program_b=V2), row(df, target_pps=100000, program_b=V2)
    assert low["n_a"] == low["n_b"] == high["n_a"] == high["n_b"] == 5
    assert "% less per packet" in low["verdict"] and "% more per packet" in high["verdict"]
    assert -27 < low["diff_pct"] < -23 and 27 < high["diff_pct"] < 33
    assert list(df.columns[:7]) == ["target_pps", "packet_size", "frame_size", "xdp_mode", "collector",
                                    "pattern", "duration_s"]
    assert set(df["frame_size"]) == {110} and "| target_pps | packet_size | frame_size |" in compare.markdown(df)


def test_missing_metrics_are_skipped_and_others_compared():
    summary = trials({V1: 200.0, V2: 150.0}).drop(columns=["latency_p50_us", "softirq_cpu_pct"])
    summary["latency_p99_us"] = float("nan")           # measured nowhere
    df = compare.compare(summary, [V1, V2])
    assert list(df["metric"]) == ["prog_ns_per_pkt", "achieved_pps"]
    higher = row(df, "achieved_pps")
    assert higher["unit"] == "pps"
    assert {"prog_run_ns_p50", "latency_p50_us"}.isdisjoint(df["metric"])


def test_zero_loss_rates_from_their_own_table():
    summary = trials({V1: 200.0, V2: 150.0})
    ndr = pd.DataFrame([{"packet_size": 64, "xdp_mode": "native", "collector": "features",
                         "pattern": "constant", "program": p, "ndr_pps": v}
                        for p, vals in ((V1, (800e3, 810e3, 790e3)), (V2, (900e3, 905e3, 910e3)))
                        for v in vals])
    r = row(compare.compare(summary, [V1, V2], ndr=ndr), "ndr_pps")
    assert (r["n_a"], r["n_b"]) == (3, 3) and math.isnan(r["target_pps"])
    assert r["significant"] and f"has a {r['diff_pct']:.1f} % higher zero-loss rate (NDR) than {V1}" in r["verdict"]


def test_verdict_articles_and_p_values():
    assert compare._article("11.8 %") == "an" and compare._article("8.0 %") == "an"
    assert compare._article("12.5 %") == "a" and compare._article("1.8 %") == "a"
    assert compare.format_p(0.0496) == "p = 0.0496" and compare.format_p(0.41) == "p = 0.41"
    assert compare.format_p(0.0004) == "p < 0.001"


def _tex_is_well_formed(tex: str, rows: int) -> None:
    body = [line for line in tex.splitlines() if not line.startswith("%")]
    text = "\n".join(body)
    unescaped = re.sub(r"\\[{}%&_#$]", "", text)
    assert unescaped.count("{") == unescaped.count("}")
    assert not re.search(r"(?<!\\)[%&_#]", unescaped.replace(" & ", " ")), "unescaped special character"
    assert unescaped.count("$") % 2 == 0
    order = [body.index(r) for r in ("\\toprule", "\\midrule", "\\bottomrule")]
    assert order == sorted(order)
    begin = body[0]
    m = re.fullmatch(r"\\begin\{tabular\}\{([lr]+)\}", begin)
    assert m and body[-1] == "\\end{tabular}"
    cols = len(m.group(1))
    table_rows = [line for line in body if line.endswith("\\\\")]
    assert len(table_rows) == rows + 1
    for line in table_rows:
        assert line.count(" & ") == cols - 1, line


def test_tables_are_written(tmp_path):
    summary = trials({V1: 200.0, "programs/v2_fast.bpf.c": 176.4}, points=((1000, 64), (100000, 1458)))
    df = compare.compare(summary, [V1, "programs/v2_fast.bpf.c"])
    paths = [tmp_path / "compare.csv", tmp_path / "compare.md", tmp_path / "compare.tex"]
    compare.write_tables(df, *map(str, paths))
    back = pd.read_csv(paths[0])
    assert len(back) == len(df) == 2 * 5 and list(back.columns) == list(df.columns)
    md = paths[1].read_text()
    assert all(v in md for v in df["verdict"]) and "Welch" in md
    assert sum(line.startswith("| ") for line in md.splitlines()) == len(df) + 1   # header + rows
    _tex_is_well_formed(paths[2].read_text(), len(df))
    assert "programs/v2\\_fast.bpf.c" in paths[2].read_text()
    assert not list(tmp_path.glob(".*.tmp"))


def test_figure_is_drawn(tmp_path):
    summary = trials({V1: 200.0, V2: 150.0, "programs/v3.bpf.c": 250.0}, points=((1000, 64), (100000, 64)))
    summary.loc[summary.index[-1], "latency_p99_us"] = float("nan")
    outs = [str(tmp_path / "compare.svg"), str(tmp_path / "compare.png")]
    compare.plot_compare(summary, [V1, V2, "programs/v3.bpf.c"], outs)
    assert ET.parse(outs[0]).getroot().tag.endswith("svg")
    assert Path(outs[1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = Path(outs[0]).read_text()
    for text in ("programs/v2.bpf.c", "program run time per packet", "1,000 pps"):
        assert text in svg
    # Nothing to compare still draws a figure that says so.
    compare.plot_compare(summary.drop(columns=["prog_ns_per_pkt", "latency_p50_us", "latency_p99_us",
                                               "softirq_cpu_pct", "achieved_pps"]),
                         [V1, V2], [str(tmp_path / "empty.svg")])
    assert "no metric to compare" in (tmp_path / "empty.svg").read_text()
