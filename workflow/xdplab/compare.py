"""Comparing programs under test (A/B) for a paper: each program against the first one
configured, per grid point and per metric, with the difference of means, its 95 %
confidence interval, a test of significance and a one-line verdict (compare.csv, .md, .tex),
and a figure of every trial's value beside each program's mean.

Method.  At each grid point (the same settings but the program) the repeats of program A
(the first configured) and of program B give two samples of a metric, one value per trial.
The difference is mean(B) - mean(A), and in % of mean(A).  Its 95 % confidence interval is
Welch's: diff ± t(0.975, ν) · s, with s² = s_A²/n_A + s_B²/n_B (sample variances, n - 1)
and ν from the Welch–Satterthwaite equation, ν = s⁴ / ((s_A²/n_A)²/(n_A - 1) +
(s_B²/n_B)²/(n_B - 1)); the interval in % is the one in units divided by mean(A), which is
taken as exact.  Both samples need n >= 2; with fewer there is no interval and no test.

The test: Welch's t-test (two-sided, unequal variances) when both samples pass a
Shapiro-Wilk test of normality at the 5 % level, which needs n >= 3 and some spread;
otherwise the Mann-Whitney U test (two-sided, exact for small samples without ties),
which assumes no distribution.  The `test` column says which one ran, the `shapiro_p_*`
columns why.  A difference is called significant when the test's p < 0.05; the verdict
says so in words.  The interval stays Welch's in both cases, so with a rank test the two
can disagree near the threshold; the verdict follows the test.  A zero-loss rate
(`ndr_pps`) is compared the same way, one value per search.
"""

from __future__ import annotations

import math
import warnings

import pandas as pd

from . import stats

ALPHA = 0.05   # significance level of the tests, and of the normality check before them
WELCH, MANN_WHITNEY, NO_TEST = "Welch's t-test", "Mann-Whitney U", "none"

# (column, unit, label with unit for tables and figures, what it is in a sentence, how a
# lower value is said, how a higher one is).  A column missing or all NaN is left out.
METRICS = [
    ("prog_ns_per_pkt", "ns", "program run time per packet, kernel statistics (ns)",
     "program run time per packet", "costs {x} less per packet", "costs {x} more per packet"),
    # With observe full or verdicts the program runs behind the collector (a tail call) and
    # the kernel accounts both to the collector: their time together.
    ("xdp_ns_per_pkt", "ns", "XDP run time per packet, collector and program (ns)",
     "XDP run time per packet (collector and program)", "costs {x} less per packet",
     "costs {x} more per packet"),
    ("latency_p50_us", "us", "one-way latency p50 (µs)", "median one-way latency (p50)", None, None),
    ("latency_p99_us", "us", "one-way latency p99 (µs)", "p99 one-way latency", None, None),
    ("softirq_cpu_pct", "pct", "softirq CPU (% of all CPUs)", "softirq CPU load", None, None),
    ("achieved_pps", "pps", "achieved rate (packets/s)", "achieved rate", None, None),
    ("ndr_pps", "pps", "zero-loss rate (packets/s)", "zero-loss rate (NDR)", None, None),
]
_BY_NAME = {m[0]: m for m in METRICS}
UNIT_TEXT = {"ns": "ns", "us": "µs", "pct": "percentage points", "pps": "packets/s"}

# compare.csv: one row per (grid point, program B, metric); the point's columns come first.
# Means, differences and their interval are in the metric's unit (`unit`: the suffix of the
# metric's name); the *_pct columns are in % of program A's mean.
COLUMNS = [
    "metric", "unit", "program_a", "program_b", "n_a", "n_b", "mean_a", "mean_b",
    "diff", "diff_pct", "diff_ci95_lo", "diff_ci95_hi", "diff_ci95_lo_pct", "diff_ci95_hi_pct",
    "shapiro_p_a", "shapiro_p_b", "test", "p_value", "significant", "verdict",
]


