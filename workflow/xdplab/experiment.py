"""An experiment's results in a notebook: results/<experiment>/ as pandas tables and the
trials' feature records as one lazily read Arrow dataset.

    from xdplab import experiment
    e = experiment.load("results/default")
    e.summary            # summary.csv, one row per trial
    e.points             # points.csv, one row per grid point (mean, sd, 95 % CI)
    e.sources, e.ifaces  # sources.csv, ifaces.csv: per (trial, source), per (trial, DUT interface)
    e.features           # every trial's features.parquet, read only as far as asked

The tables are the CSV files as written, under the same column names as in the files and
in docs/method.md, where each column's unit and method are: a rate, time or share carries
its unit in its name (`_pps`, `_ns`, `_us`, `_pct`, `_mbps`, `_s`), a column without one
counts packets, frames or records, and `packet_size` is bytes of UDP payload.  A count that
some trials could not make (collector off) stays whole numbers, empty there (pandas Int64).

`features` covers the trials of summary.csv (the configuration as run; other trials on disk
are listed by `python -m xdplab.trials`) that kept their records (keep_features, collector
features): the columns of features.parquet (docs/results.md) plus the trial's identity,
`point` and `repeat` (summary.csv's keys of a trial) and the grid point's settings
(`target_pps`, `packet_size`, `xdp_mode`, ...), constant per file and never stored in it,
so that a filter on them skips whole files unread.

Why this name: `xdplab.steps.results` is the gather step and `xdplab.agent.results` the
agent's; what this loads is what the configuration key `experiment` names.
"""

from __future__ import annotations

import functools
from pathlib import Path

from . import featurefile, stats, trials
from .report import counts_as_integers

TABLES = {"summary": "summary.csv", "points": "points.csv", "sources": "sources.csv",
          "ifaces": "ifaces.csv"}
FEATURES = "features.parquet"
# The columns that say which trial a feature record belongs to (besides stats.point_columns).
TRIAL_KEYS = ["point", "repeat"]


def load(path) -> "Experiment":
    """results/<experiment>/ of a finished run (its summary.csv is there); nothing else is
    read until asked for."""
    path = Path(path)
    if not (path / TABLES["summary"]).is_file():
        found = sorted(p.parent.name for p in path.glob(f"*/{TABLES['summary']}")) if path.is_dir() else []
        hint = (f"; it holds the experiments {', '.join(found)}: load {path}/<experiment>" if found
                else "" if path.is_dir() else f" ({path} does not exist)")
        raise FileNotFoundError(f"{path}: no {TABLES['summary']}, so not the results of a finished "
                                f"run (results/<experiment>/, written by the aggregate step){hint}")
    return Experiment(path)


class Experiment:
    """One experiment's results directory; each table is read once, when first asked for."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.name

    def __repr__(self) -> str:
        return f"<xdplab experiment {self.name!r} at {self.path}>"

    def _table(self, name: str):
        import pandas as pd

        p = self.path / TABLES[name]
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; the aggregate step writes it beside "
                                    f"{TABLES['summary']} (rerun it: snakemake --cores 1 --forcerun aggregate)")
        df = pd.read_csv(p)
        # (points.csv holds means and spreads, whole or not: read as written)
        return df if name == "points" else counts_as_integers(df)

    @functools.cached_property
    def summary(self):
        """summary.csv: one row per trial (docs/method.md, "Result columns")."""
        return self._table("summary")

    @functools.cached_property
    def points(self):
        """points.csv: per grid point over its repeats, for each metric `<metric>_n`,
        `_mean`, `_sd`, `_ci95_lo`, `_ci95_hi` in the metric's unit."""
        return self._table("points")

    @functools.cached_property
    def sources(self):
        """sources.csv: one row per (trial, source)."""
        return self._table("sources")

    @functools.cached_property
    def ifaces(self):
        """ifaces.csv: one row per (trial, DUT interface)."""
        return self._table("ifaces")

    @functools.cached_property
    def config(self) -> dict:
        """config.yaml: the configuration as run, every key's value."""
        import yaml

        return yaml.safe_load((self.path / "config.yaml").read_text())

    def trial_dir(self, point: str, repeat: int) -> Path:
        """A trial's directory, from summary.csv's `point` and `repeat`."""
        return Path(trials.trial_dir(str(self.path), point, int(repeat)))

    @functools.cached_property
    def features(self):
        """Every feature record of the trials in summary.csv, as one pyarrow.dataset.Dataset:
        nothing is read until it is scanned (to_table, to_batches, count_rows, with
        `columns=` and `filter=`), and a filter on the trial's identity reads only the
        files of the trials it keeps.  A trial without features.parquet adds no rows."""
        import pyarrow as pa
        import pyarrow.dataset as ds
        import pyarrow.fs

        summary = self.summary
        keys = TRIAL_KEYS + [c for c in stats.point_columns(summary) if c not in TRIAL_KEYS]
        fields = [pa.field(k, _arrow_type(summary[k])) for k in keys]
        schema = featurefile._schema()
        for f in fields:
            schema = schema.append(f)
        files, partitions = [], []
        for _, row in summary.iterrows():
            p = self.trial_dir(row["point"], row["repeat"]) / FEATURES
            if p.is_file():
                files.append(str(p))
                partitions.append(functools.reduce(
                    lambda a, b: a & b, (_equals(f, row[f.name]) for f in fields)))
        return ds.FileSystemDataset.from_paths(
            files, schema=schema, format=ds.ParquetFileFormat(),
            filesystem=pyarrow.fs.LocalFileSystem(), partitions=partitions)


def _arrow_type(column):
    import pandas as pd
    import pyarrow as pa

    # (a setting empty in every trial, such as observe with xdplab's collector, is text)
    if column.isna().all():
        return pa.string()
    if pd.api.types.is_bool_dtype(column):
        return pa.bool_()
    if pd.api.types.is_integer_dtype(column):
        return pa.int64()
    if pd.api.types.is_float_dtype(column):
        return pa.float64()
    return pa.string()


def _equals(field, value):
    """The expression a file's rows all satisfy: field == value (or null)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    if pd.isna(value):
        return ds.field(field.name).is_null()
    py = {pa.bool_(): bool, pa.int64(): int, pa.float64(): float}.get(field.type, str)
    return ds.field(field.name) == pa.scalar(py(value), type=field.type)
