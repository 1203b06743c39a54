"""What `snakemake --report` holds and what the terminal shows around the table, without
running a trial: the summary table, the configuration as run and the experiment's name
are in the report; trial_banner and print_results say what they should."""

import base64
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab import figures, progress, report, stats, timeseries, trials  # noqa: E402
from xdplab.accounting import COLUMNS  # noqa: E402
from xdplab.config import validate_config  # noqa: E402

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def fake_trial(path: Path, experiment: str, pps: int, size: int, rep: int) -> None:
    row = dict.fromkeys(COLUMNS, 0)
    row.update(experiment=experiment, target_pps=pps, packet_size=size, repeat=rep, sent=pps * 2,
               achieved_pps=pps * 0.999, nic_rx=pps * 2, xdp_matched=pps * 2,
               features_received=pps * 2, tcpdump_captured=pps * 2, xdp_ns_per_pkt=240.5,
               latency_p50_us=4.2, latency_p99_us=9.9, latency_method="one kernel, one clock")
    for col in ("frame_size", "throughput_l2_mbps"):
        del row[col]  # as a trial.json recorded before they were columns: the summary computes them
    path.mkdir(parents=True, exist_ok=True)
    (path / "trial.json").write_text(json.dumps({"summary": row}))


def fake_results(root: Path, raw_config: dict) -> dict:
    """results/<experiment>/ as a finished run leaves it (trial.json files, the summary, the
    figure, the configuration as run), made without the testbed."""
    s = validate_config(raw_config).values
    exp = s["experiment"]
    res = root / "results" / exp
    paths = []
    for t in trials.trials(s):
        d = Path(trials.trial_dir(str(res), t["point"], t["rep"]))
        fake_trial(d, exp, t["settings"]["target_pps"], t["settings"]["packet_size"], t["rep"])
        paths.append(d / "trial.json")
    df = report.write_summary(paths, str(res / "summary.csv"), str(res / "summary.md"), exp,
                              html_out=str(res / "summary.html"), config_out=str(res / "config.yaml"),
                              settings=s)
    stats.write_points(df, *(str(res / f"points.{x}") for x in ("csv", "md", "tex")))
    figures.plot_summary(str(res / "summary.csv"), [str(res / "summary.svg"), str(res / "summary.png")], exp)
    (res / "figures").mkdir(exist_ok=True)
    figures.plot_figures(str(res / "summary.csv"),
                         {name: [str(res / "figures" / f"{base}.svg"), str(res / "figures" / f"{base}.png")]
                          for name, base in FIGURE_FILES.items()}, exp)
    for p in paths:
        (p.parent / "timeseries.csv").write_text(timeseries.csv_text([]))
        figures.plot_timeseries(str(p.parent / "timeseries.csv"),
                                [str(p.parent / "timeseries.svg"), str(p.parent / "timeseries.png")], "trial")
    return s


# rule figures' outputs under results/<experiment>/figures/ (workflow/rules/figures.smk)
FIGURE_FILES = {"rate": "achieved_vs_offered", "loss": "loss_vs_offered", "xdp_cost": "xdp_ns_vs_size",
                "latency": "latency_vs_offered"}


def embedded(html: str) -> dict:
    """The files a Snakemake report embeds: {filename: decoded text}."""
    found = {}
    for m in re.finditer(r"data:([a-z/+.-]+);charset=utf8;filename=([^;]+);base64,([A-Za-z0-9+/=]+)", html):
        if m.group(2) != "logo.svg":
            found[m.group(2)] = base64.b64decode(m.group(3)).decode(errors="replace")
    return found


