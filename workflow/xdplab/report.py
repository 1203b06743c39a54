"""Aggregate trial records into summary.csv and a short table a person can read."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd

from .accounting import COLUMNS

# The readable table: (column, heading with unit).
TABLE = [
    ("target_pps", "offered pps"), ("packet_size", "payload B"), ("repeat", "rep"),
    ("sent", "sent"), ("warmup_sent", "warm-up"), ("achieved_pps", "achieved pps"), ("rate_error_pct", "rate err %"),
    ("nic_rx", "nic_rx"), ("xdp_matched", "xdp_matched"), ("features_received", "features"),
    ("ringbuf_drops", "rb drops"), ("tcpdump_captured", "tcpdump"), ("tcpdump_dropped", "tcpdump drop"),
    ("lost", "lost"), ("unexplained", "unexplained"), ("xdp_ns_per_pkt", "xdp ns/pkt"),
    ("latency_p50_us", "lat p50 us"), ("latency_p99_us", "lat p99 us"),
    ("softirq_cpu_pct", "softirq %"),
]


def counts_as_integers(df: pd.DataFrame) -> pd.DataFrame:
    """The table as written: a column of whole numbers with some trials empty (a count that
    collector off cannot make) stays whole numbers (pandas would write 3000.0)."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == float and s.isna().any() and s.notna().any() \
                and (s.dropna() == s.dropna().round()).all() and _counts(col):
            out[col] = s.astype("Int64")
    return out


def _counts(col: str) -> bool:
    """Whether a column counts (packets, frames, records) or indexes: whole numbers."""
    return not col.endswith(("_pps", "_pct", "_us", "_mbps", "_ns_per_pkt"))


def load_rows(trial_paths) -> pd.DataFrame:
    rows = []
    for p in trial_paths:
        with open(p) as f:
            rows.append(json.load(f)["summary"])
    df = pd.DataFrame(rows, columns=COLUMNS)
    keys = ["target_pps", "packet_size", "xdp_mode", "collector", "pattern", "duration_s", "repeat"]
    return df.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)


# Shown only when some trial has them: where loss happened, traffic that was not ours.
OPTIONAL = [("loss_where", "loss where"), ("foreign_rx", "foreign")]
SOURCE_LIMITED_MARK = "*"


def _present(v) -> bool:
    return not (v is None or (isinstance(v, float) and pd.isna(v)) or v == "" or v == 0)


def markdown_table(df: pd.DataFrame) -> str:
    columns = TABLE + [(c, h) for c, h in OPTIONAL if c in df and any(_present(v) for v in df[c])]
    heads = [h for _, h in columns]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" for _ in heads) + "|"]
    limited = False
    for _, r in df.iterrows():
        cells = []
        for col, _ in columns:
            v = r[col]
            if v is None or (isinstance(v, float) and pd.isna(v)) or (col == "loss_where" and v == ""):
                cells.append("n/a" if col != "loss_where" else "")
            elif isinstance(v, float):
                cells.append(f"{v:.3f}" if col == "rate_error_pct" else f"{v:g}")
            else:
                cells.append(str(v))
            if col == "achieved_pps" and r.get("rate_sustained") in (False, "False"):
                cells[-1] += SOURCE_LIMITED_MARK
                limited = True
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\n{SOURCE_LIMITED_MARK} the source could not sustain the offered rate (rate_sustained=false): "
            "it sent less than scheduled within duration_s; see not_offered\n" if limited else "")
    return "\n".join(lines) + "\n" + note


