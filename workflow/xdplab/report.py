"""Aggregate trial records into summary.csv and a short table a person can read."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .accounting import COLUMNS
from .stats import CODE, KERNEL, code_warning, points

# The readable table: (column, heading with unit).
TABLE = [
    ("target_pps", "offered pps"), ("frame_size", "frame B"), ("packet_size", "payload B"), ("repeat", "rep"),
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
    """The summary rows of these trial.json files, each with the DUT's kernel it ran on
    (dut_kernel) and the code that made it (the last column, code_version:
    xdplab.provenance.code_label of the trial's `code`)."""
    from .provenance import code_label

    rows = []
    for p in trial_paths:
        with open(p) as f:
            record = json.load(f)
        rows.append(dict(record["summary"], **{KERNEL: record.get("dut_kernel"),
                                                CODE: code_label(record.get("code"))}))
    df = with_frame_columns(pd.DataFrame(rows, columns=COLUMNS + [KERNEL, CODE]))
    keys = ["target_pps", "packet_size", "xdp_mode", "collector", "pattern", "duration_s", "repeat"]
    return df.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)


def with_frame_columns(df: pd.DataFrame) -> pd.DataFrame:
    """frame_size and throughput_l2_mbps where a trial recorded none (a trial.json of before
    they were columns): both follow from packet_size and achieved_pps (xdplab.frames)."""
    from .frames import frame_bytes, mbps

    df = df.copy()
    for col, of in (("frame_size", lambda r: frame_bytes(int(r["packet_size"]))),
                    ("throughput_l2_mbps", lambda r: mbps(r["achieved_pps"], int(r["packet_size"]), 2))):
        gone = df[col].isna() & df["packet_size"].notna()
        if gone.any():
            df[col] = df[col].astype(object)
            df.loc[gone, col] = [of(r) for _, r in df[gone].iterrows()]
            df[col] = pd.to_numeric(df[col])
    return df


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
    if settings.get("frame_size") is not None:
        settings["packet_size"] = None  # given as frame_size: giving both again is refused
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
    # (printed at the end of the run with the table: a point pooling trials of different code)
    warning = code_warning(points(df)) if len(df) else None
    text = (f"# xdplab experiment `{experiment}`: {len(df)} trial(s)\n\n" + markdown_table(df) +
            "\nlost = sent - xdp_matched; unexplained = sum of the residuals of the accounting "
            "identities (docs/method.md, 'Result columns').\n" +
            "".join(f"latency: {m}\n" for m in methods) + (f"\n{warning}\n" if warning else ""))
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


class NothingToReport(Exception):
    """`snakemake --report` asked of a configuration with no finished run to report."""


def configuration_to_report(settings: dict) -> dict | None:
    """For `snakemake --report`: None when every trial of this configuration has finished
    (report it); else the configuration recorded by the experiment's last run
    (results/<experiment>/config.yaml) when all of its trials finished, to report what was
    run; else NothingToReport naming what to run or the command that reports another run.
    A report of a configuration never run fails deep in Snakemake ("... marked for report
    but does not exist", naming one missing file)."""
    from pathlib import Path

    import yaml

    from . import trials
    from .config import ConfigError, validate_config

    def missing(s):
        res = f"results/{s['experiment']}"
        return [d for d in (trials.trial_dir(res, t["point"], t["rep"]) for t in trials.trials(s))
                if not Path(d, "trial.json").exists()]

    todo = missing(settings)
    if not todo:
        return None
    recorded = Path("results", settings["experiment"], "config.yaml")
    if recorded.exists():
        raw = yaml.safe_load(recorded.read_text()) or {}
        try:
            if not missing(validate_config(raw).values):
                return raw
        except ConfigError:
            pass
    n = len(trials.trials(settings))
    raise NothingToReport(
        f"nothing to report for this configuration: {len(todo)} of its {n} trials have not run "
        f"(e.g. {todo[0]}).  Run them first (the same command without --report), or report an "
        f"experiment that ran: snakemake --report report.html --configfile results/<experiment>/config.yaml")

