"""The summary figure, drawn from summary.csv: where every packet went, what was lost,
and the rates and costs.

Trials are grouped by their point (offered rate, payload size, and the grid's other
dimensions where they vary); repeats of a point are summarised (mean, with a bar from the
lowest to the highest repeat) and each repeat is also drawn as a small dot, so that 1, 12
or 60 trials read the same way.  Losses get their own panel on a symmetric log axis: 273
lost of 3,000,000 sent is as visible there as 273,000, and 0 is still 0.
"""

from __future__ import annotations

import math

import pandas as pd

from .plotting import DPI, POINT, constant, normalise, numeric, plt, varying

STAGES = [  # (column, label): the packet's path from the generator to user space
    ("sent", "sent (generator)"),
    ("nic_rx", "nic_rx (DUT interface)"),
    ("xdp_matched", "xdp_matched (collector)"),
    ("features_received", "features_received (ring buffer)"),
    ("tcpdump_captured", "tcpdump_captured"),
]
LOSSES = [  # (column, label, marker): what did not arrive or did not add up, per trial
    ("lost", "lost (sent - xdp_matched)", "o"),
    ("unexplained", "unexplained (identities' residuals)", "X"),
    ("ringbuf_drops", "ringbuf_drops", "s"),
    ("tcpdump_dropped", "tcpdump_dropped", "^"),
    ("send_errors", "send_errors (not sent)", "v"),
]
# Room per category label on the accounting axes, in pixels of the saved figure.
LABEL_PX = 13


def points(df: pd.DataFrame, key: list[str] | None = None) -> pd.DataFrame:
    """One row per point (offered rate, payload size, then the varying grid dimensions),
    in order, with the number of repeats."""
    key = key or POINT
    pts = (df.groupby(key, sort=True).size().rename("n").reset_index())
    pts["label"] = [", ".join([f"{r['target_pps']:,} pps", f"{r['packet_size']} B"]
                              + [str(r[d]) for d in key[len(POINT):]]) for _, r in pts.iterrows()]
    return pts


def _summary(df: pd.DataFrame, col: str, key: list[str] | None = None) -> pd.DataFrame:
    """mean, min and max of `col` per point (NaN rows ignored)."""
    g = df.assign(_v=numeric(df, col)).groupby(key or POINT, sort=True)["_v"]
    return pd.DataFrame({"mean": g.mean(), "min": g.min(), "max": g.max()}).reset_index()


def _errbars(s: pd.DataFrame):
    return [(s["mean"] - s["min"]).clip(lower=0), (s["max"] - s["mean"]).clip(lower=0)]


def _category_axis(ax, pts: pd.DataFrame, width_px: float) -> None:
    """Point labels under the accounting axes: rotated when there are many, and thinned
    to every k-th when even rotated labels would not fit."""
    n = len(pts)
    every = max(1, math.ceil(n * LABEL_PX / max(width_px, 1)))
    ticks = list(range(0, n, every))
    # Horizontal while the labels fit side by side (about 5.8 px per character at 8 pt).
    rotate = n * max(len(t) for t in pts["label"]) * 5.8 > width_px * 0.9
    ax.set_xticks(ticks, [pts["label"][i] for i in ticks], rotation=90 if rotate else 0,
                  fontsize=7 if rotate else 8)
    ax.set_xlim(-0.6, n - 0.4)
    if every > 1:
        ax.set_xlabel(f"point (offered rate, payload size); every {every}th labelled")


def _rate_axis(ax, df: pd.DataFrame) -> None:
    rates = numeric(df, "target_pps").dropna()
    if len(rates) and rates.max() / max(rates.min(), 1) >= 20:
        ax.set_xscale("log")
    ax.set_xlabel("offered rate (packets/s)")
    ax.margins(x=0.08)


