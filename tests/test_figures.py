"""The summary figure is drawn from summary.csv alone, with or without latency."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from xdplab import figures  # noqa: E402
from xdplab.accounting import COLUMNS  # noqa: E402


def summary(tmp_path, latency=True):
    rows = []
    for pps in (1000, 10000):
        for size in (18, 1458):
            row = dict.fromkeys(COLUMNS, 0)
            row.update(experiment="x", target_pps=pps, packet_size=size, repeat=0, sent=pps * 5,
                       achieved_pps=pps * 0.999, nic_rx=pps * 5, xdp_matched=pps * 5,
                       features_received=pps * 5, tcpdump_captured=pps * 5, xdp_ns_per_pkt=250.0,
                       latency_p50_us=10.0 if latency else None, latency_p99_us=30.0 if latency else None)
            rows.append(row)
    path = tmp_path / "summary.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def test_figure_is_written_as_svg_and_png(tmp_path):
    outs = [str(tmp_path / "s.svg"), str(tmp_path / "s.png")]
    figures.plot_summary(str(summary(tmp_path)), outs, "x")
    assert Path(outs[0]).read_text().lstrip().startswith("<?xml")
    assert Path(outs[1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_says_when_latency_is_not_available(tmp_path):
    out = tmp_path / "s.svg"
    figures.plot_summary(str(summary(tmp_path, latency=False)), [str(out)], "x")
    assert "latency not available" in out.read_text()
