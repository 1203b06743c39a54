"""The summary figure is drawn from summary.csv alone and reads cleanly at 1, 12 and 60
trials: it is written, tick labels do not overlap, repeats are summarised, losses have
their own log-scaled panel, and no point lies outside its axes."""

import itertools
import random
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from xdplab import figures  # noqa: E402
from xdplab.accounting import COLUMNS  # noqa: E402


def trials(rates, sizes, repeats, latency=True, seed=1):
    """Synthetic summary rows: 5 s per trial, a few losses here and there."""
    rnd = random.Random(seed)
    rows = []
    for pps, size, rep in itertools.product(rates, sizes, range(repeats)):
        sent = pps * 5
        lost = rnd.choice([0, 0, 3, 273])
        row = dict.fromkeys(COLUMNS, 0)
        row.update(experiment="x", target_pps=pps, packet_size=size, repeat=rep, sent=sent,
                   achieved_pps=pps * rnd.uniform(0.97, 1.0), nic_rx=sent - lost,
                   xdp_matched=sent - lost, features_received=sent - lost,
                   tcpdump_captured=sent - lost, lost=lost,
                   xdp_ns_per_pkt=rnd.uniform(150, 900),
                   latency_p50_us=rnd.uniform(3, 6) if latency else None,
                   latency_p99_us=rnd.uniform(8, 40) if latency else None)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


CASES = {
    1: lambda: trials([10000], [1458], 1),
    12: lambda: trials([1000, 10000, 50000], [18, 1458], 2),
    60: lambda: trials([1000 * i for i in range(1, 31)], [18, 1458], 1),
    "60 as 5x2x6": lambda: trials([1000, 5000, 10000, 50000, 100000], [18, 1458], 6),
}


def overlapping(labels):
    boxes = [t.get_window_extent() for t in labels if t.get_visible() and t.get_text()]
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


@pytest.mark.parametrize("case", list(CASES))
def test_figure_reads_cleanly(tmp_path, case):
    df = CASES[case]()
    csv = tmp_path / "summary.csv"
    df.to_csv(csv, index=False)
    outs = [str(tmp_path / "s.svg"), str(tmp_path / "s.png")]
    figures.plot_summary(str(csv), outs, "x")
    assert Path(outs[0]).read_text().lstrip().startswith("<?xml")
    assert Path(outs[1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fig = figures.draw_summary(df, "x")
    fig.canvas.draw()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = axis.get_ticklabels()
            assert not overlapping(labels), (ax.get_title(), [t.get_text() for t in labels])
        # Nothing drawn outside the view: every point within the y limits.
        lo, hi = ax.get_ylim()
        for line in ax.get_lines():
            ys = pd.to_numeric(pd.Series(line.get_ydata()), errors="coerce").dropna()
            assert ys.empty or (ys.min() >= lo and ys.max() <= hi), (ax.get_title(), ys.max(), hi)
    # The accounting axes label one point (rate, size) each, not one trial each.
    accounting = fig.axes[0]
    assert len([t for t in accounting.get_xticklabels() if t.get_text()]) <= df.groupby(
        ["target_pps", "packet_size"]).ngroups
    # Loss panel: a log-like scale, so that 273 of millions shows.
    assert fig.axes[1].get_yscale() == "symlog"
    figures.plt.close(fig)


def test_repeats_are_summarised_not_joined():
    df = trials([1000, 10000], [1458], 3)
    s = figures._summary(df, "achieved_pps")
    assert len(s) == 2   # one mean per point, not one line vertex per repeat
    assert (s["min"] <= s["mean"]).all() and (s["mean"] <= s["max"]).all()


def test_figure_says_when_latency_is_not_available(tmp_path):
    csv = tmp_path / "summary.csv"
    trials([1000, 10000], [18, 1458], 1, latency=False).to_csv(csv, index=False)
    out = tmp_path / "s.svg"
    figures.plot_summary(str(csv), [str(out)], "x")
    assert "latency not available" in out.read_text()


def test_png_for_a_look(tmp_path_factory):
    """Writes the three sizes' PNGs to a kept directory (pytest's basetemp) for a person
    to look at; asserts only that they exist."""
    d = tmp_path_factory.mktemp("figures")
    for case in (1, 12, 60):
        csv = d / f"summary_{case}.csv"
        CASES[case]().to_csv(csv, index=False)
        figures.plot_summary(str(csv), [str(d / f"summary_{case}.png")], f"{case} trials")
        assert (d / f"summary_{case}.png").stat().st_size > 10000
