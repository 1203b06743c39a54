"""The experiment's figures, drawn from summary.csv (and each trial's timeseries.csv).

The summary figure (where every packet went, what was lost, the rates and costs) is
summaryfigure.py's; plot_summary and draw_summary are read here too.

The figures for a paper (achieved and loss vs offered rate, XDP cost vs size, latency vs
rate): one marker per grid point, the mean over its repeats with the 95 % confidence
interval of the mean as error bar, computed by stats.points (the numbers of points.csv).
One series per combination of the grid dimensions that vary (xdp_mode, collector,
pattern), named in the legend; a dimension absent from old data counts as one value.
Each as SVG and PNG for the report, and as PDF sized for a one- and a two-column paper
figure (`<stem>.1col.pdf`, `<stem>.2col.pdf`: PAPER_WIDTHS_IN, PAPER_STYLE), without a title
since the paper's caption says it.

Per trial: its time series, one row per second of the measured window.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib  # noqa: F401  (tests read its rcParams here)
import pandas as pd

from . import stats
from .plotting import DIMS, DPI, MISSING, POINT, constant, normalise, numeric, plt, varying  # noqa: F401
from .summaryfigure import draw_summary, plot_summary  # noqa: F401  (workflow/scripts/figures.py)

# A paper figure's width: one column and the full page of the IEEE and ACM two-column
# templates (3.5 in, 7.16 in = 516 pt); PDFs named <stem>.1col.pdf and <stem>.2col.pdf.
PAPER_WIDTHS_IN = {"1col": 3.5, "2col": 7.16}
# One style for every paper figure: type about the size of a caption's at print size.
PAPER_STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6,
               "ytick.labelsize": 6, "legend.fontsize": 6, "lines.linewidth": 1.0,
               "lines.markersize": 3, "errorbar.capsize": 2, "axes.linewidth": 0.6,
               "xtick.major.width": 0.6, "ytick.major.width": 0.6}


# ---------------------------------------------------------------------------------------
# The figures for a paper: one marker per grid point, mean over its repeats +- 95 % CI.

CI_NOTE = ("markers: mean over the repeats of a point; error bars: 95 % confidence interval "
           "of the mean (Student t), cut at 0; a point with one repeat has no bar")
RATE_LABEL = "offered rate (packets/s)"
SIZE_LABEL = "UDP payload size (bytes)"
SOFTIRQ_LABEL = "softirq CPU (% of all CPUs)"


def combo_label(keys: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k} {v}" for k, v in zip(keys, values))


def grid_points(df: pd.DataFrame) -> pd.DataFrame:
    """stats.points (the numbers of points.csv) per combination of offered rate, payload size
    and the grid dimensions present; a missing metric column is NaN, never an error."""
    df = normalise(df)
    for col in ["sent", "lost"] + [c for c, _ in stats.METRICS] + POINT:
        df[col] = numeric(df, col)
    df = df.dropna(subset=POINT)
    by = POINT + [d for d in DIMS if d in df]
    if not len(df):
        return pd.DataFrame(columns=by)
    p = stats.points(df, by=by)
    for col in p.columns:
        if col not in by:
            p[col] = pd.to_numeric(p[col], errors="coerce")
    return p


def _series(p: pd.DataFrame, keys: list[str]):
    """(label, rows) per combination of `keys`, in order; one unnamed series without keys."""
    if not keys:
        yield "", p
        return
    for values, g in p.groupby(keys, sort=True):
        yield combo_label(keys, values), g


def _ci(ax, x, p: pd.DataFrame, col: str, **style) -> bool:
    """Means of `col` at x with their 95 % CI as error bars; False when nothing to draw.
    Every metric drawn is at least 0 (rates, %, ns, µs), so a bar stops at 0."""
    m = p[f"{col}_mean"]
    ok = m.notna().to_numpy()
    if not ok.any():
        return False
    lo = (m - p[f"{col}_ci95_lo"].clip(lower=0)).clip(lower=0).fillna(0)
    hi = (p[f"{col}_ci95_hi"] - m).clip(lower=0).fillna(0)
    ax.errorbar(pd.Series(x).to_numpy()[ok], m.to_numpy()[ok], yerr=[lo.to_numpy()[ok], hi.to_numpy()[ok]],
                **style)
    return True


def _colors(p: pd.DataFrame, keys: list[str]) -> dict:
    """One colour per series label, the same in every panel of a figure."""
    return {label: f"C{i % 10}" for i, (label, _) in enumerate(_series(p, keys))}


def _log_if_wide(ax, values, axis="x") -> bool:
    vals = pd.Series(values, dtype=float).dropna()
    vals = vals[vals > 0]
    if len(vals) and vals.max() / vals.min() >= 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        return True
    return False


def _panels(n: int, title: str, note: str = "", width_in: float | None = None):
    """A figure with n panels, at most three a row; for a paper (width_in), as many a row
    as fit at about 2.3 in each, and no title."""
    cols = max(1, min(n, int(width_in // 2.3) if width_in else 3))
    rows = max(1, math.ceil(n / cols))
    size = ((width_in, rows * min(2.4, 0.8 * width_in / cols)) if width_in
            else (max(10.0, 5.2 * cols + 0.8), 4.4 * rows + 0.9))
    fig, axes = plt.subplots(rows, cols, figsize=size, dpi=DPI, layout="constrained", squeeze=False)
    for ax in axes.flat[max(n, 1):]:
        ax.set_visible(False)
    if not width_in:
        chars = int(fig.get_figwidth() * 13)   # about what fits at 10 pt
        fig.suptitle("\n".join(textwrap.fill(t, chars) for t in (title, note) if t), fontsize=10)
    return fig, list(axes.flat[:max(n, 1)])


def _title(what: str, experiment: str, df: pd.DataFrame, extra: str = "") -> str:
    same = constant(df)
    parts = [f"xdplab experiment '{experiment}': {what}"]
    if same:
        parts.append("all trials " + ", ".join(f"{k} {v}" for k, v in same.items()))
    return "; ".join(parts + ([extra] if extra else []))


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize="small", wrap=True)


def _legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        ax.legend(loc="best", ncol=1 + len(labels) // 12)


def _without_off(p: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The points that ran an XDP program: collector `off` has no run time and no arrival
    timestamps; says so when it drops any."""
    if "collector" in p and (p["collector"] == "off").any():
        return p[p["collector"] != "off"], "collector off not drawn (no XDP program)"
    return p, ""


