"""Rule latency_figure: one-way latency percentiles (p50, p90, p99, p99.9, max) against the
load as a fraction of the PDR, one panel per frame size, log y axis in µs (SVG for
papers, PNG for a quick look), from latency.csv (docs/latency.md)."""
import csv
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402
from xdplab.plotting import DPI, plt  # noqa: E402

# column -> (label, colour, marker)
SERIES = [
    ("p50_us", "p50", "tab:blue", "o"),
    ("p90_us", "p90", "tab:green", "s"),
    ("p99_us", "p99", "tab:orange", "^"),
    ("p999_us", "p99.9", "tab:red", "v"),
    ("max_us", "max", "0.3", "x"),
]
LINESTYLES = ["-", "--", ":", "-."]


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def num(v):
    return None if v in (None, "") else float(v)


def panels(rows):
    """[(frame size, its rows)] in ascending frame size; rows without one last."""
    by = {}
    for r in rows:
        by.setdefault(r["frame_size"] or "", []).append(r)
    return sorted(by.items(), key=lambda kv: (kv[0] == "", num(kv[0]) or 0))


def title(frame, rows) -> str:
    r = rows[0]
    payload = f" ({r['packet_size']} B payload)" if r.get("packet_size") else ""
    rates = []
    for key, name in (("pdr_pps", "PDR"), ("ndr_pps", "NDR")):
        found = sorted({num(x[key]) for x in rows if num(x[key]) is not None})
        rates.append(f"{name} " + (", ".join(f"{v:,.0f}" for v in found) + " pps" if found else "none"))
    return f"{frame} B frames{payload}: " + "; ".join(rates) if frame else "frame size unknown: " + "; ".join(rates)


def not_drawn(rows) -> str:
    """'not drawn: <loads>: <why>' for the rows without a point, one line per reason."""
    reasons = {}
    for r in rows:
        if num(r["p50_us"]) is None:
            why = r.get("latency_method") or "no latency"
            why = why[len("n/a: "):] if why.startswith("n/a: ") else why
        elif num(r["fraction_of_pdr_pct"]) is None:
            why = "no PDR to place it against"
        else:
            continue
        reasons.setdefault(why, []).append(r["load"])
    lines = [textwrap.fill(f"{', '.join(loads)}: {why}", 140, subsequent_indent="    ")
             for why, loads in reasons.items()]
    return "not drawn:\n" + "\n".join(lines) if lines else ""


def draw_panel(ax, rows):
    searches = list(dict.fromkeys(r.get("search") or "" for r in rows))
    drawn = 0
    for i, search in enumerate(searches):
        mine = [r for r in rows if (r.get("search") or "") == search
                and num(r["fraction_of_pdr_pct"]) is not None and num(r["p50_us"]) is not None]
        mine.sort(key=lambda r: num(r["fraction_of_pdr_pct"]))
        xs = [num(r["fraction_of_pdr_pct"]) for r in mine]
        for col, label, colour, marker in SERIES:
            ys = [num(r[col]) for r in mine]
            name = label + (f" ({search})" if len(searches) > 1 and search else "")
            ax.plot(xs, ys, marker=marker, color=colour, ls=LINESTYLES[i % len(LINESTYLES)], lw=1.0, label=name)
        for r, x in zip(mine, xs):
            ax.annotate(r["load"], (x, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -3),
                        textcoords="offset points", fontsize=6, color="0.35", rotation=90, va="top")
        drawn += len(mine)
    why = not_drawn(rows)
    if why:
        # Lower right when there are points: high loads have high latencies, so it is free there.
        ax.text(0.99 if drawn else 0.01, 0.03 if drawn else 0.5, why, transform=ax.transAxes, fontsize=6,
                color="tab:red", va="bottom" if drawn else "center", ha="right" if drawn else "left",
                multialignment="left")
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.set_yticks([])
    ax.set_xlim(-2, max([105.0] + [num(r["fraction_of_pdr_pct"]) * 1.05 for r in rows
                                    if num(r["fraction_of_pdr_pct"]) is not None]))
    ax.set_xlabel("offered load (% of the PDR)")
    ax.set_ylabel("one-way latency (µs, log scale)")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    return drawn


def draw(sm, log):
    rows = read(sm.input.csv)
    groups = panels(rows) or [("", [])]
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 3.4 * len(groups)), squeeze=False)
    drawn = 0
    for ax, (frame, mine) in zip(axes[:, 0], groups):
        drawn += draw_panel(ax, mine) if mine else 0
        ax.set_title(title(frame, mine) if mine else "no latency trials", fontsize=8)
    experiment = getattr(sm.params, "experiment", None)
    fig.suptitle("One-way latency against load" + (f", experiment {experiment}" if experiment else "")
                 + " (percentiles of every packet; names: the load)", fontsize=10)
    fig.tight_layout()
    for out in (sm.output.svg, sm.output.png):
        fig.savefig(out, dpi=DPI)
    plt.close(fig)
    log(f"{len(groups)} frame size(s), {drawn} load(s) drawn of {len(rows)} -> {sm.output.svg}")


steps.run_step(snakemake, draw)
