"""Rule search_figure: the loads each search tried, in the order it tried them, coloured by
the trial's loss, with each goal's bounds (SVG for papers, PNG for a quick look)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402
from xdplab.frames import frame_bytes  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

GOAL_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]


def trial_class(t, goals):
    """(label, colour, marker) of a trial: which goals' loss ratios it met."""
    if not t["rate_sustained"]:
        return "source could not offer the load (not counted)", "tab:purple", "x"
    met = [g for g in goals if (t["loss_pct"] or 0.0) <= g["loss_pct"]]
    if len(met) == len(goals):
        return "met every goal's loss ratio", "tab:green", "o"
    if not met:
        return "exceeded every goal's loss ratio", "tab:red", "o"
    return f"met {', '.join(g['name'] for g in met)} only", "tab:orange", "o"


def draw(sm, log):
    records = [steps.read_json(p) for p in sm.input.records]
    n = max(len(records), 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.6 * n), squeeze=False)
    for ax, rec in zip(axes[:, 0], records):
        goals = rec["params"]["goals"]
        seen = set()
        for t in rec["result"]["trials"]:
            label, colour, marker = trial_class(t, goals)
            ax.scatter([t["index"] + 1], [t["pps"]], marker=marker, color=colour, s=14 + 10 * t["duration_s"],
                       zorder=3, label=None if label in seen else label)
            seen.add(label)
        for k, g in enumerate(rec["result"]["goals"]):
            colour = GOAL_COLOURS[k % len(GOAL_COLOURS)]
            if g["lower_bound_pps"] is not None:
                ax.axhline(g["lower_bound_pps"], color=colour, lw=1.1,
                           label=f"{g['goal']} lower bound {g['lower_bound_pps']:,} pps ({g['result']})")
            if g["upper_bound_pps"] is not None:
                ax.axhline(g["upper_bound_pps"], color=colour, lw=1.1, ls="--",
                           label=f"{g['goal']} upper bound {g['upper_bound_pps']:,} pps")
        s = rec["settings"]
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: ""))
        ax.set_xlabel("trial, in the order the search ran it (marker size: trial duration)")
        ax.set_ylabel("offered load (packets/s, log scale)")
        trial_s = sum(t["duration_s"] for t in rec["result"]["trials"])
        ax.set_title(f"{frame_bytes(int(s['packet_size']))} B frames ({s['packet_size']} B payload), xdp "
                     f"{s['xdp_mode']}, {s['collector']}, {s['pattern']}: {len(rec['result']['trials'])} trials, "
                     f"{trial_s} s of measured traffic, {rec.get('wall_s') or 0:.0f} s wall", fontsize=8)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(sm.output.svg)
    fig.savefig(sm.output.png, dpi=110)
    log(f"{len(records)} search(es) -> {sm.output.svg}")


steps.run_step(snakemake, draw)