def _by_size(ax, df: pd.DataFrame, col: str, label: str, marker: str = "o", linestyle: str = "-"):
    """Per payload size: each trial as a small dot, the mean over repeats joined by a
    line, with a bar from the lowest to the highest repeat."""
    drawn = False
    dims = varying(df)
    for i, (key, g) in enumerate(df.groupby(["packet_size"] + dims, sort=True)):
        key = key if isinstance(key, tuple) else (key,)
        s = _summary(g, col).dropna(subset=["mean"])
        if not len(s):
            continue
        color = f"C{i % 10}"
        ax.plot(g["target_pps"], numeric(g, col), marker, color=color, alpha=0.35, markersize=3,
                linestyle="none", clip_on=False)
        series = ", ".join([f"{key[0]} B payload"] + [str(v) for v in key[1:]])
        ax.errorbar(s["target_pps"], s["mean"], yerr=_errbars(s), color=color, marker=marker,
                    linestyle=linestyle, markersize=5, capsize=3, clip_on=False,
                    label=f"{label}, {series}" if label else series)
        drawn = True
    return drawn


def _top(values, floor: float = 1.0) -> float:
    """An upper y limit with room above the highest point, so that nothing is clipped."""
    values = [pd.to_numeric(v, errors="coerce") for v in values]
    vals = pd.concat(values).dropna() if values else pd.Series(dtype=float)
    top = float(vals.max()) if len(vals) else 0.0
    return max(top, floor) * 1.15


def draw_summary(df: pd.DataFrame, experiment: str):
    """The figure for summary.csv's rows (a DataFrame); returns the matplotlib Figure."""
    df = normalise(df)
    key = POINT + varying(df)
    df = df.sort_values(key + (["repeat"] if "repeat" in df else []), kind="stable").reset_index(drop=True)
    pts = points(df, key)
    n_trials, n_points = len(df), len(pts)
    reps = sorted(set(pts["n"]))
    fig_w = min(22.0, max(14.0, 6 + 0.25 * n_points))
    fig = plt.figure(figsize=(fig_w, 15), dpi=DPI, layout="constrained")
    rep_text = (f"{reps[0]} repeat(s) per point" if len(reps) == 1
                else f"{reps[0]} to {reps[-1]} repeats per point")
    same = constant(df)
    same_text = ("; all trials " + ", ".join(f"{k} {v}" for k, v in same.items())) if same else ""
    fig.suptitle(f"xdplab experiment '{experiment}': {n_trials} trial(s), {n_points} point(s), "
                 f"{rep_text}{same_text}\nmarkers: mean over repeats, bars: lowest to highest "
                 "repeat, dots: single trials", fontsize=10)
    grid = fig.add_gridspec(3, 3, height_ratios=[1.15, 1.0, 1.0])
    width_px = fig_w * DPI * 0.85
    _accounting_panel(fig.add_subplot(grid[0, :]), df, key, pts, reps, width_px)
    _loss_panel(fig.add_subplot(grid[1, :]), df, key, pts, width_px)
    _rate_panel(fig.add_subplot(grid[2, 0]), df)
    _latency_panel(fig.add_subplot(grid[2, 1]), df)
    _cost_panel(fig.add_subplot(grid[2, 2]), df)
    return fig


def _accounting_panel(ax, df: pd.DataFrame, key: list, pts: pd.DataFrame, reps: list, width_px: float):
    """Packets per stage, per point."""
    n_points = len(pts)
    xs = range(n_points)
    bar_w = 0.8 / len(STAGES)
    for i, (col, label) in enumerate(STAGES):
        s = _summary(df, col, key)
        x = [x - 0.4 + (i + 0.5) * bar_w for x in xs]
        ax.bar(x, s["mean"], bar_w, label=label, color=f"C{i}",
               yerr=_errbars(s) if max(reps) > 1 else None, capsize=2 if n_points < 20 else 0,
               error_kw={"elinewidth": 0.8})
    ax.set_ylim(0, _top([numeric(df, c) for c, _ in STAGES]) * 1.15)   # room for the legend
    ax.set_ylabel("packets per trial")
    ax.set_title("Accounting: packets counted at each stage (linear; small differences are in "
                 "the panel below)", fontsize=10)
    _category_axis(ax, pts, width_px)
    ax.legend(fontsize=8, ncol=len(STAGES), loc="upper center")


