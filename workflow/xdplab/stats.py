"""Statistics over the repeats of each grid point: mean, standard deviation and a 95 %
confidence interval (Student t), with n, for the figures a paper reports.

Pure functions on the summary table; the standard library and pandas only (the
archive's ./reaggregate runs this on a machine with nothing else installed).
"""

from __future__ import annotations

import math

import pandas as pd

from .provenance import UNRECORDED

# (column, label with unit) of the figures summarised per point.
METRICS = [
    ("achieved_pps", "achieved rate (packets/s)"),
    ("loss_pct", "loss (%)"),
    ("xdp_ns_per_pkt", "XDP run time per packet (ns)"),
    ("latency_p50_us", "one-way latency p50 (µs)"),
    ("latency_p99_us", "one-way latency p99 (µs)"),
    ("softirq_cpu_pct", "softirq CPU (% of all CPUs)"),
]
POINT = ["target_pps", "packet_size"]
# The other settings a grid point is keyed by (trials.py), where the summary has them.
POINT_SETTINGS = ["xdp_mode", "collector", "pattern", "duration_s", "program", "observe"]
# The summary's column naming the code that made each trial (xdplab.provenance.code_label of
# its trial.json's `code`), and its label where there is none (a trial.json made before
# trials recorded their code, a summary without the column).
CODE = "code_version"
# The summary's column naming the DUT's kernel release each trial ran on (its connectivity
# check's agent health; a trial.json of before has none: unrecorded).
KERNEL = "dut_kernel"


def point_columns(summary: pd.DataFrame) -> list:
    """What a grid point is keyed by: rate, size and every other grid setting the summary has."""
    return POINT + [c for c in POINT_SETTINGS if c in summary.columns]


def _shown(points_df: pd.DataFrame, by) -> list:
    """The keys a table shows: rate and size (payload, and frame beside it), and the other
    settings where they vary."""
    shown = [b for b in by if b in POINT or points_df[b].nunique(dropna=False) > 1]
    if "packet_size" in shown and "frame_size" in points_df.columns and "frame_size" not in shown:
        shown.insert(shown.index("packet_size") + 1, "frame_size")
    return shown

# Two-sided 95 % quantiles of Student's t, t(0.975, df), for df = 1..30 (standard tables).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
# Beyond 30: linear in 1/df between tabulated points, to the normal quantile at infinity.
_T975_TAIL = [(30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960)]


def t975(df: int) -> float:
    """t(0.975, df): the half-width of a 95 % CI is t975(n - 1) * sd / sqrt(n)."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= 30:
        return _T975[df - 1]
    for (d0, t0), (d1, t1) in zip(_T975_TAIL, _T975_TAIL[1:]):
        if df <= d1:
            x0, x1, x = 1 / d0, (0.0 if d1 == math.inf else 1 / d1), 1 / df
            return t0 + (t1 - t0) * (x0 - x) / (x0 - x1)
    return 1.960


def describe(values) -> dict:
    """n, mean, sd (n - 1), and the 95 % CI of the mean; sd and CI need two values."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95_lo": None, "ci95_hi": None}
    mean = sum(xs) / n
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "ci95_lo": None, "ci95_hi": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci95_lo": mean - half, "ci95_hi": mean + half}


def _versions(g: pd.DataFrame, col: str = CODE) -> list:
    if col not in g.columns:
        return [UNRECORDED]
    return sorted({UNRECORDED if v is None or (isinstance(v, float) and math.isnan(v)) or v == ""
                   else str(v) for v in g[col]})