def _values(series) -> list[float]:
    return [float(v) for v in pd.to_numeric(series, errors="coerce") if not math.isnan(float(v))]


def _mean_var(xs):
    n = len(xs)
    m = sum(xs) / n
    return m, (sum((x - m) ** 2 for x in xs) / (n - 1) if n > 1 else float("nan"))


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(lo, hi, degrees of freedom) of the 95 % CI of mean(b) - mean(a), Welch–Satterthwaite."""
    from scipy import stats as st

    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    qa, qb = va / len(a), vb / len(b)
    se2 = qa + qb
    diff = mb - ma
    if se2 == 0:          # no spread in either sample: the difference is what it is
        return diff, diff, float("inf")
    df = se2 ** 2 / (qa ** 2 / (len(a) - 1) + qb ** 2 / (len(b) - 1))
    half = float(st.t.ppf(0.975, df)) * math.sqrt(se2)
    return diff - half, diff + half, df


def normality_p(xs: list[float]) -> float | None:
    """Shapiro-Wilk p-value; None where it cannot say (n < 3), 0 for a sample without spread
    (a constant is not a normal sample, and Shapiro-Wilk's answer there is meaningless)."""
    from scipy import stats as st

    if len(xs) < 3:
        return None
    if max(xs) == min(xs):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(st.shapiro(xs).pvalue)


def significance(a: list[float], b: list[float]) -> dict:
    """The test chosen (Welch when both samples look normal, else Mann-Whitney U) and its
    two-sided p-value; no test below two values a side."""
    from scipy import stats as st

    pa, pb = normality_p(a), normality_p(b)
    out = {"shapiro_p_a": pa, "shapiro_p_b": pb}
    if len(a) < 2 or len(b) < 2:
        return dict(out, test=NO_TEST, p_value=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pa is not None and pb is not None and pa >= ALPHA and pb >= ALPHA:
            return dict(out, test=WELCH, p_value=float(st.ttest_ind(a, b, equal_var=False).pvalue))
        return dict(out, test=MANN_WHITNEY,
                    p_value=float(st.mannwhitneyu(a, b, alternative="two-sided").pvalue))


def format_p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    # Three significant digits below 0.1, so that 0.0496 never reads as 0.05.
    return f"p = {p:.3g}" if p < 0.1 else f"p = {p:.2f}"


def _article(amount: str) -> str:
    """'a' or 'an' before a number said aloud: an 8, an 11.8, an 18 %; a 12 %."""
    whole = amount.split(".")[0].split(" ")[0]
    return "an" if whole.startswith("8") or whole in ("11", "18") else "a"


def _amount(diff: float, diff_pct: float | None, unit: str) -> str:
    if diff_pct is not None and not math.isnan(diff_pct):
        return f"{abs(diff_pct):.1f} %"
    return f"{abs(diff):.3g} {UNIT_TEXT[unit]}"


def _range(lo: float, hi: float, suffix: str) -> str:
    return f"{lo:.1f}-{hi:.1f}{suffix}" if lo >= 0 else f"{lo:.1f} to {hi:.1f}{suffix}"


def verdict(row: dict) -> str:
    """The row's one-line verdict, for a reader of the paper."""
    metric, unit, _label, what, lower, higher = _BY_NAME[row["metric"]]
    a, b = row["program_a"], row["program_b"]
    n = f"n = {row['n_a']} + {row['n_b']}"
    if row["test"] == NO_TEST:
        return f"too few repeats to compare {what} ({n}; two a side needed)"
    pct = row["diff_pct"] is not None and not math.isnan(row["diff_pct"])
    lo, hi = (row["diff_ci95_lo_pct"], row["diff_ci95_hi_pct"]) if pct else \
        (row["diff_ci95_lo"], row["diff_ci95_hi"])
    suffix = " %" if pct else f" {UNIT_TEXT[unit]}"
    how = f"{format_p(row['p_value'])}, {row['test']}, {n}"
    if not row["significant"]:
        diff = row["diff_pct"] if pct else row["diff"]
        return (f"no significant difference in {what} between {b} and {a} "
                f"({diff:+.1f}{suffix}, 95 % CI {lo:+.1f} to {hi:+.1f}{suffix}, {how})")
    amount = _amount(row["diff"], row["diff_pct"], unit)
    less = row["diff"] < 0
    if less:   # the interval of the reduction, as a positive range
        lo, hi = -hi, -lo
    if lower and higher:
        phrase = (lower if less else higher).format(x=amount)
    else:
        phrase = f"has {_article(amount)} {amount} {'lower' if less else 'higher'} {what}"
    return f"{b} {phrase} than {a} (95 % CI {_range(lo, hi, suffix)}, {how})"


def _pair(a: list[float], b: list[float]) -> dict:
    """The numbers of one comparison of sample b against sample a."""
    out = {"n_a": len(a), "n_b": len(b), "mean_a": None, "mean_b": None, "diff": None,
           "diff_pct": None, "diff_ci95_lo": None, "diff_ci95_hi": None,
           "diff_ci95_lo_pct": None, "diff_ci95_hi_pct": None}
    ma = sum(a) / len(a) if a else None
    mb = sum(b) / len(b) if b else None
    out.update(mean_a=ma, mean_b=mb)
    if a and b:
        out["diff"] = mb - ma
        out["diff_pct"] = 100.0 * (mb - ma) / ma if ma else None
    if len(a) >= 2 and len(b) >= 2:
        lo, hi, _df = welch_interval(a, b)
        out.update(diff_ci95_lo=lo, diff_ci95_hi=hi)
        if ma:
            out.update(diff_ci95_lo_pct=100.0 * lo / ma, diff_ci95_hi_pct=100.0 * hi / ma)
    out.update(significance(a, b))
    out["significant"] = out["p_value"] is not None and out["p_value"] < ALPHA
    return out


def _point_keys(table: pd.DataFrame, keys: list[str]) -> list[str]:
    return [k for k in keys if k in table.columns and k != "program"]


def _compare_table(table: pd.DataFrame, programs: list[str], keys: list[str], metrics) -> list[dict]:
    rows = []
    groups = table.groupby(keys, sort=True, dropna=False) if keys else [((), table)]
    for key, g in groups:
        point = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        label = g["program"].astype(str)
        for col in metrics:
            a = _values(g.loc[label == programs[0], col])
            for prog in programs[1:]:
                b = _values(g.loc[label == prog, col])
                if not a and not b:
                    continue   # this metric was not measured at this point
                row = dict(point, metric=col, unit=_BY_NAME[col][1], program_a=programs[0],
                           program_b=prog, **_pair(a, b))
                row["verdict"] = verdict(row)
                rows.append(row)
    return rows


def _present(table: pd.DataFrame | None, col: str) -> bool:
    return table is not None and col in table.columns and pd.to_numeric(table[col], errors="coerce").notna().any()


def compare(summary: pd.DataFrame, programs: list[str], ndr: pd.DataFrame | None = None,
            by: list[str] | None = None) -> pd.DataFrame:
    """compare.csv's rows: every program of `programs` after the first against the first, per
    grid point (`by`, default stats.point_columns of the summary, `program` never) and per
    metric present.  `ndr`: ndr.csv's rows, one per search, with a `program` column."""
    if len(programs) < 2:
        raise ValueError("a comparison needs at least two programs")
    if "program" not in summary.columns:
        raise ValueError("the summary table has no `program` column")
    keys = _point_keys(summary, stats.point_columns(summary) if by is None else by)
    metrics = [m[0] for m in METRICS if m[0] != "ndr_pps" and _present(summary, m[0])]
    rows = _compare_table(summary, programs, keys, metrics)
    if _present(ndr, "ndr_pps") and "program" in ndr.columns:
        from .ndr import SEARCH_DIMENSIONS

        rows += _compare_table(ndr, programs, _point_keys(ndr, list(SEARCH_DIMENSIONS)), ["ndr_pps"])
        keys += [k for k in _point_keys(ndr, list(SEARCH_DIMENSIONS)) if k not in keys]
    df = pd.DataFrame(rows, columns=keys + COLUMNS)
    for col in ("mean_a", "mean_b", "diff", "diff_pct", "diff_ci95_lo", "diff_ci95_hi",
                "diff_ci95_lo_pct", "diff_ci95_hi_pct"):
        df[col] = pd.to_numeric(df[col], errors="coerce").round(6)
    for col in ("shapiro_p_a", "shapiro_p_b", "p_value"):   # small p-values kept whole
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return stats.with_frame_size(df)   # the point's frame (bytes) beside its payload


# -- tables -------------------------------------------------------------------------------

def _num(v, fmt="{:.4g}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _diff_cell(r) -> str:
    """The difference in % of A with its 95 % CI (in units where A's mean is 0)."""
    if _num(r["diff_pct"]) != "n/a":
        d, lo, hi, suf = r["diff_pct"], r["diff_ci95_lo_pct"], r["diff_ci95_hi_pct"], " %"
    else:
        d, lo, hi, suf = r["diff"], r["diff_ci95_lo"], r["diff_ci95_hi"], ""
    if _num(d) == "n/a":
        return "n/a"
    if _num(lo) == "n/a":
        return f"{d:+.1f}{suf}"
    return f"{d:+.1f}{suf} [{lo:+.1f}, {hi:+.1f}]"


def _p_cell(r) -> str:
    p = r["p_value"]
    return "n/a" if _num(p) == "n/a" else format_p(p).removeprefix("p = ").replace("p ", "")


def _keys_shown(df: pd.DataFrame) -> list[str]:
    keys = [c for c in df.columns[: list(df.columns).index("metric")]]
    return stats._shown(df, keys) if len(df) else keys


def _cells(df: pd.DataFrame, r) -> list[str]:
    return ([_num(r[k], "{}") for k in _keys_shown(df)] +
            [_BY_NAME[r["metric"]][2], str(r["program_b"]), f"{r['n_a']} + {r['n_b']}",
             _num(r["mean_a"]), _num(r["mean_b"]), _diff_cell(r), _p_cell(r), str(r["test"])])


def _heads(df: pd.DataFrame) -> list[str]:
    return _keys_shown(df) + ["metric", "program", "n (A + B)", "mean A", "mean B",
                              "difference (95 % CI)", "p", "test"]


def _note(df: pd.DataFrame) -> str:
    first = df["program_a"].iloc[0] if len(df) else "the first program"
    return (f"Each program against {first} (A). Difference: mean B - mean A in % of mean A, "
            f"with its 95 % confidence interval (Welch-Satterthwaite); p: two-sided, Welch's "
            f"t-test when both samples pass Shapiro-Wilk at 0.05, else Mann-Whitney U.")


def markdown(df: pd.DataFrame) -> str:
    heads = _heads(df) + ["verdict"]
    text = ("metric", "program", "test", "verdict")   # left-aligned; numbers right
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(":---" if h in text else "---:" for h in heads) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_cells(df, r) + [str(r["verdict"])]) + " |")
    return "\n".join(lines) + "\n\n" + _note(df) + "\n"


_TEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
        "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
        "µ": "$\\mu$", "±": "$\\pm$", "<": "$<$", ">": "$>$"}