def _write(path: str, text: str) -> None:
    """Write under a temporary name, then rename: a reader never sees half a file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def html_summary(df: pd.DataFrame, experiment: str) -> str:
    """summary.html, the table as `snakemake --report` shows it: the same columns as
    summary.md, one row per trial."""
    table = df[[c for c, _ in TABLE]].rename(columns=dict(TABLE))
    body = table.to_html(index=False, na_rep="n/a", border=0, classes="xdplab-summary",
                         float_format=lambda v: f"{v:g}")
    methods = sorted(set(df["latency_method"].dropna()))
    notes = "".join(f"<p>latency: {m}</p>\n" for m in methods)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>xdplab experiment {experiment}: summary</title>\n"
            "<style>table{border-collapse:collapse;font:13px sans-serif}"
            "td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}</style>"
            f"</head><body>\n<h3>xdplab experiment <code>{experiment}</code>: {len(df)} trial(s)</h3>\n"
            f"{body}\n<p>lost = sent - xdp_matched; unexplained = sum of the residuals of the "
            "accounting identities (docs/method.md, 'Result columns'). Every column of summary.csv "
            "is explained in docs/method.md.</p>\n"
            f"{notes}</body></html>\n")


def config_as_run(settings: dict, experiment: str) -> str:
    """config.yaml beside the results: every key's value as the run used it (defaults
    filled in, command-line values applied).  `--configfile results/<experiment>/config.yaml`
    gives the same configuration again, e.g. for `snakemake --report`."""
    import yaml

    head = (f"# xdplab experiment '{experiment}': the configuration as run (config/config.yaml,\n"
            "# then --config values, then defaults from workflow/schemas/config.schema.yaml).\n"
            f"# Same configuration again: snakemake --configfile results/{experiment}/config.yaml ...\n")
    from .config import load_schema

    from .config import lab_as_config

    order = list(load_schema()["properties"])
    settings = dict(settings, lab=lab_as_config(settings.get("lab")))
    ordered = {k: settings[k] for k in order if k in settings}
    ordered.update({k: v for k, v in settings.items() if k not in ordered})
    return head + yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None)


def write_summary(trial_paths, csv_out: str, md_out: str, experiment: str,
                  html_out: str | None = None, config_out: str | None = None,
                  settings: dict | None = None) -> pd.DataFrame:
    df = load_rows(trial_paths)
    for out in (csv_out, md_out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    if html_out:
        _write(html_out, html_summary(df, experiment))
    if config_out:
        _write(config_out, config_as_run(settings or {}, experiment))
    tmp = Path(csv_out).with_suffix(".csv.tmp")
    counts_as_integers(df).to_csv(tmp, index=False)
    tmp.replace(csv_out)
    methods = sorted(set(df["latency_method"].dropna()))
    text = (f"# xdplab experiment `{experiment}`: {len(df)} trial(s)\n\n" + markdown_table(df) +
            "\nlost = sent - xdp_matched; unexplained = sum of the residuals of the accounting "
            "identities (docs/method.md, 'Result columns').\n" +
            "".join(f"latency: {m}\n" for m in methods))
    tmp = Path(md_out).with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(md_out)
    return df


# -- what a person sees on the terminal ----------------------------------------------

def results_text(results_dir: str) -> str | None:
    """The experiment's table (summary.md) and where the full results are; None before the
    first complete run."""
    table = Path(results_dir, "summary.md")
    try:
        text = table.read_text()
    except OSError:
        return None
    return (f"\n{text}\nResults: {results_dir}/summary.csv (one row per trial; columns "
            "explained in docs/method.md)")


def print_results(results_dir: str, file=None) -> bool:
    """Print the table and the results path; False (and nothing printed) when there is no
    table yet.  Printed at the end of a run that measured, and again by a run that had
    nothing to do."""
    import sys

    text = results_text(results_dir)
    if text is None:
        return False
    print(text, file=file or sys.stdout, flush=True)
    return True


# Snakemake's scheduler chatter, one pair of lines per job: left out of the terminal
# (not out of the log file) when the workflow profile quiets the job banners.
_SCHEDULER_CHATTER = re.compile(r"Select jobs to execute\.\.\.$|Execute \d+ jobs\.\.\.$")
_NOTHING_TO_BE_DONE = "Nothing to be done"


class _TerminalQuiet(set):
    """The terminal's quiet set with Snakemake's progress lines ("Finished jobid", "n of N
    steps done") added.  Added here rather than in the profile: Snakemake does not even
    write progress to its log file when the profile quiets it.  A dry run is left as
    Snakemake prints it (the plan, job by job, and the job table): that is what it is
    for."""

    def __init__(self, quiet, dryrun):
        super().__init__(quiet)
        self.dryrun = dryrun

    def __contains__(self, item):
        name = getattr(item, "name", None)
        if name in ("PROGRESS", "RULES") and (self.dryrun() if callable(self.dryrun) else self.dryrun):
            return False
        if name == "PROGRESS":
            return True
        return super().__contains__(item)


class _FailuresToo(logging.Filter):
    """Snakemake's own terminal filter, except that job errors always pass."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def filter(self, record):
        event = getattr(record, "event", None)
        if getattr(event, "name", None) in ("JOB_ERROR", "GROUP_ERROR"):
            return True
        return self.inner.filter(record)


def tune_snakemake_logging(results_dir: str, dryrun=False) -> list[str]:
    """Called while Snakemake reads the workflow (workflow/rules/report.smk), after it set
    up its terminal and log-file handlers.  Returns what it changed (for tests).

    - The log file (.snakemake/log/*.snakemake.log) keeps Snakemake's full output: the
      quiet options of the workflow profile (profiles/default) are meant for the
      terminal, but Snakemake applies them to its log file too.
    - With those quiet options on, the terminal also leaves out Snakemake's progress
      lines and the scheduler's "Select jobs to execute..." / "Execute 1 jobs..." pair
      printed for every job; a failed job's "Error in rule ..." still shows, and a dry
      run shows its plan as Snakemake prints it.
    - A run with nothing to do prints the table and the results path again (Snakemake
      runs no onstart/onsuccess handler then), except on a dry run.  `dryrun`: a bool,
      or a function asked at that moment (Snakemake knows only then: `lambda:
      workflow.dryrun`).

    Relies on Snakemake 9's logging (handlers named DefaultLogFileHandler and
    DefaultStreamHandler, whose DefaultFilter/DefaultFormatter carry a `quiet` set);
    tests/test_make.py checks it against the pinned version.  If these names are not
    there, nothing is changed."""
    try:
        from snakemake.logging import logger
    except ImportError:
        return []
    changed = []
    quiet_terminal = False
    for handler in list(logger.handlers):
        name = getattr(handler, "name", None)
        if name == "DefaultLogFileHandler":
            for f in handler.filters:
                if getattr(f, "quiet", None):
                    f.quiet = set()
                    changed.append("log file: full")
            if getattr(handler.formatter, "quiet", None):
                handler.formatter.quiet = set()
        elif name == "DefaultStreamHandler":
            quiet_terminal = any(getattr(f, "quiet", None) for f in handler.filters)
            if quiet_terminal:
                for f in list(handler.filters):
                    if getattr(f, "quiet", None):
                        f.quiet = _TerminalQuiet(f.quiet, dryrun)
                        # A failed job's "Error in rule ..." (with its log's path) is
                        # quieted with the job banners: let it through.
                        handler.removeFilter(f)
                        handler.addFilter(_FailuresToo(f))
                handler.addFilter(lambda r: not (isinstance(r.msg, str)
                                                 and _SCHEDULER_CHATTER.match(r.msg)))
                changed.append("terminal: no scheduler chatter")

    class NothingToDo(logging.Handler):
        def emit(self, record):
            if isinstance(record.msg, str) and record.msg.startswith(_NOTHING_TO_BE_DONE):
                logger.removeHandler(self)
                if not (dryrun() if callable(dryrun) else dryrun):
                    print_results(results_dir)

    if not any(type(h).__name__ == "NothingToDo" for h in logger.handlers):
        logger.addHandler(NothingToDo(level=logging.INFO))
        changed.append("nothing to do: print the table")
    return changed
