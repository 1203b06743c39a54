"""A sweep spread over a pool of testbeds (configuration key `testbeds`, issue 22): each
trial one job holding one testbed (a lock file per testbed, workflow/xdplab/pool.py),
`snakemake --cores 2` running two at once.  The pool here is the embedded testbed and the
test namespace lab (tests/labnet.py) with one of its sources: two testbeds on one machine,
whose trials share its CPUs (for tests only: not independent measurements).

Run under the testbed lock: flock /tmp/xdplab-testbed.lock ... pytest tests/test_pool.py"""

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from xdplab import pool, trials
from xdplab.config import ConfigError, validate_config

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SWEEP = {"target_pps": [1000, 2000, 3000], "packet_size": [18, 1458], "repeats": 2, "duration_s": 1,
         "warmup_s": 0, "keep_pcap": False, "keep_features": False}

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


def _env():
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def one_source_lab(netns_lab) -> dict:
    """The namespace lab as a testbed like the embedded one: source 0 and its DUT interface."""
    lab = json.loads(json.dumps(netns_lab.config["lab"]))
    lab["sources"] = lab["sources"][:1]
    lab["dut"]["ifaces"] = [lab["sources"][0]["dut_iface"]]
    return lab


TWO_EMBEDDED = [{"name": "emb0", "testbed": "embedded"}, {"name": "emb1", "testbed": "embedded", "instance": 1}]


def pool_config(testbeds: list, workdir: Path, experiment: str, **over) -> Path:
    config = dict(SWEEP, experiment=experiment, testbeds=testbeds, **over)
    path = workdir / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir, configfile, *args, timeout=600, **kw):
    # targets and options before --configfile, which takes every word after it
    return subprocess.run([str(SNAKEMAKE), "--cores", "2", *args, "--configfile", str(configfile)],
                          cwd=workdir, env=_env(), capture_output=True, text=True, timeout=timeout, **kw)


# -- configuration (no testbed) ----------------------------------------------------------

def test_a_pool_is_named_entry_by_entry_before_anything_runs():
    with pytest.raises(ConfigError) as e:
        validate_config({"testbeds": [{"name": "a", "testbed": "embedded"}, {"name": "a", "testbed": "embedded",
                                                                              "instance": 1}]})
    assert "testbeds[1] (a): name 'a' is also testbeds[0]'s" in str(e.value)
    with pytest.raises(ConfigError) as e:
        validate_config({"testbeds": [{"name": "x", "lab": {"dut": {}}}]})
    assert "testbeds[0] (x).lab.sources" in str(e.value)
    with pytest.raises(ConfigError) as e:
        validate_config({"testbeds": [{"name": "x", "testbed": "embedded"}, {"name": "y", "testbed": "embedded"}]})
    assert "x and y are one testbed" in str(e.value)
    assert validate_config({}).values["testbeds"] == []


