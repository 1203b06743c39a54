"""The workflow in lab mode, against a lab of namespaces met the way a user meets real
machines (tests/labnet.py): two source hosts, each with its own sshd and key, and a DUT
with two test interfaces whose agent was started by its documented command with a
token.  The workflow knows only the lab config file; the controller (this process's
root namespace) reaches the hosts through their management addresses."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import planned_trial
import requests

SNAKEMAKE = Path(sys.executable).with_name("snakemake")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


def _env(workdir):
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def n(value):
    return int(float(value))


def agent(lab, method, path):
    dut = lab.config["lab"]["dut"]
    token = Path(os.path.expanduser(dut["token_file"])).read_text().strip()
    r = requests.request(method, dut["agent"] + path, headers={"X-Xdplab-Token": token}, timeout=10)
    r.raise_for_status()
    return r.json()


def xdp_progs(lab):
    """XDP programs attached on the DUT's test interfaces."""
    ns = lab.desc["dut"]["netns"]
    found = []
    for iface in lab.config["lab"]["dut"]["ifaces"]:
        out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", iface], capture_output=True,
                             text=True).stdout
        if json.loads(out or "[{}]")[0].get("xdp"):
            found.append(iface)
    return found


def generators_on_sources(lab):
    found = []
    for src in lab.desc["sources"]:
        pids = subprocess.run(["ip", "netns", "pids", src["netns"]], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"xdplab-generator" in cmd:
                found.append(pid)
    return found


def test_two_sources_two_interfaces_close_the_books_everywhere(netns_lab, workflow_copy):
    run = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--configfile", str(netns_lab.config_path),
                          "--config", "target_pps=10000", "duration_s=5", "experiment=lab"],
                         cwd=workflow_copy, env=_env(workflow_copy), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    results = workflow_copy / "results/lab"
    (row,) = rows(results / "summary.csv")
    assert row["testbed"] == "lab" and (n(row["sources"]), n(row["interfaces"])) == (2, 2), row
    sent = n(row["sent"])
    assert abs(sent - 50000) <= 250, row
    # the NIC and the capture count the warm-up too (1 s at the trial's rate)
    warm = n(row["warmup_sent"])
    # (a warm-up packet not sent by the warm-up's end is not sent: no grace there)
    assert abs(warm - 10000) <= 100 and n(row["warmup_lost"]) == 0, row
    assert n(row["nic_rx"]) == n(row["tcpdump_captured"]) == sent + warm, row
    assert n(row["xdp_matched"]) == sent, row
    assert n(row["lost"]) == 0 and n(row["unexplained"]) == 0, row
    per_source = rows(results / "sources.csv")
    assert [r["source"] for r in per_source] == ["src0", "src1"], per_source
    assert [r["dut_iface"] for r in per_source] == ["xl-dut0", "xl-dut1"], per_source
    for r in per_source:
        assert n(r["xdp_matched"]) == n(r["sent"]) == n(r["capture_unique"]), r
        assert n(r["lost"]) == 0 and n(r["unexplained"]) == 0, r
    assert sum(n(r["sent"]) for r in per_source) == sent
    per_iface = rows(results / "ifaces.csv")
    assert [r["interface"] for r in per_iface] == ["xl-dut0", "xl-dut1"], per_iface
    for r in per_iface:
        # sent, xdp_matched and lost are the window's, as in every table; the NIC's counters
        # (and the identities) count the warm-up too, which has its own columns
        assert n(r["xdp_matched"]) == n(r["sent"]) and n(r["lost"]) == n(r["warmup_lost"]) == 0, r
        assert n(r["nic_rx"]) == n(r["xdp_seen"]) == n(r["sent"]) + n(r["warmup_sent"]), r
        assert n(r["warmup_xdp_matched"]) == n(r["warmup_sent"]), r
        assert n(r["unexplained"]) == 0, r
    # Every table counts the same window: the rows add up to the summary's.
    for col in ("sent", "warmup_sent", "xdp_matched", "lost", "warmup_lost", "lost_src_qdisc",
                "lost_unlocated", "warmup_lost_unlocated"):
        assert sum(n(r[col]) for r in per_source) == n(row[col]), col
    for col in ("sent", "warmup_sent", "xdp_matched", "lost", "warmup_lost", "nic_rx", "xdp_seen",
                "tcpdump_captured", "features_received"):
        assert sum(n(r[col]) for r in per_iface) == n(row[col]), col
    # The sources' addresses were found where the config said auto, and used.
    trial = json.loads(next((results / "trials").glob("*/rep~*/trial.json")).read_text())
    assert [s["address"] for s in trial["testbed"]["sources"]] == \
        [s["address"] for s in netns_lab.desc["sources"]], trial["testbed"]
    # A lab's hosts stay up and idle: nothing armed, nothing sending.
    assert agent(netns_lab, "GET", "/health")["session"] is None
    assert xdp_progs(netns_lab) == [] and generators_on_sources(netns_lab) == []


def test_a_controller_killed_mid_trial_leaves_the_dut_clean_after_the_grace(netns_lab, workflow_copy):
    proc = subprocess.Popen([str(SNAKEMAKE), "--cores", "1", "--configfile", str(netns_lab.config_path),
                             "--config", "target_pps=2000", "duration_s=4", "watchdog_grace_s=5",
                             "experiment=killed"],
                            cwd=workflow_copy, env=_env(workflow_copy), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log = planned_trial(workflow_copy / "results/killed",
                        {"target_pps": 2000, "duration_s": 4, "watchdog_grace_s": 5, "experiment": "killed",
                         **netns_lab.config}) / "logs/launch_generator.log"
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and "progress t=" in log.read_text(errors="replace")):
            assert proc.poll() is None and time.monotonic() < deadline, "the generators never ran"
            time.sleep(0.1)
        assert sorted(xdp_progs(netns_lab)) == ["xl-dut0", "xl-dut1"]
        os.killpg(proc.pid, signal.SIGKILL)     # the controller and its steps, without a word
        proc.wait(timeout=30)
        killed = time.monotonic()
        # The generators stop with their SSH sessions; the agent's watchdog disarms at the
        # trial's deadline (4 s + 5 s of grace after arming).
        while xdp_progs(netns_lab) or agent(netns_lab, "GET", "/health")["session"] is not None:
            assert time.monotonic() - killed < 20, "the DUT was not clean 20 s after the controller died"
            time.sleep(0.2)
        assert generators_on_sources(netns_lab) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run([str(SNAKEMAKE), "--unlock"], cwd=workflow_copy, env=_env(workflow_copy),
                       capture_output=True)
