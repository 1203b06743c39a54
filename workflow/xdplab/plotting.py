"""What every figure of xdplab shares: matplotlib set up for files that are the same for
the same data, the grid dimensions a figure groups trials by, and summary.csv's columns
read as numbers.  The figures themselves: summaryfigure.py (the summary figure) and
figures.py (the paper's figures and a trial's time series)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401  (the figures draw with it)
import pandas as pd  # noqa: E402

# The same SVG for the same data: element ids from a fixed salt, not a random one.
matplotlib.rcParams["svg.hashsalt"] = "xdplab"
# Fonts in a PDF as embedded TrueType: the default, Type 3, is refused by publishers' checks
# (IEEE PDF eXpress) and prints poorly.  The rest: sizes of the grid figures' legends, bars
# and markers, which PAPER_STYLE scales down.
matplotlib.rcParams.update({"pdf.fonttype": 42, "legend.fontsize": 7, "errorbar.capsize": 3,
                            "lines.markersize": 5})

POINT = ["target_pps", "packet_size"]
# Grid dimensions beyond rate and size (summary.csv columns); a missing one is one value.
DIMS = ["xdp_mode", "collector", "pattern"]
MISSING = "n/a"
DPI = 110


def numeric(df: pd.DataFrame, col: str) -> pd.Series:
    """A column as numbers: NaN where a value is not one, and where the column is missing."""
    return pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(float("nan"), index=df.index)


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """The grid dimensions present as text, a missing value as 'n/a', so that grouping
    never drops a trial; old data without a dimension keeps not having it."""
    df = df.copy()
    for d in DIMS:
        if d in df:
            df[d] = [MISSING if pd.isna(v) or v == "" else str(v) for v in df[d]]
    return df


def varying(df: pd.DataFrame) -> list[str]:
    """The grid dimensions beyond rate and size that take more than one value."""
    return [d for d in DIMS if d in df and df[d].nunique(dropna=False) > 1]


def constant(df: pd.DataFrame) -> dict:
    """The grid dimensions with one value in every trial: said once, in the title."""
    return {d: df[d].iloc[0] for d in DIMS if d in df and len(df) and df[d].nunique(dropna=False) == 1}