def test_the_allocator_gives_each_testbed_to_one_process_and_the_kernel_frees_it(tmp_path):
    entries = [{"name": "a"}, {"name": "b"}]
    first = pool.try_acquire(entries, str(tmp_path))
    second = pool.try_acquire(entries, str(tmp_path))
    assert (first.name, second.name) == ("a", "b")
    assert pool.try_acquire(entries, str(tmp_path)) is None
    assert pool.held(entries, str(tmp_path)) == ["a", "b"]
    first.release()
    assert pool.try_acquire(entries, str(tmp_path)).name == "a"
    # A process that holds a testbed and is killed holds nothing.
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys,time; sys.path.insert(0, %r); from xdplab import pool; "
        "s = pool.try_acquire([{'name': 'c'}], %r); print(s.name, flush=True); time.sleep(60)")
        % (str(Path(pool.__file__).parents[1]), str(tmp_path))], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "c"
    assert pool.held([{"name": "c"}], str(tmp_path)) == ["c"]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert pool.held([{"name": "c"}], str(tmp_path)) == []
    fd = os.open(str(tmp_path / "c.lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # free: no BlockingIOError
    os.close(fd)


def test_testbeds_rows_compare_two_testbeds_on_the_points_they_share():
    def rec(name, point, achieved, lost):
        return {"trial": {"point": point, "target_pps": 1000, "packet_size": 18},
                "summary": {"testbed_name": name, "achieved_pps": achieved, "lost": lost,
                            "latency_p50_us": None, "xdp_ns_per_pkt": 100.0}}
    records = [rec("a", "p1", 1000.0, 0), rec("a", "p1", 1002.0, 2), rec("b", "p1", 990.0, 10),
               rec("b", "p1", 994.0, 12), rec("b", "p2", 1.0, 0)]
    rows_ = pool.testbeds_rows(records, {"a": {"by_size": {"18": {"ceiling_pps": 5e5}}}})
    assert [(r["testbed_name"], r["trials"], r["ceiling_pps"]) for r in rows_ if not r.get("metric")] == [
        ("a", 2, "18:500000"), ("b", 3, "")]
    compared = {r["metric"]: r for r in rows_ if r.get("metric")}
    assert set(compared) == {"achieved_pps", "lost", "xdp_ns_per_pkt"}   # no latency: none measured
    a = compared["achieved_pps"]
    assert (a["point"], a["n"], a["n_other"], a["difference"]) == ("p1", 2, 2, -9.0)
    assert a["ci95_lo"] < -9.0 < a["ci95_hi"]


def test_the_binary_search_over_a_pool_is_refused_before_anything_runs_and_the_search_is_not(workflow_copy):
    configfile = pool_config(TWO_EMBEDDED, workflow_copy, "refused")
    run = snakemake(workflow_copy, configfile, "-n", "ndr")
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "does not run over a pool of testbeds" in out and "snakemake search" in out
    assert not (workflow_copy / "results/build").exists()
    # The search's jobs, one per payload size, each take a testbed of the pool themselves:
    # no job of the one-testbed rules (build, connectivity) is asked for.
    run = snakemake(workflow_copy, configfile, "-n", "search", "--config", "packet_size=[18,1458]")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert out.count("rule search_run:") == 2 and "rule build_collector" not in out and "check_connectivity" not in out


# -- on two testbeds ---------------------------------------------------------------------

def trial_records(results: Path) -> dict:
    return {str(p.parent.relative_to(results)): json.loads(p.read_text())
            for p in sorted(results.glob("trials/*/rep~*/trial.json"))}


@root
def test_a_sweep_on_two_embedded_testbeds(workflow_copy):
    configfile = pool_config(TWO_EMBEDDED, workflow_copy, "pool")
    run = snakemake(workflow_copy, configfile)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    results = workflow_copy / "results/pool"
    records = trial_records(results)
    # The same trial directories a one-testbed run of the configuration has.
    raw = yaml.safe_load(configfile.read_text())
    one = validate_config({k: v for k, v in raw.items() if k != "testbeds"}).values
    expected = {str(Path(trials.trial_dir("", t["point"], t["rep"])).relative_to("/")) for t in trials.trials(one)}
    assert set(records) == expected and len(records) == 12
    by_testbed = {}
    for name, rec in records.items():
        p = rec["pool"]
        assert p["testbed_name"] in ("emb0", "emb1") and rec["summary"]["testbed_name"] == p["testbed_name"]
        assert rec["summary"]["unexplained"] == 0, (name, rec["summary"])
        assert p["started_unix_s"] <= rec["wall"]["armed_unix_s"] <= rec["wall"]["gathered_unix_s"] <= p["ended_unix_s"]
        by_testbed.setdefault(p["testbed_name"], []).append((p["started_unix_s"], p["ended_unix_s"], name))
    # Both testbeds ran trials, and no two trials overlapped on one testbed.
    assert set(by_testbed) == {"emb0", "emb1"}, {k: len(v) for k, v in by_testbed.items()}
    for spans in by_testbed.values():
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            assert end <= start, f"{a} and {b} overlapped"
    summary = rows(results / "summary.csv")
    assert len(summary) == 12 and {r["testbed_name"] for r in summary} == {"emb0", "emb1"}
    assert {r["testbed"] for r in summary} == {"embedded"}
    # points.csv does not pool the two testbeds (testbeds_equivalent false): a row per point and testbed
    points = rows(results / "points.csv")
    assert {(r["target_pps"], r["packet_size"], r["testbed_name"]) for r in points} == {
        (r["target_pps"], r["packet_size"], r["testbed_name"]) for r in summary}
    # Per testbed: its build, connectivity's environment record, under its name.
    for name in ("emb0", "emb1"):
        assert list((workflow_copy / f"results/build/pool-{name}").glob("features_port~*.json"))
        assert (workflow_copy / f"results/build/pool-{name}/environment.json").exists()
    # Nothing is held afterwards, and a rerun has nothing to do.
    assert pool.held(TWO_EMBEDDED, str(workflow_copy / pool.LOCK_DIR)) == []
    dry = snakemake(workflow_copy, configfile, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]


def _agent_session(netns_lab):
    import labnet

    status, health = labnet.agent(netns_lab.desc, "GET", "/health")
    return (health or {}).get("session")


@root
def test_a_killed_run_leaves_both_testbeds_free(netns_lab, workflow_copy):
    """An embedded instance and a lab: a killed run frees both, a following run proceeds."""
    entries = [TWO_EMBEDDED[1], {"name": "lab", "lab": one_source_lab(netns_lab)}]
    configfile = pool_config(entries, workflow_copy, "killed", duration_s=2)
    lock_dir = str(workflow_copy / pool.LOCK_DIR)
    proc = subprocess.Popen([str(SNAKEMAKE), "--cores", "2", "--configfile", str(configfile)], cwd=workflow_copy,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        results = workflow_copy / "results/killed"
        # Mid-sweep: a trial done, and both testbeds held by running trials.
        while time.monotonic() < deadline:
            if list(results.glob("trials/*/rep~*/trial.json")) and len(pool.held(entries, lock_dir)) == 2:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("the run never held both testbeds")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    while pool.held(entries, lock_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pool.held(entries, lock_dir) == []
    # A following run proceeds on both, and leaves nothing attached or running (after
    # Snakemake's own --unlock: a killed Snakemake leaves its directory lock, as always).
    unlock = snakemake(workflow_copy, configfile, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    run = snakemake(workflow_copy, configfile)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    assert len(rows(workflow_copy / "results/killed/summary.csv")) == 12
    import test_lab

    assert test_lab.xdp_progs(netns_lab) == [] and test_lab.generators_on_sources(netns_lab) == []
    assert _agent_session(netns_lab) is None
    assert not [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if ns.startswith("xdplab")]


TBF_RATE_BIT_S = 24_000_000   # 2,000 frames/s of 1,500 bytes (1458 B payloads): tests/test_ndr_testbed.py


@root
def test_calibration_finds_a_capped_source_and_testbeds_csv_compares_the_two(workflow_copy):
    """Instance 1's source capped by a tbf (the UDP stack: the packet path bypasses the
    qdisc): its calibrated ceiling is far below instance 0's, its trials at 10,000 pps are
    source-limited (not the DUT's loss), instance 0's are not; testbeds.csv has both and
    compares them on the point they share."""
    env = {**_env(), "PYTHONPATH": str(workflow_copy / "workflow")}
    up = subprocess.run([sys.executable, "-m", "xdplab.testbed", "--instance", "1", "up"], cwd=workflow_copy,
                        env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    try:
        tc = subprocess.run(["tc", "-n", "xdplab1-src", "qdisc", "add", "dev", "xl-src0", "root", "tbf", "rate",
                             f"{TBF_RATE_BIT_S // 1000}kbit", "burst", "6000", "limit", "12000"],
                            capture_output=True, text=True, timeout=30)
        assert tc.returncode == 0, tc.stderr
        configfile = pool_config(TWO_EMBEDDED, workflow_copy, "capped", target_pps=10000, packet_size=1458,
                                 repeats=4, send_path="udp", threads=1)
        run = snakemake(workflow_copy, configfile)
        assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    finally:
        subprocess.run([sys.executable, "-m", "xdplab.testbed", "--instance", "1", "down"], cwd=workflow_copy,
                       env=env, capture_output=True, timeout=120)
    ceilings = {name: json.loads((workflow_copy / f"results/build/pool-{name}/calibration.json").read_text())
                ["by_size"]["1458"]["ceiling_pps"] for name in ("emb0", "emb1")}
    assert ceilings["emb1"] < 3000 < 10000 < ceilings["emb0"], ceilings
    summary = rows(workflow_copy / "results/capped/summary.csv")
    assert len(summary) == 4
    for r in summary:
        capped = r["testbed_name"] == "emb1"
        assert (r["source_limited"] == "True") == capped, r
        if capped:
            assert r["loss_where"].startswith("source-limited"), r["loss_where"]
            assert int(float(r["lost_dut_nic"])) == 0, r
    table = rows(workflow_copy / "results/capped/testbeds.csv")
    per_testbed = {r["testbed_name"]: r for r in table if not r["metric"]}
    assert set(per_testbed) == {"emb0", "emb1"}
    assert sum(int(r["trials"]) for r in per_testbed.values()) == 4
    assert per_testbed["emb1"]["ceiling_pps"].startswith("1458:")
    if all(int(r["trials"]) for r in per_testbed.values()):   # both ran the one point
        lost = [r for r in table if r["metric"] == "lost"]   # emb1 minus emb0: the cap's drops
        assert len(lost) == 1 and float(lost[0]["difference"]) > 0, lost


def test_the_testbed_as_a_dimension_names_each_point_once_per_testbed():
    v = validate_config({"testbeds": TWO_EMBEDDED, "testbed_as_dimension": True, "target_pps": [1000, 2000]}).values
    names = [t["point"] for t in trials.trials(v)]
    assert len(names) == 4 and {n.split("_tb~")[1].split("_cfg~")[0] for n in names} == {"emb0", "emb1"}
    assert trials.settings_of_point(names[1], v)["testbed_name"] == "emb1"
    plain = validate_config({"testbeds": TWO_EMBEDDED, "target_pps": [1000, 2000]}).values
    assert all("_tb~" not in t["point"] for t in trials.trials(plain))
    with pytest.raises(trials.UnknownPoint):
        trials.settings_of_point(names[1], plain)


@root
def test_the_testbed_as_a_dimension_runs_each_point_on_its_testbed(workflow_copy):
    configfile = pool_config(TWO_EMBEDDED, workflow_copy, "dimension", target_pps=[1000, 2000], packet_size=18,
                             repeats=2, testbed_as_dimension=True)
    run = snakemake(workflow_copy, configfile)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    records = trial_records(workflow_copy / "results/dimension")
    assert len(records) == 8
    for name, rec in records.items():
        assert f"_tb~{rec['pool']['testbed_name']}_cfg~" in name, name
    table = rows(workflow_copy / "results/dimension/testbeds.csv")
    compared = {(r["target_pps"], r["metric"]) for r in table if r["metric"]}
    assert {("1000", "achieved_pps"), ("2000", "achieved_pps")} <= compared
    assert all(r["ci95_lo"] != "" for r in table if r["metric"] == "achieved_pps")   # 2 trials a side
    points = rows(workflow_copy / "results/dimension/points.csv")
    assert len(points) == 4 and {r["testbed_name"] for r in points} == {"emb0", "emb1"}


def _instance_up_with_tbf(workflow_copy, env) -> None:
    """Instance 1 up, its source capped by a tbf at 2,000 frames/s of 1,500 bytes."""
    up = subprocess.run([sys.executable, "-m", "xdplab.testbed", "--instance", "1", "up"], cwd=workflow_copy,
                        env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    tc = subprocess.run(["tc", "-n", "xdplab1-src", "qdisc", "add", "dev", "xl-src0", "root", "tbf", "rate",
                         f"{TBF_RATE_BIT_S // 1000}kbit", "burst", "6000", "limit", "12000"],
                        capture_output=True, text=True, timeout=30)
    assert tc.returncode == 0, tc.stderr


SEARCH = dict(packet_size=[1458, 1400], ndr_min_pps=500, ndr_max_pps=6000, search_loss_pct=[0],
              search_width_pct=1, search_duration_sum_s=3, latency_trial_s=1, send_path="udp", threads=1)


@root
def test_two_searches_at_once_on_two_testbeds_each_under_its_own_ceiling(workflow_copy):
    """`snakemake --cores 2 search latency` over two embedded instances: the two payload
    sizes' searches run at the same time, one per testbed; the one on the tbf-capped
    testbed never offers more than its calibrated ceiling (Max Load capped there, the result
    limited by the source), the other searches up to ndr_max_pps; each search's latency
    trials run on its testbed; every trial records the testbed that ran it."""
    env = {**_env(), "PYTHONPATH": str(workflow_copy / "workflow")}
    try:
        _instance_up_with_tbf(workflow_copy, env)
        configfile = pool_config(TWO_EMBEDDED, workflow_copy, "searches", **SEARCH)
        run = snakemake(workflow_copy, configfile, "search", "latency")
        assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    finally:
        subprocess.run([sys.executable, "-m", "xdplab.testbed", "--instance", "1", "down"], cwd=workflow_copy,
                       env=env, capture_output=True, timeout=120)
    results = workflow_copy / "results/searches"
    records = [json.loads(p.read_text()) for p in sorted(results.glob("search/*/search.json"))]
    assert len(records) == 2 and {r["testbed_name"] for r in records} == {"emb0", "emb1"}
    spans = []
    for rec in records:
        ceiling = rec["source_ceiling"]["ceiling_pps"]
        tried = [t["pps"] for t in rec["result"]["trials"]]
        (goal,) = rec["result"]["goals"]
        if rec["testbed_name"] == "emb1":   # capped: ~2,000 pps
            assert ceiling < 3000 and max(tried) <= ceiling, (ceiling, tried)
            assert goal["lower_bound_pps"] <= ceiling and goal["limited_by"] in ("source", "dut"), goal
        else:
            assert ceiling > 6000 and max(tried) == 6000 and goal["lower_bound_pps"] == 6000, (ceiling, goal)
        started = []
        for t in rec["result"]["trials"]:
            trial = json.loads((workflow_copy / t["trial"] / "trial.json").read_text())
            if not t.get("cached"):
                assert trial["pool"]["testbed_name"] == rec["testbed_name"], t["trial"]
                started.append((trial["pool"]["started_unix_s"], trial["pool"]["ended_unix_s"]))
            assert trial["summary"]["unexplained"] == 0, trial["summary"]
        spans.append((min(s for s, _ in started), max(e for _, e in started)))
        plan = json.loads((Path(rec_dir(results, rec)) / "latency.json").read_text())
        assert plan["testbed_name"] == rec["testbed_name"]
        for e in plan["trials"]:
            if e.get("trial"):
                trial = json.loads((workflow_copy / e["trial"] / "trial.json").read_text())
                assert trial["pool"]["testbed_name"] == rec["testbed_name"], e
    # The two searches overlapped in time: one on each testbed at once.
    (a0, a1), (b0, b1) = spans
    assert max(a0, b0) < min(a1, b1), spans
    table = {r["packet_size"]: r for r in rows(results / "search.csv")}
    assert {r["testbed_name"] for r in table.values()} == {"emb0", "emb1"}
    assert len(rows(results / "latency.csv")) >= 8
    assert pool.held(TWO_EMBEDDED, str(workflow_copy / pool.LOCK_DIR)) == []
    dry = snakemake(workflow_copy, configfile, "-n", "search", "latency")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]


def rec_dir(results: Path, rec: dict) -> Path:
    return results / "search" / rec["search"]


@root
def test_a_users_program_over_a_pool_is_checked_on_each_testbeds_dut(workflow_copy):
    """A user's program (programs/pass_all.bpf.c) over two embedded instances: built once on
    the controller, checked through each DUT's verifier by the first trial there (kernels
    may differ), its trials' books closed on both."""
    configfile = pool_config(TWO_EMBEDDED, workflow_copy, "program", target_pps=[1000, 2000], packet_size=18,
                             repeats=2, program="programs/pass_all.bpf.c")
    run = snakemake(workflow_copy, configfile)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    records = trial_records(workflow_copy / "results/program")
    assert len(records) == 4 and {r["pool"]["testbed_name"] for r in records.values()} == {"emb0", "emb1"}
    for rec in records.values():
        s = rec["summary"]
        assert s["program"] == "programs/pass_all.bpf.c" and s["unexplained"] == 0, s
    for name in ("emb0", "emb1"):
        (check,) = (workflow_copy / f"results/build/pool-{name}").glob("program~pass-all-*_port~*.json")
        assert json.loads(check.read_text())["loaded"]["tag"], check
    assert len(list((workflow_copy / "results/build/programs").glob("*.bpf.o"))) == 1