def snakemake(workdir, *args):
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}
    return subprocess.run([str(SNAKEMAKE), *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)


def test_write_summary_writes_the_table_as_html_and_the_configuration_as_run(tmp_path):
    s = fake_results(tmp_path, {"experiment": "e1", "target_pps": [1000, 2000], "duration_s": 7})
    res = tmp_path / "results" / "e1"
    html = (res / "summary.html").read_text()
    assert "xdplab experiment <code>e1</code>: 2 trial(s)" in html
    assert "offered pps" in html and "unexplained" in html and "2000" in html
    as_run = yaml.safe_load((res / "config.yaml").read_text())
    assert as_run == s   # every key, defaults filled in
    assert "--configfile results/e1/config.yaml" in (res / "config.yaml").read_text()
    # Read back as a configuration, it gives the same settings.
    assert validate_config(as_run).values == s


def test_every_table_gives_the_frame_size_beside_the_payload(tmp_path):
    """A run given frame_size (RFC 2544's terms): summary.csv, summary.md, summary.html and
    points.csv give frame_size beside packet_size, and the L2 rate beside the L1 (wire) rate;
    config.yaml records frame_size as given and reads back as the same configuration."""
    import pandas as pd

    s = fake_results(tmp_path, {"experiment": "f1", "frame_size": [64, 1518], "duration_s": 2})
    res = tmp_path / "results" / "f1"
    df = pd.read_csv(res / "summary.csv")
    assert list(df["frame_size"]) == [64, 1518] and list(df["packet_size"]) == [18, 1472]
    assert list(df["throughput_l2_mbps"]) == [round(9990 * f * 8 / 1e6, 3) for f in (64, 1518)]
    assert "| offered pps | frame B | payload B | rep |" in (res / "summary.md").read_text()
    assert "| 10000 | 64 | 18 | 0 |" in (res / "summary.md").read_text()
    assert "<th>frame B</th>" in (res / "summary.html").read_text()
    assert (res / "points.csv").read_text().startswith("target_pps,packet_size,frame_size,")
    as_run = yaml.safe_load((res / "config.yaml").read_text())
    assert as_run["frame_size"] == [64, 1518] and as_run["packet_size"] is None
    assert validate_config(as_run).values == s


def test_the_report_holds_the_table_the_configuration_and_the_experiment(workflow_copy):
    raw = {"experiment": "night_sweep", "target_pps": [1000, 2000], "repeats": 2, "duration_s": 3}
    fake_results(workflow_copy, raw)
    # As the README says: the configuration as run selects the experiment to report.
    run = snakemake(workflow_copy, "--report", "report.html",
                    "--configfile", "results/night_sweep/config.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    html = (workflow_copy / "report.html").read_text()
    files = embedded(html)
    assert {"summary.html", "summary.csv", "config.yaml", "summary.svg", "points.csv"} <= set(files), set(files)
    assert files["points.csv"].startswith("target_pps,packet_size,")
    assert "achieved_pps_ci95_lo" in files["points.csv"]
    assert "night_sweep" in files["summary.html"] and "offered pps" in files["summary.html"]
    assert yaml.safe_load(files["config.yaml"])["repeats"] == 2
    assert "Experiment night_sweep" in html          # the category
    assert "xdplab experiment" in html               # the report's own description
    # The configuration's caption lists the values as run.
    assert "duration_s" in html and "xdp_mode" in html
    # Every caption renders cleanly: docutils puts its warnings and errors into the page.
    for sign in ("System Message", "WARNING/2", "ERROR/3", "SEVERE/4", "system-message",
                 "Unknown interpreted text", "Inline literal start-string without end-string"):
        assert sign not in html, html[max(0, html.find(sign) - 500):html.find(sign) + 500]
    assert "Time series of the trial this entry" in html



def test_a_report_after_a_run_of_another_configuration_reports_that_run(workflow_copy):
    # The README's first report example, `snakemake --report report.html`, after a run made
    # with other settings than config/config.yaml's: the run recorded is reported (before,
    # Snakemake failed on a time series of a trial never run); an experiment never run is
    # refused with the command that works.
    fake_results(workflow_copy, {"target_pps": [1000, 2000], "repeats": 2, "duration_s": 3})
    run = snakemake(workflow_copy, "--report", "report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "reporting the run recorded in results/default/config.yaml" in run.stderr
    files = embedded((workflow_copy / "report.html").read_text())
    assert yaml.safe_load(files["config.yaml"])["target_pps"] == [1000, 2000]
    other = snakemake(workflow_copy, "--report", "other.html", "--config", "experiment=never_run")
    assert other.returncode != 0 and not (workflow_copy / "other.html").exists()
    assert "xdplab: nothing to report for this configuration: 1 of its 1 trials have not run" in other.stderr
    assert "snakemake --report report.html --configfile results/<experiment>/config.yaml" in other.stderr
    assert "Traceback" not in other.stderr

def test_trial_banner():
    point = {"target_pps": 10000, "packet_size": 1458, "repeat": 0}
    assert progress.trial_banner(3, 12, point, eta_s=125) == (
        "xdplab: trial 3 of 12: 10000 pps, 1458 B payload, repeat 1 (about 2 min left)")
    assert progress.trial_banner(1, 1, point) == "xdplab: trial 1 of 1: 10000 pps, 1458 B payload, repeat 1"
    assert progress.trial_banner(1, 60, point, eta_s=3 * 3600 + 600).endswith("(about 3 h 10 min left)")
    assert progress.trial_banner(1, 2, point, eta_s=40).endswith("(about 40 s left)")


def test_print_results(tmp_path, capsys):
    assert report.print_results(str(tmp_path / "results/none")) is False
    assert capsys.readouterr().out == ""
    fake_results(tmp_path, {"experiment": "p", "target_pps": 1000})
    assert report.print_results(str(tmp_path / "results/p")) is True
    out = capsys.readouterr().out
    assert "| offered pps |" in out and "Results: " in out and "results/p/summary.csv" in out




def test_each_trial_names_its_code_and_pooled_versions_are_flagged(tmp_path, capsys):
    """summary.csv's code_version comes from each trial.json's `code`; a point pooling trials
    of different code is flagged in points.csv (code_versions) and warned about in
    summary.md and points.md, so at the end of the run and in a run with nothing to do."""
    raw = {"experiment": "mixed", "target_pps": [1000, 2000], "repeats": 2}
    fake_results(tmp_path, raw)
    res = tmp_path / "results" / "mixed"
    paths = sorted(res.glob("trials/*/rep~*/trial.json"))
    clean = {"commit": "a" * 40, "dirty": False, "describe": "aaaaaaa", "xdplab_version": "0.3.0", "why": None}
    for p in paths:
        record = json.loads(p.read_text())
        other = "pps~1000_" in str(p) and "rep~1" in str(p)
        record["code"] = dict(clean, commit="b" * 40, dirty=True) if other else clean
        p.write_text(json.dumps(record))
    df = report.write_summary(paths, str(res / "summary.csv"), str(res / "summary.md"), "mixed")
    stats.write_points(df, *(str(res / f"points.{x}") for x in ("csv", "md", "tex")))
    summary = list(csv.DictReader((res / "summary.csv").open()))
    assert list(summary[0])[-1] == "code_version"
    assert sorted(r["code_version"] for r in summary) == ["a" * 12] * 3 + ["b" * 12 + "+dirty"]
    points = {r["target_pps"]: r for r in csv.DictReader((res / "points.csv").open())}
    assert (points["1000"]["code_versions"], points["2000"]["code_versions"]) == ("2", "1")
    assert points["1000"]["code"] == f"{'a' * 12}; {'b' * 12}+dirty"
    warning = "warning: 1 of 2 point(s) in points.csv pool repeats made by different code"
    assert warning in (res / "summary.md").read_text() and warning in (res / "points.md").read_text()
    assert report.print_results(str(res))
    assert warning in capsys.readouterr().out


def test_trials_of_one_code_version_are_not_flagged(tmp_path):
    fake_results(tmp_path, {"experiment": "one", "target_pps": [1000], "repeats": 2})
    res = tmp_path / "results" / "one"
    assert "warning" not in (res / "summary.md").read_text()
    rows = list(csv.DictReader((res / "points.csv").open()))
    # (fake trials record no code: unrecorded, one version)
    assert [(r["code_versions"], r["code"]) for r in rows] == [("1", "unrecorded")]
