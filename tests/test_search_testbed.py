"""`snakemake search` (RFC 9971, MLRsearch) on the embedded testbed.

- Under a rate limit on the test link (a tbf qdisc on the source interface) the search
  finds NDR within the goal width below the limit, PDR at or above NDR, each a regular
  result whose trials are normal, cached trials; a second run has nothing to do.
- Ctrl-C while a search's trial sends: the search stops at once, nothing stays armed or
  running, the finished trials stay, and the next run reads them instead of measuring
  them again."""

import csv
import json
import os
import signal
import time

import pytest
from test_faults import (DUT_IFACE, DUT_NS, Run, agent_health, assert_nothing_left, generator_pids, snakemake,
                         wait_for, xdp_of)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")

SRC_NS, SRC_IF = "xdplab-src", "xl-src0"
# 1458-byte payloads are 1500-byte frames without FCS, what tbf counts: 24 Mbit/s lets
# 2,000 packets/s through (tests/test_ndr_testbed.py).
TBF_RATE_BIT_S = 24_000_000
FRAME_B = 1458 + 28 + 14
LIMIT_PPS = TBF_RATE_BIT_S / 8 / FRAME_B
# tbf's bucket and queue (its burst and limit, bytes).  A trial of TRIAL_S seconds loses
# nothing up to the rate plus what they hold, (6,000 + 60,000) / 1,500 = 44 frames more:
# TRIAL_LIMIT_PPS.  The queue is that long so that a UDP sender descheduled for a few ms
# on a slow VM, which catches up in one burst, is queued, not dropped: with 8 frames of
# queue the search found loss even at 765 pps there, and its NDR wandered far below.
TBF_BURST_B, TBF_QUEUE_B = 6000, 60000
TRIAL_S = 1   # search_initial_trial_s and search_final_trial_s
TRIAL_LIMIT_PPS = LIMIT_PPS + (TBF_BURST_B + TBF_QUEUE_B) / FRAME_B / TRIAL_S
WIDTH_PCT = 0.5
CONFIG = ["packet_size=1458", "ndr_min_pps=500", "ndr_max_pps=8000", f"search_width_pct={WIDTH_PCT}",
          "warmup_s=0", "keep_features=false", "keep_pcap=false", "threads=1",
          # the UDP stack: the packet path bypasses the qdisc, so tbf would limit nothing
          "send_path=udp"]


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def workdir(testbed_up_copy):
    return testbed_up_copy