def _by_size_panels(df: pd.DataFrame, experiment: str, what: str, width_in: float | None = None):
    """Points, one panel per payload size, the series keys and their colours."""
    p = grid_points(df)
    sizes = sorted(p["packet_size"].unique()) if len(p) else []
    keys = varying(p)
    fig, axes = _panels(len(sizes), _title(what, experiment, normalise(df)), CI_NOTE, width_in)
    return p, sizes, keys, fig, axes


def draw_rate(df: pd.DataFrame, experiment: str, width_in: float | None = None):
    """Achieved vs offered rate, one panel per payload size, with the ideal y = x."""
    p, sizes, keys, fig, axes = _by_size_panels(df, experiment, "achieved vs offered rate", width_in)
    colors = _colors(p, keys)
    for ax, size in zip(axes, sizes):
        ps = p[p["packet_size"] == size]
        for label, g in _series(ps, keys):
            _ci(ax, g["target_pps"], g, "achieved_pps", color=colors[label], marker="o",
                linestyle="-", label=label or "achieved")
        vals = pd.concat([ps["target_pps"], ps["achieved_pps_mean"], ps["achieved_pps_ci95_hi"]]).dropna()
        lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
        if _log_if_wide(ax, ps["target_pps"]):
            ax.set_yscale("log")
            lo = max(lo / 1.5, 1e-9)
        else:
            lo = 0.0
        hi = max(hi, 1.0) * 1.1
        ax.plot([max(lo, 1e-9) if lo else 0, hi], [max(lo, 1e-9) if lo else 0, hi], "k:",
                linewidth=1, label="achieved = offered")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f"{size} B payload", fontsize="medium")
        ax.set_xlabel(RATE_LABEL)
        ax.set_ylabel("achieved rate (packets/s)")
        _legend(ax)
    if not sizes:
        _empty(axes[0], "no trials")
        axes[0].set_xlabel(RATE_LABEL)
        axes[0].set_ylabel("achieved rate (packets/s)")
    return fig