def tex_escape(text) -> str:
    return "".join(_TEX.get(c, c) for c in str(text))


def latex(df: pd.DataFrame) -> str:
    """A booktabs table (\\usepackage{booktabs}) of the comparisons; the verdicts are in
    compare.md and compare.csv."""
    heads = [tex_escape(h) for h in _heads(df)]
    spec = "".join("l" if h in ("metric", "program", "test") else "r" for h in _heads(df))
    out = ["% " + tex_escape(_note(df)).replace("\n", " "),
           "\\begin{tabular}{" + spec + "}", "\\toprule", " & ".join(heads) + " \\\\", "\\midrule"]
    for _, r in df.iterrows():
        out.append(" & ".join(tex_escape(c) for c in _cells(df, r)) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)


def write_tables(df: pd.DataFrame, csv_path: str, md_path: str, tex_path: str) -> None:
    """compare.csv, compare.md and compare.tex, each written whole (a reader never sees half)."""
    from pathlib import Path

    for out, text in ((csv_path, df.to_csv(index=False)), (md_path, markdown(df)), (tex_path, latex(df))):
        tmp = Path(out).with_name(f".{Path(out).name}.tmp")
        tmp.write_text(text)
        tmp.replace(out)


# -- figure -------------------------------------------------------------------------------

def _point_text(key: str, value) -> str:
    if key in ("target_pps", "packet_size") and isinstance(value, (int, float)) and not math.isnan(value):
        return f"{int(value):,} pps" if key == "target_pps" else f"{int(value)} B"
    return f"{key} {value}"