def points(summary: pd.DataFrame, by=None) -> pd.DataFrame:
    """One row per grid point: for each metric its n, mean, sd and 95 % CI over repeats; then
    `code_versions`, how many versions of the code made its repeats (more than 1: the point
    pools trials of different code, code_warning says so), and `code`, those versions; likewise
    `dut_kernels` and `dut_kernel`, the DUT's kernel releases its repeats ran on."""
    by = point_columns(summary) if by is None else by
    df = summary.copy()
    # (lost is empty where nothing counted what reached XDP: collector off, an attached program)
    lost, sent = pd.to_numeric(df["lost"], errors="coerce"), pd.to_numeric(df["sent"], errors="coerce")
    df["loss_pct"] = [100.0 * l / s if s and not math.isnan(l) else None for l, s in zip(lost, sent)]
    rows = []
    for key, g in df.groupby(list(by), sort=True, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["repeats"] = len(g)
        for col, _ in METRICS:
            d = describe(g[col].tolist())
            row.update({f"{col}_{k}": (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()})
        versions = _versions(g, CODE)
        row["code_versions"] = len(versions)
        row["code"] = "; ".join(versions)
        kernels = _versions(g, KERNEL)
        row["dut_kernels"] = len(kernels)
        row["dut_kernel"] = "; ".join(kernels)
        rows.append(row)
    return with_frame_size(pd.DataFrame(rows))


def with_frame_size(df: pd.DataFrame) -> pd.DataFrame:
    """The table with `frame_size` (the Ethernet frame, bytes: xdplab.frames) beside
    `packet_size`, which it follows from exactly."""
    from .frames import frame_bytes

    if "packet_size" not in df.columns or "frame_size" in df.columns:
        return df
    df = df.copy()
    df.insert(list(df.columns).index("packet_size") + 1, "frame_size",
              [None if pd.isna(p) else frame_bytes(int(p)) for p in df["packet_size"]])
    return df


def _mixed(points_df: pd.DataFrame, count_col: str) -> pd.DataFrame:
    """The points whose repeats count more than one value in `count_col`."""
    if count_col not in points_df.columns:
        return points_df.iloc[0:0]
    return points_df[pd.to_numeric(points_df[count_col], errors="coerce") > 1]


def mixed_code(points_df: pd.DataFrame) -> pd.DataFrame:
    """The points whose repeats were made by more than one version of the code."""
    return _mixed(points_df, "code_versions")


# What a point's repeats may differ in besides their settings: (count column, list column,
# what the warning says they were made by or run on, what it advises).
POOLED = (("code_versions", "code", "made by different code",
           "Their means mix code versions (docs/results.md#provenance): compare them (git diff), or "
           "remove the older trials' directories and run again to measure them with one version"),
          ("dut_kernels", "dut_kernel", "run on different DUT kernels",
           "Their means mix kernels (docs/results.md#provenance)"))


def _pooled_warning(points_df, count_col, list_col, what, advice, where):
    mixed = _mixed(points_df, count_col)
    if mixed.empty:
        return None
    by = [b for b in point_columns(points_df) if b in mixed.columns]
    shown = [", ".join(f"{b}={r[b]}" for b in _shown(points_df, by)) + f" ({r[list_col]})"
             for _, r in mixed.head(3).iterrows()]
    more = f" and {len(mixed) - 3} more" if len(mixed) > 3 else ""
    return (f"warning: {len(mixed)} of {len(points_df)} point(s) in {where} pool repeats {what} "
            f"({count_col} > 1): {'; '.join(shown)}{more}. {advice}")


def code_warning(points_df: pd.DataFrame, where: str = "points.csv") -> str | None:
    """The lines for the end of a run when some point pools repeats made by different code,
    or run on different DUT kernels (None when none does): how many, the first few, what
    to do."""
    lines = [w for w in (_pooled_warning(points_df, *p, where) for p in POOLED) if w]
    return "\n".join(lines) or None



def _cell(mean, lo, hi, n) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if n < 2 or lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {(hi - lo) / 2:.2g}"


def markdown(points_df: pd.DataFrame, by=None) -> str:
    by = _shown(points_df, point_columns(points_df) if by is None else by)
    heads = list(by) + ["n"] + [label for _, label in METRICS]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" for _ in heads) + "|"]
    for _, r in points_df.iterrows():
        cells = [str(r[b]) for b in by] + [str(r["repeats"])]
        cells += [_cell(r[f"{c}_mean"], r[f"{c}_ci95_lo"], r[f"{c}_ci95_hi"], r[f"{c}_n"]) for c, _ in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    warning = code_warning(points_df)
    return ("\n".join(lines) + "\n\nmean ± half-width of the 95 % confidence interval of the mean "
            "(Student t, n - 1 degrees of freedom) over the repeats of each point.\n"
            + (f"\n{warning}\n" if warning else ""))


def latex(points_df: pd.DataFrame, by=None) -> str:
    """A booktabs table (\\usepackage{booktabs}); mean ± CI half-width per cell."""
    by = _shown(points_df, point_columns(points_df) if by is None else by)
    def esc(text):
        return (str(text).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%")
                .replace("µ", "$\\mu$").replace("±", "$\\pm$"))

    heads = [esc(b) for b in by] + ["$n$"] + [esc(label) for _, label in METRICS]
    out = ["\\begin{tabular}{" + "r" * len(heads) + "}", "\\toprule", " & ".join(heads) + " \\\\", "\\midrule"]
    for _, r in points_df.iterrows():
        cells = [str(r[b]) for b in by] + [str(r["repeats"])]
        cells += [esc(_cell(r[f"{c}_mean"], r[f"{c}_ci95_lo"], r[f"{c}_ci95_hi"], r[f"{c}_n"]))
                  for c, _ in METRICS]
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)


def write_points(summary: pd.DataFrame, csv_out: str, md_out: str, tex_out: str,
                 per_testbed: bool = False) -> pd.DataFrame:
    """points.csv, points.md and points.tex from the summary table, each written whole.
    `per_testbed`: a point's repeats on different testbeds of a pool are not pooled (one row
    per point and `testbed_name`), unless the configuration says the testbeds are
    equivalent (testbeds_equivalent)."""
    from pathlib import Path

    by = point_columns(summary)
    if per_testbed and "testbed_name" in summary.columns:
        by = by + ["testbed_name"]
    p = points(summary, by)
    for out, text in ((csv_out, p.to_csv(index=False)), (md_out, markdown(p, by)), (tex_out, latex(p, by))):
        tmp = Path(out).with_name(f".{Path(out).name}.tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return p
