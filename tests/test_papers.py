"""Results for papers, end to end on the embedded testbed (issue "Results for papers"):
one command runs 2 rates x 2 sizes x 3 repeats of short trials and writes everything a
paper needs; afterwards nothing is left to do, a new rate runs only its trials, a new
duration runs new trials beside the old ones, and the archive checks and re-aggregates
byte for byte."""

import csv
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TABLES = ("summary.csv", "summary.md", "sources.csv", "ifaces.csv", "points.csv", "points.md", "points.tex")
FIGURES = ("achieved_vs_offered", "loss_vs_offered", "xdp_ns_vs_size", "latency_vs_offered")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def workdir(workflow_copy):
    yield workflow_copy
    subprocess.run([sys.executable, "-m", "xdplab.testbed", "down"], cwd=workflow_copy,
                   env={**os.environ, "PYTHONPATH": str(workflow_copy / "workflow")}, capture_output=True)


def snakemake(workdir, *args, timeout=1200):
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}
    return subprocess.run([str(SNAKEMAKE), "--cores", "1", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)


def planned(run, rule):
    """How many jobs of `rule` a dry run plans (its job table)."""
    for line in (run.stdout + run.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == rule and parts[1].isdigit():
            return int(parts[1])
    return 0


GRID = ["target_pps=[2000,4000]", "packet_size=[64,1458]", "repeats=3", "duration_s=1", "experiment=paper"]


def test_a_sweep_for_a_paper(workdir, tmp_path):
    import pandas as pd

    run = snakemake(workdir, "all", "archive", "--config", *GRID)
    assert run.returncode == 0, run.stderr[-5000:]
    res = workdir / "results/paper"

    # One row per trial, each closing its books; the settings as columns.
    summary = rows(res / "summary.csv")
    assert len(summary) == 12
    for r in summary:
        assert int(r["lost"]) == 0 and int(r["unexplained"]) == 0, r
        assert abs(int(r["warmup_sent"]) - int(r["target_pps"])) <= 0.01 * int(r["target_pps"]), r  # 1 s
        assert r["collector"] == "features" and r["pattern"] == "constant" and r["xdp_mode"] == "native"
    # The run order was shuffled (seed 1) and recorded.
    order = sorted(int(r["run_index"]) for r in summary)
    assert order == list(range(12)), order
    # Statistics over the repeats: 4 points of n = 3 with a 95 % CI.
    points = rows(res / "points.csv")
    assert len(points) == 4 and all(p["repeats"] == "3" for p in points), points
    assert all(p["achieved_pps_ci95_lo"] != "" for p in points)
    assert "\\toprule" in (res / "points.tex").read_text()
    for name in FIGURES:
        assert (res / "figures" / f"{name}.svg").stat().st_size > 0
        assert (res / "figures" / f"{name}.png").stat().st_size > 0
        for width in ("1col", "2col"):   # for the paper itself
            assert (res / "figures" / f"{name}.{width}.pdf").read_bytes()[:5] == b"%PDF-"

    # Per trial: a time series, its figure, and every feature record.
    for r in summary:
        d = res / "trials" / r["point"] / f"rep~{r['repeat']}"
        seconds = rows(d / "timeseries.csv")
        assert len(seconds) == 1, seconds                            # a 1-second window
        assert abs(float(seconds[0]["xdp_matched_pps"]) - int(r["target_pps"])) <= 0.05 * int(r["target_pps"])
        assert (d / "timeseries.svg").stat().st_size > 0
        feats = pd.read_parquet(d / "features.parquet")
        assert len(feats) == int(r["features_received"]) == int(r["sent"]), r
        assert sorted(feats["seq"]) == list(range(int(r["sent"])))
        assert r["unstable"] in ("True", "False")

    # The archive checks, and re-aggregates byte for byte.
    (tgz,) = res.glob("paper-*.tar.gz")
    with tarfile.open(tgz) as tar:
        tar.extractall(tmp_path / "unpacked")
    (top,) = [p for p in (tmp_path / "unpacked").iterdir() if p.is_dir()]
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=top).returncode == 0
    r = subprocess.run([sys.executable, "reaggregate"], cwd=top, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in TABLES:
        assert (top / "reaggregated" / name).read_bytes() == (res / name).read_bytes(), name

    # Nothing left to do.
    again = snakemake(workdir, "-n", "--config", *GRID)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]
    # A new rate runs only its own trials (2 sizes x 3 repeats).
    more = snakemake(workdir, "-n", "--config", *GRID, "target_pps=[2000,4000,8000]")
    assert planned(more, "arm_collector") == 6, more.stdout[-3000:]
    # A new duration runs new trials beside the old ones.
    longer = snakemake(workdir, "--config", "target_pps=2000", "packet_size=64", "repeats=1",
                       "duration_s=2", "experiment=paper")
    assert longer.returncode == 0, longer.stderr[-4000:]
    dirs = sorted(p.parent.parent.name for p in res.glob("trials/*/rep~*/trial.json"))
    assert len(dirs) == 13 and any("_dur~2_" in d for d in dirs), dirs
    (row,) = rows(res / "summary.csv")
    assert row["duration_s"] == "2"
    listing = subprocess.run([sys.executable, "-m", "xdplab.trials", "results/paper"], cwd=workdir,
                             env={**os.environ, "PYTHONPATH": str(workdir / "workflow")},
                             capture_output=True, text=True)
    assert "13 trial(s)" in listing.stdout, listing.stdout