def draw_compare(summary: pd.DataFrame, programs: list[str], by: list[str] | None = None):
    """Per metric a panel; per point a group, in it per program every trial's value as a dot
    and the mean with its 95 % CI (Student t) as a marker with error bars."""
    from . import figures

    df = figures.normalise(summary)
    df = df[df["program"].astype(str).isin(programs)] if "program" in df else df.iloc[0:0]
    keys = _point_keys(df, stats.point_columns(df) if by is None else by)
    metrics = [m for m in METRICS if m[0] != "ndr_pps" and _present(df, m[0])]
    shown = [k for k in keys if k in figures.POINT or df[k].nunique(dropna=False) > 1]
    fig, axes = figures._panels(
        len(metrics), f"comparison of programs, each against {programs[0]}",
        "dots: one trial each; markers: mean over the repeats, bars: 95 % confidence interval "
        "of the mean (Student t); a program with one repeat has no bar")
    if not metrics:
        figures._empty(axes[0], "no metric to compare (no trials, or none measured)")
        return fig
    pts = list(df.groupby(keys, sort=True, dropna=False)) if keys else [((), df)]
    labels = [", ".join(_point_text(k, v) for k, v in zip(keys, key if isinstance(key, tuple) else (key,))
                        if k in shown) for key, _ in pts]
    width = 0.8 / len(programs)
    for ax, (col, _unit, label, *_rest) in zip(axes, metrics):
        for j, prog in enumerate(programs):
            offset = (j - (len(programs) - 1) / 2) * width
            for i, (_key, g) in enumerate(pts):
                xs = _values(g.loc[g["program"].astype(str) == prog, col])
                if not xs:
                    continue
                x = i + offset
                ax.plot([x] * len(xs), xs, ".", color=f"C{j % 10}", alpha=0.45, markersize=5)
                d = stats.describe(xs)
                err = None if d["ci95_lo"] is None else [[d["mean"] - d["ci95_lo"]], [d["ci95_hi"] - d["mean"]]]
                ax.errorbar([x + width * 0.25], [d["mean"]], yerr=err, fmt="o", color=f"C{j % 10}",
                            capsize=3, markersize=5, label=prog if i == 0 else None)
        ax.set_xticks(range(len(pts)), labels, rotation=90 if len(pts) > 4 else 0, fontsize=8)
        ax.set_xlim(-0.6, len(pts) - 0.4)
        # Every metric is >= 0; a rate compared at 1,000 and 1,000,000 pps needs a log axis.
        if not figures._log_if_wide(ax, _values(df[col]), axis="y"):
            ax.set_ylim(bottom=0)
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    figures._legend(axes[0])
    return fig


def plot_compare(summary: pd.DataFrame, programs: list[str], outputs: list[str]) -> None:
    """The comparison figure, saved once per output path (.svg, .png, .pdf by suffix)."""
    from . import figures

    figures._save(draw_compare(summary, programs), outputs)
