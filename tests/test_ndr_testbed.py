"""The zero-loss rate search on the embedded testbed: with a rate limit imposed on the test
link (a tbf qdisc on the source interface), `snakemake ndr` finds a rate within the
resolution below the limit, confirms it with a trial that lost nothing, and a second run
has nothing to do.  Short trials: probes of 1 s, confirmations of 2 s, no warm-up."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SRC_NS, SRC_IF = "xdplab-src", "xl-src0"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")

# 1458-byte payloads are 1486-byte IP packets, 1500-byte frames with the Ethernet header,
# which is what tbf counts: 24 Mbit/s lets 24e6 / 8 / 1500 = 2,000 packets/s through
# (measured here: 2,000-2,011 pps delivered, the bucket's 6,000 bytes included).
TBF_RATE_BIT_S = 24_000_000
LIMIT_PPS = TBF_RATE_BIT_S / 8 / (1458 + 28 + 14)
RESOLUTION_PCT = 5
CONFIG = ["experiment=ndr", "packet_size=1458", "ndr_min_pps=500", "ndr_max_pps=8000",
          f"ndr_resolution_pct={RESOLUTION_PCT}", "ndr_probe_s=1", "ndr_confirm_s=2", "warmup_s=0",
          "keep_features=false", "keep_pcap=false", "threads=1",
          # the UDP stack: the packet path (send_path auto's choice here) bypasses the qdisc
          # (PACKET_QDISC_BYPASS), so tbf would limit nothing
          "send_path=udp"]


def _env(workdir):
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(workdir / "workflow")}


def snakemake(workdir, *args, timeout=900):
    return subprocess.run([str(SNAKEMAKE), *args], cwd=workdir, env=_env(workdir), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def workdir(testbed_up_copy):
    return testbed_up_copy


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_search_finds_a_rate_just_below_a_tbf_limit_and_then_has_nothing_to_do(workdir):
    r = subprocess.run(["tc", "-n", SRC_NS, "qdisc", "add", "dev", SRC_IF, "root", "tbf", "rate",
                        f"{TBF_RATE_BIT_S // 1000}kbit", "burst", "6000", "limit", "12000"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    run = snakemake(workdir, "--cores", "1", "ndr", "--config", *CONFIG, "keep_testbed=true")
    assert run.returncode == 0, run.stderr[-6000:]
    results = workdir / "results/ndr"
    (row,) = rows(results / "ndr.csv")
    ndr_pps = int(row["ndr_pps"])
    assert LIMIT_PPS / (1 + RESOLUTION_PCT / 100) <= ndr_pps <= LIMIT_PPS * 1.005, (row, LIMIT_PPS)
    assert row["limited_by"] == "dut" and int(row["fail_pps"]) <= ndr_pps * (1 + RESOLUTION_PCT / 100) + 1, row
    # The failing rate above lost its packets at the source's qdisc, where tbf drops them.
    assert row["fail_loss_where"].startswith("src_qdisc"), row
    # The confirmation lost nothing, and was a trial of ndr_confirm_s seconds at that rate.
    assert int(row["confirm_lost"]) == 0 and row["confirm_s"] == "2", row
    assert abs(int(row["confirm_sent"]) - 2 * ndr_pps) <= 0.01 * 2 * ndr_pps, row
    probes = rows(results / "ndr_probes.csv")
    assert len(probes) == int(row["probes"]) + int(row["confirmations"])
    assert (probes[0]["kind"], probes[0]["target_pps"]) == ("probe", "8000")
    assert all(p["duration_s"] == ("1" if p["kind"] == "probe" else "2") for p in probes)
    # Each is a normal trial of its own point, with its duration in the name.
    for p in probes:
        trial = json.loads((workdir / p["trial"] / "trial.json").read_text())
        assert trial["summary"]["target_pps"] == int(p["target_pps"])
        assert f"_dur~{p['duration_s']}_" in p["trial"]
    assert (results / "ndr.svg").stat().st_size > 0 and (results / "ndr.png").stat().st_size > 0
    assert "zero-loss search, 1458 B payload" in run.stderr

    again = snakemake(workdir, "-n", "ndr", "--config", *CONFIG)
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-4000:]
    rerun = snakemake(workdir, "--cores", "1", "ndr", "--config", *CONFIG, "keep_testbed=true")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "zero-loss search" not in rerun.stderr and rows(results / "ndr_probes.csv") == probes