def test_search_finds_ndr_and_pdr_under_a_tbf_limit_and_then_has_nothing_to_do(workdir):
    import subprocess

    r = subprocess.run(["tc", "-n", SRC_NS, "qdisc", "add", "dev", SRC_IF, "root", "tbf", "rate",
                        f"{TBF_RATE_BIT_S // 1000}kbit", "burst", str(TBF_BURST_B), "limit", str(TBF_QUEUE_B)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    config = ["--config", "experiment=search", *CONFIG, f"search_initial_trial_s={TRIAL_S}",
              f"search_final_trial_s={TRIAL_S}", "keep_testbed=true"]
    rc, out = snakemake(workdir, "--cores", "1", "search", *config)
    assert rc == 0, out[-6000:]
    results = workdir / "results/search"
    goals = {r["goal"]: r for r in rows(results / "search.csv")}
    assert set(goals) == {"NDR", "PDR"}, goals
    ndr, pdr = goals["NDR"], goals["PDR"]
    for g in (ndr, pdr):
        assert g["result"] == "regular" and g["limited_by"] == "dut", g
        lower, upper = int(g["lower_bound_pps"]), int(g["upper_bound_pps"])
        # the width of the controller's bounds: the columns are rounded to whole pps, so
        # 1970 and 1980 can be bounds 0.5 % apart (xdplab.mlr.goal_result)
        assert lower < upper and float(g["bounds_width_pct"]) <= WIDTH_PCT + 1e-6, g
        assert g["frame_size"] == "1504", g
    # NDR within the width below the limit, and at most what tbf lets through in a trial
    # (its bucket and queue included; 0.6 % more for tbf's rounding: tests/test_ndr_testbed.py).
    assert (LIMIT_PPS / (1 + WIDTH_PCT / 100) * 0.995 <= int(ndr["lower_bound_pps"])
            <= TRIAL_LIMIT_PPS * 1.006), ndr
    assert int(pdr["lower_bound_pps"]) >= int(ndr["lower_bound_pps"]), (ndr, pdr)
    # Every trial is a normal trial of its own point, in search_trials.csv, in order.
    trials = rows(results / "search_trials.csv")
    assert len(trials) == int(ndr["trials"]) and [int(t["index"]) for t in trials] == list(range(len(trials)))
    assert trials[0]["pps"] == "8000"
    for t in trials:
        summary = json.loads((workdir / t["trial"] / "trial.json").read_text())["summary"]
        assert summary["target_pps"] == int(t["pps"]) and summary["sent"] == int(t["sent"]), t
        assert f"_dur~{t['duration_s']}_" in t["trial"] and t["trial"].endswith(f"rep~{t['rep']}")
        assert summary["unexplained"] == 0, summary
    # The loss above the limit was found where tbf drops: the source's qdisc.
    assert any(t["loss_where"].startswith("src_qdisc") for t in trials), trials
    report = (results / "search.md").read_text()
    assert "Relevant Lower Bound" in report and "Goal Exceed Ratio 50 %" in report
    assert (results / "search.svg").stat().st_size > 0 and (results / "search.png").stat().st_size > 0

    rc, again = snakemake(workdir, "-n", "search", *config)
    assert rc == 0 and "Nothing to be done" in again, again[-3000:]

    # Latency at fractions of the PDR found, reusing the search (cached, not run again).
    rc, out = snakemake(workdir, "--cores", "1", "latency", *config, "latency_trial_s=2")
    assert rc == 0, out[-6000:]
    assert "search, 1458 B payload" not in out, "the search ran again"
    loads = {r["load"]: r for r in rows(results / "latency.csv")}
    assert list(loads) == ["idle", "10% pdr", "50% pdr", "90% pdr", "ndr"], loads
    pdr_pps = int(pdr["lower_bound_pps"])
    for name, fraction in (("10% pdr", 0.1), ("50% pdr", 0.5), ("90% pdr", 0.9)):
        assert int(loads[name]["target_pps"]) == round(fraction * pdr_pps), loads[name]
    assert int(loads["ndr"]["target_pps"]) == int(ndr["lower_bound_pps"])
    for r in loads.values():
        # one kernel: every packet's latency, from the saved histogram
        assert r["clock"] == "one kernel" and int(r["packets"]) + int(r["lost"]) == 2 * int(r["target_pps"]), r
        p = [float(r[c]) for c in ("min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")]
        assert p == sorted(p) and p[0] > 0, r
        assert float(r["pdv_us"]) == pytest.approx(p[4] - p[0], abs=0.002), r
    assert (results / "latency.svg").stat().st_size > 0 and (results / "latency.md").exists()


def test_ctrl_c_during_a_search_stops_it_cleanly_and_the_next_run_reuses_its_trials(workdir):
    config = ["--config", "experiment=search-int", "packet_size=1458", "ndr_min_pps=1000", "ndr_max_pps=4000",
              "warmup_s=0", "keep_features=false", "search_final_trial_s=2", "keep_testbed=true"]
    run = Run(workdir, "--cores", "1", "search", *config)
    trials_dir = workdir / "results/search-int/trials"

    def finished():
        return sorted(p.parent for p in trials_dir.glob("*/rep~*/trial.json")) if trials_dir.exists() else []

    def sending():
        if run.proc.poll() is not None:
            raise AssertionError(f"snakemake ended early:\n{run.output[-4000:]}")
        if len(finished()) < 2:
            return False
        logs = [p for p in trials_dir.glob("*/rep~*/logs/launch_generator.log")
                if not (p.parent.parent / "trial.json").exists()]
        return any("progress t=" in p.read_text(errors="replace") for p in logs)

    try:
        wait_for(sending, 300, "two trials of the search done and the next one sending")
        done = {d: (d / "trial.json").read_bytes() for d in finished()}
        os.killpg(run.proc.pid, signal.SIGINT)   # what Ctrl-C in a terminal does
        t0 = time.monotonic()
        rc = run.wait()
        took = time.monotonic() - t0
    finally:
        run.kill()
    assert rc != 0, run.output[-3000:]
    assert took < 10, f"snakemake took {took:.1f} s to exit after Ctrl-C"
    # Nothing armed, nothing sending; the finished trials untouched.
    assert agent_health()["session"] is None and xdp_of(DUT_NS, DUT_IFACE) is None
    assert generator_pids() == []
    assert {d: (d / "trial.json").read_bytes() for d in done} == done
    interrupted = [json.loads(p.read_text()) for p in trials_dir.glob("*/rep~*/failed.json")]
    assert interrupted and interrupted[0]["interrupted"], interrupted
    assert any(n.startswith("disarm session") for n in interrupted[0]["cleanup"]), interrupted

    rc, out = snakemake(workdir, "--cores", "1", "search", *config[:-1], "keep_testbed=false")
    assert rc == 0, out[-4000:]
    assert out.count("[cached]") >= len(done), out[-4000:]
    assert {d: (d / "trial.json").read_bytes() for d in done} == done
    assert_nothing_left()
