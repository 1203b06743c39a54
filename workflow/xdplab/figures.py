"""One figure per experiment: where every packet went, and what the rates and costs were."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STAGES = [  # (column, label): the packet's path from the generator to user space
    ("sent", "sent (generator)"),
    ("nic_rx", "nic_rx (DUT interface)"),
    ("xdp_matched", "xdp_matched (collector)"),
    ("features_received", "features_received (ring buffer)"),
    ("tcpdump_captured", "tcpdump_captured"),
]


def _label(r) -> str:
    return f"{r.target_pps} pps\n{r.packet_size} B\n#{r.repeat}"


def plot_summary(csv_path: str, outputs: list[str], experiment: str) -> None:
    df = pd.read_csv(csv_path)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), constrained_layout=True)
    fig.suptitle(f"xdplab experiment '{experiment}': {len(df)} trial(s)")

    ax = axes[0][0]
    width = 0.8 / len(STAGES)
    xs = range(len(df))
    for i, (col, label) in enumerate(STAGES):
        ax.bar([x + i * width for x in xs], df[col], width, label=label)
    for x, r in zip(xs, df.itertuples()):
        ax.annotate(f"lost {r.lost}\nunexpl. {r.unexplained}", (x + 0.4 - width / 2, r.sent),
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks([x + 0.4 - width / 2 for x in xs], [_label(r) for r in df.itertuples()], fontsize=7)
    ax.set_ylabel("packets per trial")
    ax.set_ylim(0, max(1, df["sent"].max()) * 1.2)
    ax.set_title("Accounting: where every packet went")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)

    ax = axes[0][1]
    for size, g in df.groupby("packet_size"):
        ax.plot(g["target_pps"], g["achieved_pps"], "o-", label=f"{size} B payload")
    lim = [0, max(df["target_pps"].max(), df["achieved_pps"].max()) * 1.05]
    ax.plot(lim, lim, "k:", linewidth=1, label="achieved = offered")
    ax.set_xlabel("offered rate (packets/s)")
    ax.set_ylabel("achieved rate (packets/s)")
    ax.set_title("Offered vs achieved rate (generator)")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    lat = df.dropna(subset=["latency_p50_us"])
    if len(lat):
        for size, g in lat.groupby("packet_size"):
            ax.plot(g["target_pps"], g["latency_p50_us"], "o-", label=f"p50, {size} B")
            ax.plot(g["target_pps"], g["latency_p99_us"], "s--", label=f"p99, {size} B")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "latency not available\n(source and DUT do not share a clock)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("offered rate (packets/s)")
    ax.set_ylabel("one-way latency (µs)")
    ax.set_ylim(bottom=0)
    ax.set_title("Send (source) to XDP arrival (DUT)")

    ax = axes[1][1]
    for size, g in df.groupby("packet_size"):
        ax.plot(g["target_pps"], g["xdp_ns_per_pkt"], "o-", label=f"{size} B payload")
    ax.set_xlabel("offered rate (packets/s)")
    ax.set_ylabel("XDP run time per packet (ns)")
    ax.set_title("Collector cost (kernel run-time statistics)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)

    for out in outputs:
        fig.savefig(out, dpi=110)
    plt.close(fig)
