"""End to end: the workflow on the embedded testbed, as a user runs it.

Each test copies the repository into a temporary directory and runs the
snakemake command line there, so results and Snakemake's metadata never mix
with the developer's own.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import find_trial

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


@pytest.fixture
def workdir(workflow_copy):
    dest = workflow_copy
    yield dest
    # Whatever happened, leave no testbed behind.
    subprocess.run([sys.executable, "-m", "xdplab.testbed", "down"], cwd=dest,
                   env={**os.environ, "PYTHONPATH": str(dest / "workflow")}, capture_output=True)


def snakemake(workdir, *args, timeout=600):
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}
    return subprocess.run([str(SNAKEMAKE), *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout)


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_nothing_left():
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "xdplab" not in ns, ns
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert " xdp" not in links and "prog/xdp" not in links, links
    procs = subprocess.run(["pgrep", "-af", "agent.py --listen 10.201.|xdplab-agent.pyz|xdplab-generator|sshd -D -e -f /run/xdplab"],
                           capture_output=True, text=True).stdout
    assert procs.strip() == "", procs


def test_one_trial_end_to_end_then_nothing_to_do(workdir):
    config = ["--config", "target_pps=10000", "duration_s=5", "experiment=e2e"]
    run = snakemake(workdir, "--cores", "1", *config)
    assert run.returncode == 0, run.stderr[-4000:]
    (row,) = rows(workdir / "results/e2e/summary.csv")
    sent = int(row["sent"])
    assert abs(sent - 50000) <= 250, row
    warm = int(row["warmup_sent"])      # 1 s of warm-up at the trial's rate, before its window
    assert abs(warm - 10000) <= 50, row
    assert int(row["nic_rx"]) == int(row["tcpdump_captured"]) == sent + warm, row
    assert int(row["xdp_matched"]) == int(row["features_received"]) == sent, row
    assert int(row["lost"]) == 0 and int(row["unexplained"]) == 0, row
    assert row["xdp_mode"] == "native"
    assert float(row["xdp_ns_per_pkt"]) > 0 and float(row["latency_p50_us"]) > 0
    assert "| offered pps |" in run.stdout, "the summary table is printed at the end"
    assert (workdir / "results/e2e/summary.svg").stat().st_size > 0
    trial = json.loads((find_trial(workdir / "results/e2e", 10000) / "trial.json").read_text())
    manifest = json.loads((workdir / "results/build/embedded/features_port~12345.json").read_text())
    assert trial["arm"]["prog_tag"] == manifest["prog_tag"]
    assert_nothing_left()

    again = snakemake(workdir, "-n", "--cores", "1", *config)
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr
    assert_nothing_left()

    # A new rate needs the testbed again; the finished trial must not rerun for that.
    more = snakemake(workdir, "-n", "--cores", "1", "--config", "target_pps=[10000,2000]",
                     "duration_s=5", "experiment=e2e")
    assert more.returncode == 0, more.stderr
    planned = [line.split() for line in (more.stdout + more.stderr).splitlines()]
    assert ["arm_collector", "1"] in planned, more.stdout
    # (the figures job runs again and draws what changed; no step of the finished trial runs)
    assert "pps~10000_" not in "".join(l for l in more.stdout.splitlines()
                                       if "output:" in l and ("arm.json" in l or "trial.json" in l))


def test_bad_config_stops_before_anything_privileged(workdir):
    run = snakemake(workdir, "--cores", "1", "--config", "target_pps=0", "pakcet_size=64")
    assert run.returncode != 0
    err = run.stdout + run.stderr
    assert "target_pps: 0 is out of range" in err and "did you mean 'packet_size'" in err, err
    assert not (workdir / "results/build").exists()
    assert_nothing_left()


def test_trials_never_interleave_with_two_cores(workdir):
    run = snakemake(workdir, "--cores", "2", "--config", "target_pps=[2000,3000]",
                    "packet_size=[64,512]", "duration_s=2", "experiment=par")
    assert run.returncode == 0, run.stderr[-4000:]
    windows = []
    for p in sorted((workdir / "results/par/trials").glob("*/rep~*/trial.json")):
        t = json.loads(p.read_text())
        w = t["agent"]["window"]
        windows.append((w["armed_monotonic_ns"], w["disarmed_monotonic_ns"]))
        assert t["summary"]["unexplained"] == 0, t["summary"]
    assert len(windows) == 4
    windows.sort()
    for (a0, a1), (b0, b1) in zip(windows, windows[1:]):
        assert a1 <= b0, "two trials were armed at the same time"
    assert len(rows(workdir / "results/par/summary.csv")) == 4
    assert_nothing_left()


def test_attach_mode_and_collector_are_grid_dimensions(workdir):
    """xdp_mode x collector: each trial closes with what it can count; `off` loads no
    program (NIC counters, tcpdump and the generator still count)."""
    run = snakemake(workdir, "--cores", "1", "--config", "target_pps=3000", "duration_s=1", "warmup_s=0",
                    "xdp_mode=[native,generic]", "collector=[features,counters,off]", "experiment=grid")
    assert run.returncode == 0, run.stderr[-4000:]
    got = {(r["xdp_mode"], r["collector"]): r for r in rows(workdir / "results/grid/summary.csv")}
    assert set(got) == {(m, c) for m in ("native", "generic") for c in ("features", "counters", "off")}
    for (mode, collector), r in got.items():
        assert int(r["unexplained"]) == 0 and int(r["sent"]) == 3000, r
        assert int(r["nic_rx"]) == int(r["tcpdump_captured"]) == 3000, r
        if collector == "off":
            assert r["xdp_matched"] == r["xdp_ns_per_pkt"] == r["xdp_mode_in_effect"] == "", r
            assert r["latency_method"].startswith("not available"), r
        else:
            assert int(r["xdp_matched"]) == 3000 and int(r["lost"]) == 0, r
            assert r["xdp_mode_in_effect"] == mode, r
            assert (r["features_received"] == "3000") == (collector == "features"), r
    points = rows(workdir / "results/grid/points.csv")
    assert len(points) == 6 and {p["collector"] for p in points} == {"features", "counters", "off"}
    assert_nothing_left()


def test_frame_sizes_as_rfc_2544_gives_them(workdir):
    """`--config frame_size=64,1518`: the trials of payloads 18 and 1472 (named by
    packet_size, as those of packet_size=18,1472 are), and every table with both sizes
    and the L2 beside the L1 bit rate."""
    run = snakemake(workdir, "--cores", "1", "--config", "frame_size=64,1518", "target_pps=2000",
                    "duration_s=1", "warmup_s=0", "experiment=frames")
    assert run.returncode == 0, run.stderr[-4000:]
    res = workdir / "results/frames"
    got = sorted(rows(res / "summary.csv"), key=lambda r: int(r["frame_size"]))
    assert [(r["frame_size"], r["packet_size"]) for r in got] == [("64", "18"), ("1518", "1472")]
    for r in got:
        assert int(r["sent"]) == 2000 and int(r["lost"]) == 0 and int(r["unexplained"]) == 0, r
        pps, frame = float(r["achieved_pps"]), int(r["frame_size"])
        assert float(r["throughput_l2_mbps"]) == pytest.approx(pps * frame * 8 / 1e6, abs=1e-3), r
        assert float(r["throughput_wire_mbps"]) == pytest.approx(pps * (frame + 20) * 8 / 1e6, abs=1e-3), r
    assert {p.name.split("_")[1] for p in (res / "trials").iterdir()} == {"size~18", "size~1472"}
    assert [(p["packet_size"], p["frame_size"]) for p in rows(res / "points.csv")] == [("18", "64"), ("1472", "1518")]
    for table in ("sources.csv", "ifaces.csv"):
        assert sorted((r["packet_size"], r["frame_size"]) for r in rows(res / table)) == [
            ("1472", "1518"), ("18", "64")], table
    assert "| frame B | payload B |" in (res / "summary.md").read_text()
    as_run = (res / "config.yaml").read_text()
    assert "frame_size: [64, 1518]" in as_run and "packet_size: null" in as_run
    # The same trials asked by payload: nothing to do.
    again = snakemake(workdir, "-n", "--cores", "1", "--config", "packet_size=18,1472", "target_pps=2000",
                      "duration_s=1", "warmup_s=0", "experiment=frames")
    assert again.returncode == 0, again.stderr[-3000:]
    planned = [line.split()[:1] for line in (again.stdout + again.stderr).splitlines()]
    assert ["arm_collector"] not in planned and ["launch_generator"] not in planned, again.stdout[-3000:]
    assert_nothing_left()