def draw_loss(df: pd.DataFrame, experiment: str, width_in: float | None = None):
    """Loss (% of packets sent that never reached XDP) vs offered rate, one panel per size;
    symmetric log, so that 0.001 % and 10 % both show."""
    p, sizes, keys, fig, axes = _by_size_panels(df, experiment, "loss vs offered rate", width_in)
    colors = _colors(p, keys)
    for ax, size in zip(axes, sizes):
        ps = p[p["packet_size"] == size]
        drawn = False
        for label, g in _series(ps, keys):
            drawn |= _ci(ax, g["target_pps"], g, "loss_pct", color=colors[label], marker="o",
                         linestyle="-", label=label or "loss")
        if not drawn:
            _empty(ax, "loss not available (no sent or lost count)")
        _log_if_wide(ax, ps["target_pps"])
        ax.margins(x=0.08)
        ax.set_yscale("symlog", linthresh=1e-3)
        vals = pd.concat([ps["loss_pct_ci95_hi"], ps["loss_pct_mean"]]).dropna()
        ax.set_ylim(0, max(1.0, float(vals.max()) * 3 if len(vals) else 1.0))
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{size} B payload", fontsize="medium")
        ax.set_xlabel(RATE_LABEL)
        ax.set_ylabel("loss (% of packets sent, symlog)")
        _legend(ax)
    if not sizes:
        _empty(axes[0], "no trials")
        axes[0].set_xlabel(RATE_LABEL)
        axes[0].set_ylabel("loss (% of packets sent, symlog)")
    return fig


def draw_xdp_cost(df: pd.DataFrame, experiment: str, width_in: float | None = None):
    """XDP run time per packet vs payload size, one series per offered rate (and per
    combination of the varying dimensions)."""
    p = grid_points(df)
    p, skipped = _without_off(p)
    keys = ["target_pps"] + varying(grid_points(df))
    fig, (ax,) = _panels(1, _title("XDP run time per packet vs payload size", experiment,
                                   normalise(df), skipped), CI_NOTE, width_in)
    drawn = False
    series = list(_series(p, keys))
    # Series side by side at each size, so that their bars do not hide each other.
    span = float(p["packet_size"].max() - p["packet_size"].min()) if len(p) else 0.0
    step = 0.008 * (span or 100.0)
    for i, (label, g) in enumerate(series):
        label = label.replace("target_pps ", "").replace(",", " pps,", 1) if "," in label else \
            label.replace("target_pps ", "") + " pps"
        x = g["packet_size"] + (i - (len(series) - 1) / 2) * step
        drawn |= _ci(ax, x, g, "xdp_ns_per_pkt", color=f"C{i % 10}", marker="o",
                     linestyle="-", label=f"offered {label}")
    if not drawn:
        _empty(ax, "no XDP run-time statistics\n(collector off, or not measured)")
    vals = p["xdp_ns_per_pkt_ci95_hi"].fillna(p["xdp_ns_per_pkt_mean"]).dropna() if len(p) else []
    ax.set_ylim(0, max(1.0, float(max(vals)) if len(vals) else 1.0) * 1.15)
    ax.margins(x=0.08)
    ax.set_xlabel(SIZE_LABEL)
    ax.set_ylabel("XDP run time per packet (ns)")
    _legend(ax)
    return fig


def draw_latency(df: pd.DataFrame, experiment: str, width_in: float | None = None):
    """One-way latency p50 and p99 vs offered rate, one panel per payload size."""
    p0 = grid_points(df)
    p, skipped = _without_off(p0)
    sizes = sorted(p0["packet_size"].unique()) if len(p0) else []
    keys = varying(p0)
    colors = _colors(p0, keys)
    fig, axes = _panels(len(sizes), _title("one-way latency vs offered rate", experiment,
                                           normalise(df), skipped), CI_NOTE, width_in)
    for ax, size in zip(axes, sizes):
        ps = p[p["packet_size"] == size]
        drawn = False
        for label, g in _series(ps, keys):
            for col, pct, marker, ls in (("latency_p50_us", "p50", "o", "-"),
                                         ("latency_p99_us", "p99", "s", "--")):
                drawn |= _ci(ax, g["target_pps"], g, col, color=colors[label], marker=marker,
                             linestyle=ls, label=f"{label}, {pct}" if label else pct)
        if not drawn:
            _empty(ax, "latency not available\n(source and DUT do not share a clock,\nor collector off)")
        _log_if_wide(ax, p0.loc[p0["packet_size"] == size, "target_pps"])
        ax.margins(x=0.08)
        vals = pd.concat([ps["latency_p99_us_ci95_hi"], ps["latency_p99_us_mean"],
                          ps["latency_p50_us_mean"]]).dropna()
        ax.set_ylim(0, max(1.0, float(vals.max()) if len(vals) else 1.0) * 1.15)
        ax.set_title(f"{size} B payload", fontsize="medium")
        ax.set_xlabel(RATE_LABEL)
        ax.set_ylabel("one-way latency (µs)")
        _legend(ax)
    if not sizes:
        _empty(axes[0], "no trials")
        axes[0].set_xlabel(RATE_LABEL)
        axes[0].set_ylabel("one-way latency (µs)")
    return fig


