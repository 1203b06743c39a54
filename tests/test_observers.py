"""What the trial's own observers cost the DUT, and the gaps the source put between its
packets, on the embedded testbed: a short trial with the defaults (features and capture
kept, two senders) reports agent_cpu_pct and capture_cpu_pct as shares of one CPU, and
send gaps beside the arrival gaps.  Bounds are generous and relative to the same trial's
own figures (ideal_gap_us, the DUT's CPU count): no absolute timing is asserted."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SNAKEMAKE = Path(sys.executable).with_name("snakemake")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


def run(workdir, *config):
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(workdir / "workflow")}
    r = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--config", *config, "keep_testbed=true"],
                       cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]


def test_a_short_trial_reports_its_observers_cpu_and_its_send_gaps(testbed_up_copy):
    workdir = testbed_up_copy
    run(workdir, "target_pps=2000", "duration_s=2", "experiment=observers")
    with open(workdir / "results/observers/summary.csv") as f:
        (r,) = list(csv.DictReader(f))
    trial = json.loads(next((workdir / "results/observers/trials").glob("*/rep~*/trial.json")).read_text())
    obs = trial["agent"]["observers"]
    ncpu = obs["ncpu"]
    assert ncpu >= 1 and obs["drivers"] == {"xl-dut0": "veth"}, obs
    agent, capture = float(r["agent_cpu_pct"]), float(r["capture_cpu_pct"])
    # shares of one CPU over the measured window: at most every CPU the DUT has
    assert 0 < agent <= 100 * ncpu and 0 < capture <= 100 * ncpu, r
    # the consumer and the polling threads are the agent's own
    assert 0 <= obs["consumer_cpu_ns"] <= obs["agent_cpu_ns"], obs
    assert 0 <= obs["polling_cpu_ns"] <= obs["agent_cpu_ns"], obs
    assert obs["window"] == trial["agent"]["softirq"]["window"] == "first to last matched arrival"
    # at a low rate the two senders keep their shared schedule: the gaps between the send
    # times are about the ideal gap (generous bounds), as are the arrival gaps
    ideal = float(r["ideal_gap_us"])
    assert 0.5 * ideal <= float(r["send_gap_p50_us"]) <= 2 * ideal, r
    assert 0.5 * ideal <= float(r["gap_p50_us"]) <= 2 * ideal, r
    assert float(r["send_gap_p99_us"]) >= float(r["send_gap_p50_us"]), r
    # taken on the controller from the feature records kept: every measured packet but the
    # first of its source has one gap (or was read too late to have one)
    send_gaps = trial["features"]["send_gap_ns"]
    assert send_gaps["count"] + send_gaps["late"] == trial["features"]["rows"] - 1, send_gaps
    assert r["observers_busy"] == ("False" if int(r["lost"]) == 0 else r["observers_busy"]), r
    assert int(r["unexplained"]) == 0, r
