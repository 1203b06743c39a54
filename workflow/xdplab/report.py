"""Aggregate trial records into summary.csv and a short table a person can read."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .accounting import COLUMNS

# The readable table: (column, heading with unit).
TABLE = [
    ("target_pps", "offered pps"), ("packet_size", "payload B"), ("repeat", "rep"),
    ("sent", "sent"), ("achieved_pps", "achieved pps"), ("rate_error_pct", "rate err %"),
    ("nic_rx", "nic_rx"), ("xdp_matched", "xdp_matched"), ("features_received", "features"),
    ("ringbuf_drops", "rb drops"), ("tcpdump_captured", "tcpdump"), ("tcpdump_dropped", "tcpdump drop"),
    ("lost", "lost"), ("unexplained", "unexplained"), ("xdp_ns_per_pkt", "xdp ns/pkt"),
    ("latency_p50_us", "lat p50 us"), ("latency_p99_us", "lat p99 us"),
    ("softirq_cpu_pct", "softirq %"),
]


def load_rows(trial_paths) -> pd.DataFrame:
    rows = []
    for p in trial_paths:
        with open(p) as f:
            rows.append(json.load(f)["summary"])
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["target_pps", "packet_size", "repeat"], kind="stable").reset_index(drop=True)


def markdown_table(df: pd.DataFrame) -> str:
    heads = [h for _, h in TABLE]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" for _ in heads) + "|"]
    for _, r in df.iterrows():
        cells = []
        for col, _ in TABLE:
            v = r[col]
            if v is None or (isinstance(v, float) and pd.isna(v)):
                cells.append("n/a")
            elif isinstance(v, float):
                cells.append(f"{v:.3f}" if col == "rate_error_pct" else f"{v:g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(trial_paths, csv_out: str, md_out: str, experiment: str) -> pd.DataFrame:
    df = load_rows(trial_paths)
    for out in (csv_out, md_out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(csv_out).with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(csv_out)
    methods = sorted(set(df["latency_method"].dropna()))
    text = (f"# xdplab experiment `{experiment}`: {len(df)} trial(s)\n\n" + markdown_table(df) +
            "\nlost = sent - xdp_matched; unexplained = sum of the residuals of the accounting "
            "identities (README.md, 'Result columns').\n" +
            "".join(f"latency: {m}\n" for m in methods))
    tmp = Path(md_out).with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(md_out)
    return df