# name: (file stem, drawing function); the rule names its outputs after the stems.
FIGURES = {
    "rate": ("achieved_vs_offered", draw_rate),
    "loss": ("loss_vs_offered", draw_loss),
    "xdp_cost": ("xdp_ns_vs_size", draw_xdp_cost),
    "latency": ("latency_vs_offered", draw_latency),
}


def _save(fig, outputs) -> None:
    for out in outputs:
        # A PDF without its creation date: the same file for the same data, as SVG's hashsalt.
        fig.savefig(out, dpi=DPI, **({"metadata": {"CreationDate": None}} if out.endswith(".pdf") else {}))
    plt.close(fig)


def paper_width(path: str) -> float | None:
    """The width in inches a file name asks for (<stem>.1col.pdf, <stem>.2col.pdf), or None."""
    parts = path.rsplit(".", 2)
    return PAPER_WIDTHS_IN.get(parts[-2]) if len(parts) == 3 and parts[-1] == "pdf" else None


def plot_figures(csv_path: str, outputs: dict, experiment: str) -> None:
    """outputs: {figure name (FIGURES): [paths]}: .svg and .png for the report, and
    <stem>.1col.pdf and <stem>.2col.pdf drawn again in PAPER_STYLE at the paper's width."""
    df = pd.read_csv(csv_path)
    for name, paths in outputs.items():
        by_width = {}
        for path in paths:
            by_width.setdefault(paper_width(path), []).append(path)
        for width, same in by_width.items():
            with plt.rc_context(PAPER_STYLE if width else {}):
                _save(FIGURES[name][1](df, experiment, width), same)


# ---------------------------------------------------------------------------------------
# Per trial: the time series of its measured window, one row per second.

TS_RATES = [  # (column, label): the packet's path, per second
    ("sent_pps", "sent (generator)"),
    ("nic_rx_pps", "nic_rx (DUT interface)"),
    ("xdp_matched_pps", "xdp_matched (collector)"),
    ("features_pps", "features (ring buffer)"),
]


def draw_timeseries(ts: pd.DataFrame, title: str):
    """Rates along the path, ring-buffer drops and softirq CPU, per second of the window."""
    x = numeric(ts, "second") if "second" in ts else pd.Series(range(len(ts)), dtype=float)
    # A fixed layout (the same three panels for every trial): the constrained layout engine
    # would cost ~40 % of the figure's time, once per trial of a sweep.
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), dpi=DPI, sharex=True, height_ratios=[2, 1, 1],
                             gridspec_kw={"left": 0.1, "right": 0.97, "top": 0.9, "bottom": 0.07,
                                          "hspace": 0.12})
    fig.suptitle(f"{title}\none point per second of the measured window (warm-up excluded)",
                 fontsize=10)
    ax = axes[0]
    styles = ["-", "--", "-.", ":"]
    drawn = False
    for i, (col, label) in enumerate(TS_RATES):
        y = numeric(ts, col)
        if y.notna().any():
            ax.plot(x, y, styles[i], color=f"C{i}", marker="o", markersize=3, label=label)
            drawn = True
    if not drawn:
        _empty(ax, "no rates in timeseries.csv")
    top = pd.concat([numeric(ts, c) for c, _ in TS_RATES]).max()
    ax.set_ylim(0, max(1.0, 0.0 if pd.isna(top) else float(top)) * 1.3)   # room for the legend
    ax.set_ylabel("rate (packets/s)")
    _legend(ax)
    # (two-line labels: the lower panels are shorter than the labels' one-line length)
    for ax, col, label, what in ((axes[1], "ringbuf_drops_per_s", "ring-buffer drops\n(records/s)",
                                  "ring-buffer drops"),
                                 (axes[2], "softirq_pct", SOFTIRQ_LABEL.replace(" (", "\n("), "softirq CPU")):
        y = numeric(ts, col)
        if y.notna().any():
            ax.plot(x, y, "-", color="C3" if col.startswith("ringbuf") else "C4", marker="o",
                    markersize=3)
            ax.set_ylim(bottom=0, top=max(1.0, float(y.max())) * 1.15)
        else:
            _empty(ax, f"{what} not recorded")
        ax.set_ylabel(label)
    axes[-1].set_xlabel("second of the measured window (s)")
    return fig


def plot_timeseries(csv_path: str, outputs: list[str], title: str) -> None:
    _save(draw_timeseries(pd.read_csv(csv_path), title), outputs)
