"""The figures are drawn from summary.csv (and a trial's timeseries.csv) alone.

The summary figure reads cleanly at 1, 12 and 60 trials: it is written, tick labels do not
overlap, repeats are summarised, losses have their own log-scaled panel, and no point lies
outside its axes.  The grid figures (rate, loss, XDP cost, latency) and the time series are
valid SVG and PNG with a unit on every axis, take the mean and 95 % CI from stats.points,
draw one series per combination of the grid dimensions that vary, and never fail on a
missing column, a NaN, collector off or a single point."""

import itertools
import random
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from xdplab import figures, stats, summaryfigure  # noqa: E402
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
    s = summaryfigure._summary(df, "achieved_pps")
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


# -- the grid figures and the time series --------------------------------------------------

def grid(rates=(1000, 10000), sizes=(18, 1458), repeats=3, collectors=("features", "counters", "off"),
         modes=("native", "generic"), pattern="constant"):
    """Synthetic summary rows over every grid dimension; collector off has no XDP figures."""
    parts = []
    for i, (coll, mode) in enumerate(itertools.product(collectors, modes)):
        d = trials(list(rates), list(sizes), repeats, seed=i)
        d["collector"], d["xdp_mode"], d["pattern"] = coll, mode, pattern
        if coll == "off":
            d[["xdp_ns_per_pkt", "latency_p50_us", "latency_p99_us"]] = float("nan")
        parts.append(d)
    return pd.concat(parts, ignore_index=True)


UNIT = re.compile(r"\((packets/s|%|ns|µs|bytes|s|records/s)[ ,)]")


def check_written(outs):
    svg, png = outs
    ET.parse(svg)   # well-formed XML ...
    assert ET.parse(svg).getroot().tag.endswith("svg")   # ... and an SVG
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_units(fig):
    """Every visible axis says its unit on both axes (a shared x axis on the last row)."""
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert shown
    for ax in shown:
        assert UNIT.search(ax.get_ylabel()), ax.get_ylabel()
    xlabels = [ax.get_xlabel() for ax in shown if ax.get_xlabel()]
    assert xlabels and all(UNIT.search(x) for x in xlabels), xlabels


def legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_grid_figures_are_written_with_units(tmp_path, name):
    df = grid()
    csv = tmp_path / "summary.csv"
    df.to_csv(csv, index=False)
    outs = [str(tmp_path / f"{name}.svg"), str(tmp_path / f"{name}.png")]
    figures.plot_figures(str(csv), {name: outs}, "x")
    check_written(outs)
    fig = figures.FIGURES[name][1](df, "x")
    check_units(fig)
    # One series per combination of the dimensions that vary, named in the legend.
    texts = legend_texts(fig)
    assert any("collector features" in t and "xdp_mode native" in t for t in texts), texts
    assert any("xdp_mode generic" in t for t in texts), texts
    if name in ("xdp_cost", "latency"):   # collector off: no XDP program, said not drawn
        assert not any("collector off" in t for t in texts), texts
        assert "collector off not drawn" in fig._suptitle.get_text()
    else:
        assert any("collector off" in t for t in texts), texts
    # The constant dimension is said once, in the title.
    assert "pattern constant" in fig._suptitle.get_text()
    figures.plt.close(fig)


def test_error_bars_are_the_95_ci_of_points_csv():
    """The bars drawn are stats.points' CI, the same numbers as points.csv."""
    df = grid(rates=(1000,), sizes=(1458,), collectors=("features",), modes=("native",))
    want = stats.points(df)
    fig = figures.draw_rate(df, "x")
    ax = fig.axes[0]
    caps = [c for c in ax.containers if hasattr(c, "has_yerr") and c.has_yerr]
    assert len(caps) == 1
    segs = caps[0].lines[2][0].get_segments()
    (x0, lo), (_, hi) = segs[0]
    assert x0 == 1000
    assert lo == pytest.approx(want["achieved_pps_ci95_lo"][0], abs=1e-3)
    assert hi == pytest.approx(want["achieved_pps_ci95_hi"][0], abs=1e-3)
    figures.plt.close(fig)


