"""Rule ndr_figure: loss against offered rate for every trial of the zero-loss searches,
one panel per search, the rate found marked (SVG for papers, PNG for a quick look)."""
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402
from xdplab.frames import frame_bytes  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

# (kind, outcome) -> marker, colour, label
STYLE = {
    ("probe", "pass"): ("o", "tab:green", "probe: passed"),
    ("probe", "loss"): ("o", "tab:red", "probe: lost"),
    ("probe", "source"): ("x", "tab:purple", "probe: source could not offer the rate"),
    ("confirm", "pass"): ("D", "tab:green", "long trial: passed"),
    ("confirm", "loss"): ("D", "tab:red", "long trial: lost"),
    ("confirm", "source"): ("X", "tab:purple", "long trial: source could not offer the rate"),
}


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def num(v):
    return None if v in (None, "") else float(v)


def bit_rates(search: dict) -> str:
    """', 12.3 Mbit/s L2, 15.6 Mbit/s L1' of ndr.csv's row (empty where it has none)."""
    l2, l1 = num(search.get("ndr_l2_mbps")), num(search.get("ndr_wire_mbps"))
    return "" if l2 is None or l1 is None else f", {l2:,.1f} Mbit/s L2, {l1:,.1f} Mbit/s L1"


def draw(sm, log):
    searches = read(sm.input.csv)
    probes = read(sm.input.probes)
    n = max(len(searches), 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.4 * n), squeeze=False)
    for ax, s in zip(axes[:, 0], searches):
        mine = [p for p in probes if p["search"] == s["search"]]
        seen = set()
        for p in mine:
            marker, colour, label = STYLE[(p["kind"], p["outcome"])]
            # A trial whose source did not offer its rate has no loss that says anything
            # about the DUT: drawn at its measured loss, marked as the source's failure.
            ax.scatter([num(p["target_pps"])], [num(p["loss_pct"]) or 0.0], marker=marker, color=colour,
                       s=36, zorder=3, label=None if label in seen else label)
            seen.add(label)
            ax.annotate(p["step"], (num(p["target_pps"]), num(p["loss_pct"]) or 0.0), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color="0.35")
        threshold = num(s["loss_threshold_pct"]) or 0.0
        ax.axhline(threshold, color="0.5", lw=0.8, ls=":", label=f"loss allowed: {threshold:g} %")
        ndr_pps = num(s["ndr_pps"])
        if ndr_pps is not None:
            ax.axvline(ndr_pps, color="tab:blue", lw=1.2,
                       label=f"zero-loss rate: {int(ndr_pps):,} pps{bit_rates(s)} (limited by {s['limited_by']})")
        else:
            ax.text(0.02, 0.9, f"no rate passed (limited by {s['limited_by']})", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_ylim(0, 150)
        ax.set_xlabel("offered rate (packets/s, log scale)")
        ax.set_ylabel("loss (% of packets sent)")
        ax.set_title(f"{frame_bytes(int(s['packet_size']))} B frames ({s['packet_size']} B payload), xdp {s['xdp_mode']}, collector {s['collector']}, "
                     f"{s['pattern']}: resolution {float(s['resolution_pct']):g} %, probes "
                     f"{s['probe_s']} s, long trials {s['confirm_s'] or '-'} s", fontsize=8)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(f"Zero-loss rate search, experiment {sm.params.experiment} (numbers: step)", fontsize=10)
    fig.tight_layout()
    for out in (sm.output.svg, sm.output.png):
        fig.savefig(out, dpi=110)
    plt.close(fig)
    log(f"{len(searches)} search(es), {len(probes)} trial(s) -> {sm.output.svg}")


steps.run_step(snakemake, draw)
