"""Per-source and per-interface tables of an experiment: sources.csv and ifaces.csv.

One row per (trial, source) and per (trial, interface), taken from each trial's
trial.json (accounting.summarize wrote them there), so a lab with several source
hosts or several DUT interfaces shows where each part of a trial's total came from.
The same identities close on every row (docs/method.md, "Result columns").  Each row's
`frame_size` (bytes, packet_size + 46) stands beside its `packet_size`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .accounting import INTERFACE_COLUMNS, SOURCE_COLUMNS
from .report import counts_as_integers
from .stats import with_frame_size

ORDER = ["target_pps", "packet_size", "point", "repeat"]


def _rows(trial_paths, key: str) -> list[dict]:
    rows = []
    for p in trial_paths:
        with open(p) as f:
            rows += json.load(f).get(key) or []
    return rows


def _write(df: pd.DataFrame, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out).with_suffix(".csv.tmp")
    counts_as_integers(df).to_csv(tmp, index=False)
    tmp.replace(out)


def write_breakdown(trial_paths, sources_csv: str, ifaces_csv: str) -> None:
    src = pd.DataFrame(_rows(trial_paths, "sources"), columns=SOURCE_COLUMNS)
    _write(with_frame_size(src.sort_values(ORDER + ["source"], kind="stable")), sources_csv)
    ifs = pd.DataFrame(_rows(trial_paths, "interfaces"), columns=INTERFACE_COLUMNS)
    _write(with_frame_size(ifs.sort_values(ORDER + ["interface"], kind="stable")), ifaces_csv)