def test_old_data_without_grid_columns_and_with_missing_metrics(tmp_path):
    """Old summary.csv: no collector or pattern column, no latency, no xdp cost; one point."""
    df = trials([10000], [1458], 1).drop(columns=["xdp_mode", "latency_p50_us", "latency_p99_us",
                                                    "xdp_ns_per_pkt", "softirq_cpu_pct"])
    csv = tmp_path / "summary.csv"
    df.to_csv(csv, index=False)
    outs = {name: [str(tmp_path / f"{name}.svg"), str(tmp_path / f"{name}.png")] for name in figures.FIGURES}
    figures.plot_figures(str(csv), outs, "old")
    for paths in outs.values():
        check_written(paths)
    assert "latency not available" in Path(outs["latency"][0]).read_text()
    assert "no XDP run-time statistics" in Path(outs["xdp_cost"][0]).read_text()
    for name, (_, draw) in figures.FIGURES.items():
        fig = draw(df, "old")
        check_units(fig)
        assert not legend_texts(fig) or not any("collector" in t for t in legend_texts(fig))
        figures.plt.close(fig)
    # The summary figure too.
    figures.plot_summary(str(csv), [str(tmp_path / "s.svg"), str(tmp_path / "s.png")], "old")
    check_written([str(tmp_path / "s.svg"), str(tmp_path / "s.png")])


def test_nan_in_a_dimension_and_all_off(tmp_path):
    """A dimension missing in some rows (old and new trials together) is a value of its own;
    a grid of collector off only has no XDP figures to draw and says so."""
    df = grid(rates=(1000, 2000), sizes=(18,), repeats=2, collectors=("off",), modes=("native",))
    df.loc[:2, "collector"] = float("nan")
    pts = figures.grid_points(df)
    assert set(pts["collector"]) == {"off", figures.MISSING}
    assert pts["repeats"].sum() == len(df)   # no trial dropped by a NaN key
    only_off = df[df["collector"] == "off"]
    for name, (_, draw) in figures.FIGURES.items():
        outs = [str(tmp_path / f"{name}.svg"), str(tmp_path / f"{name}.png")]
        figures._save(draw(only_off, "off"), outs)
        check_written(outs)
    assert "no XDP run-time statistics" in (tmp_path / "xdp_cost.svg").read_text()


def test_empty_summary_does_not_crash(tmp_path):
    df = trials([1000], [18], 1).iloc[0:0]
    for name, (_, draw) in figures.FIGURES.items():
        figures._save(draw(df, "empty"), [str(tmp_path / f"{name}.svg")])
        assert ("no trials" if name != "xdp_cost" else "no XDP run-time") in (tmp_path / f"{name}.svg").read_text()


def test_the_ideal_line_and_log_axes_at_wide_rates():
    df = grid(rates=(1000, 100000), sizes=(1458,), repeats=2, collectors=("features",), modes=("native",))
    fig = figures.draw_rate(df, "x")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "achieved = offered" in legend_texts(fig)
    figures.plt.close(fig)
    fig = figures.draw_loss(df, "x")
    assert fig.axes[0].get_yscale() == "symlog" and fig.axes[0].get_ylim()[0] == 0
    figures.plt.close(fig)


def timeseries(seconds=10, **drop):
    ts = pd.DataFrame({"second": range(seconds), "sent_pps": 10000, "nic_rx_pps": 9990,
                       "xdp_matched_pps": 9990, "features_pps": 9990,
                       "ringbuf_drops_per_s": [0] * (seconds - 1) + [5],
                       "softirq_pct": [1.5] * seconds})
    return ts.drop(columns=[c for c, v in drop.items() if v])


def test_timeseries_figure(tmp_path):
    csv = tmp_path / "timeseries.csv"
    timeseries().to_csv(csv, index=False)
    outs = [str(tmp_path / "timeseries.svg"), str(tmp_path / "timeseries.png")]
    figures.plot_timeseries(str(csv), outs, "trial pps~10000/rep~0")
    check_written(outs)
    fig = figures.draw_timeseries(timeseries(), "t")
    check_units(fig)
    assert {"sent (generator)", "nic_rx (DUT interface)", "xdp_matched (collector)",
            "features (ring buffer)"} <= set(legend_texts(fig))
    figures.plt.close(fig)


@pytest.mark.parametrize("case", ["no features (collector counters)", "only sent", "one second", "empty"])
def test_timeseries_with_missing_columns(tmp_path, case):
    ts = {"no features (collector counters)": lambda: timeseries(features_pps=True, ringbuf_drops_per_s=True),
          "only sent": lambda: timeseries()[["second", "sent_pps"]],
          "one second": lambda: timeseries(seconds=1),
          "empty": lambda: timeseries().iloc[0:0]}[case]()
    csv = tmp_path / "timeseries.csv"
    ts.to_csv(csv, index=False)
    outs = [str(tmp_path / "t.svg"), str(tmp_path / "t.png")]
    figures.plot_timeseries(str(csv), outs, case)
    check_written(outs)
    if case == "only sent":
        assert "softirq CPU not recorded" in Path(outs[0]).read_text()