def _loss_panel(ax, df: pd.DataFrame, key: list, pts: pd.DataFrame, width_px: float):
    """Losses: symmetric log, so that 0, 273 and 273,000 are all visible."""
    n_points = len(pts)
    index = {tuple(k): i for i, k in enumerate(pts[key].itertuples(index=False, name=None))}
    tops = []
    for j, (col, label, marker) in enumerate(LOSSES):
        vals = numeric(df, col)
        if vals.isna().all():
            continue
        if (vals.fillna(0) == 0).all():
            # Zero in every trial: said in the legend rather than drawn a hundred times.
            ax.plot([], [], marker, color=f"C{j + 5}", markerfacecolor="none", linestyle="none",
                    label=f"{label}: 0 in every trial")
            continue
        tops.append(vals)
        off = (j - (len(LOSSES) - 1) / 2) * 0.12
        x = [index[k] + off for k in df[key].itertuples(index=False, name=None)]
        ax.plot(x, vals, marker, color=f"C{j + 5}", alpha=0.45, markersize=4, linestyle="none",
                clip_on=False)
        s = _summary(df, col, key)
        ax.plot([i + off for i in range(n_points)], s["mean"], marker, color=f"C{j + 5}",
                markersize=7, markerfacecolor="none", linestyle="none", label=label, clip_on=False)
    if not tops:
        ax.text(0.5, 0.5, "every packet accounted for: these counts are 0 in every trial",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, _top(tops, floor=10) * 30)   # a decade and a half for the legend
    ax.set_ylabel("packets per trial (symlog)")
    ax.set_title("Loss and what does not add up (0 = every packet accounted for)", fontsize=10)
    _category_axis(ax, pts, width_px)
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax.grid(axis="y", alpha=0.3)


def _rate_panel(ax, df: pd.DataFrame):
    """Offered vs achieved rate."""
    _by_size(ax, df, "achieved_pps", "")
    hi = _top([numeric(df, "target_pps"), numeric(df, "achieved_pps")])
    _rate_axis(ax, df)
    if ax.get_xscale() == "log":   # log-log: the diagonal stays a diagonal
        lo = float(pd.concat([numeric(df, "target_pps"), numeric(df, "achieved_pps")]).min()) / 1.5
        ax.set_yscale("log")
    else:
        lo = 0
    ax.plot([max(lo, 1e-9), hi], [max(lo, 1e-9), hi], "k:", linewidth=1, label="achieved = offered")
    ax.set_ylim(max(lo, 1e-9) if lo else 0, hi)
    ax.set_ylabel("achieved rate (packets/s)")
    ax.set_title("Offered vs achieved rate (generator)", fontsize=10)
    ax.legend(fontsize=7, loc="best")


def _latency_panel(ax, df: pd.DataFrame):
    """One-way latency."""
    lat = df.dropna(subset=["latency_p50_us"]) if "latency_p50_us" in df else df.iloc[0:0]
    if len(lat):
        _by_size(ax, lat, "latency_p50_us", "p50")
        _by_size(ax, lat, "latency_p99_us", "p99", marker="s", linestyle="--")
        ax.set_ylim(0, _top([numeric(lat, "latency_p50_us"), numeric(lat, "latency_p99_us")]))
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "latency not available\n(source and DUT do not share a clock)",
                ha="center", va="center", transform=ax.transAxes)
    _rate_axis(ax, df)
    ax.set_ylabel("one-way latency (µs)")
    ax.set_title("Send (source) to XDP arrival (DUT)", fontsize=10)


def _cost_panel(ax, df: pd.DataFrame):
    """The collector's cost."""
    if _by_size(ax, df, "xdp_ns_per_pkt", ""):
        ax.legend(fontsize=7, loc="best")
    ax.set_ylim(0, _top([numeric(df, "xdp_ns_per_pkt")]))
    _rate_axis(ax, df)
    ax.set_ylabel("XDP run time per packet (ns)")
    ax.set_title("Collector cost (kernel run-time statistics)", fontsize=10)


def plot_summary(csv_path: str, outputs: list[str], experiment: str) -> None:
    fig = draw_summary(pd.read_csv(csv_path), experiment)
    for out in outputs:
        fig.savefig(out, dpi=DPI)
    plt.close(fig)