def pdf_facts(path):
    """(width_pt, height_pt) of each page's MediaBox, and the font dictionaries' subtypes and
    embedded font files, read from the PDF's uncompressed object dictionaries."""
    data = Path(path).read_bytes()
    assert data.startswith(b"%PDF-")
    boxes = [tuple(float(v) for v in m.groups()) for m in
             re.finditer(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", data)]
    subtypes = set(re.findall(rb"/Subtype\s*/(Type0|Type1|Type3|TrueType|CIDFontType[02])\b", data))
    return boxes, subtypes, len(re.findall(rb"/Type\s*/FontDescriptor", data)), data.count(b"/FontFile2")


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_paper_pdfs_have_the_column_widths_and_embed_their_fonts(tmp_path, name):
    csv = tmp_path / "summary.csv"
    grid().to_csv(csv, index=False)
    stem = figures.FIGURES[name][0]
    outs = [str(tmp_path / f"{stem}.{kind}") for kind in ("svg", "png", "1col.pdf", "2col.pdf")]
    figures.plot_figures(str(csv), {name: outs}, "x")
    check_written(outs[:2])
    for path, width_in in zip(outs[2:], (3.5, 7.16)):
        boxes, subtypes, descriptors, embedded = pdf_facts(path)
        assert len(boxes) == 1, boxes
        (w, h), = boxes
        assert w == pytest.approx(width_in * 72, abs=0.01)   # 252 pt and 515.52 pt
        assert 0.3 * w <= h <= 3 * w
        # TrueType embedded (pdf.fonttype 42), no Type 3 font: what publishers' checks ask.
        assert b"Type3" not in subtypes and b"CIDFontType2" in subtypes, subtypes
        assert descriptors >= 1 and embedded == descriptors
    # The SVG and PNG for the report keep their size and title.
    fig = figures.FIGURES[name][1](grid(), "x")
    assert fig.get_figwidth() >= 10 and fig._suptitle is not None
    figures.plt.close(fig)


def test_paper_figures_share_one_style():
    """At either width: no title (the caption says it), and every text the same few sizes."""
    for width in figures.PAPER_WIDTHS_IN.values():
        for name, (_, draw) in figures.FIGURES.items():
            with figures.plt.rc_context(figures.PAPER_STYLE):
                fig = draw(grid(), "x", width)
            assert fig.get_figwidth() == width and fig._suptitle is None
            sizes = {t.get_fontsize() for t in fig.findobj(figures.matplotlib.text.Text)
                     if t.get_visible() and t.get_text()}
            assert sizes and max(sizes) <= 7, (name, sizes)
            check_units(fig)
            figures.plt.close(fig)


def test_paper_width_from_the_file_name():
    assert figures.paper_width("figures/loss_vs_offered.1col.pdf") == 3.5
    assert figures.paper_width("figures/loss_vs_offered.2col.pdf") == 7.16
    assert figures.paper_width("figures/loss_vs_offered.pdf") is None
    assert figures.paper_width("figures/loss_vs_offered.svg") is None


# -- figures drawn only when their inputs changed -----------------------------------------

def test_a_figure_is_drawn_again_only_when_its_inputs_or_title_changed(tmp_path, monkeypatch):
    """xdplab.figurecache: the copy kept for an output path stands in for a drawing from the
    same input bytes, title and code; a changed input or title draws again."""
    from xdplab import figurecache

    monkeypatch.setattr(figurecache, "CACHE", tmp_path / "cache")
    ts = tmp_path / "timeseries.csv"
    ts.write_text("second,sent_pps\n0,1000\n")
    out = tmp_path / "timeseries.svg"
    drawn = []

    def draw():
        drawn.append(ts.read_text())
        out.write_text(f"<svg>{len(drawn)}</svg>")

    assert figurecache.draw_if_changed([str(ts)], [str(out)], "trial a", draw)
    out.unlink()   # as Snakemake does before it runs the job again
    assert not figurecache.draw_if_changed([str(ts)], [str(out)], "trial a", draw)
    assert out.read_text() == "<svg>1</svg>" and len(drawn) == 1
    assert figurecache.draw_if_changed([str(ts)], [str(out)], "trial b", draw)
    ts.write_text("second,sent_pps\n0,999\n")
    assert figurecache.draw_if_changed([str(ts)], [str(out)], "trial b", draw)
    assert out.read_text() == "<svg>3</svg>" and len(drawn) == 3
    # A copy that is missing or unreadable is drawn again, never an error.
    for entry in (tmp_path / "cache").iterdir():
        (entry / "figure").unlink()
    out.unlink()
    assert figurecache.draw_if_changed([str(ts)], [str(out)], "trial b", draw)
    assert out.read_text() == "<svg>4</svg>"
