"""Faults on the real embedded testbed: each one is injected while the workflow
runs (or just before), and the test checks that the run ends clean, says what
happened and loses nothing, and that the next plain run works.

Like tests/test_workflow.py, each test copies the repository into a temporary
directory and drives the snakemake command line in a subprocess.  Every test
cleans up after itself also when it fails: the testbed goes down, a tmpfs is
unmounted, a foreign XDP program is removed, a stray process is killed.
"""

import ast
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import find_trial, planned_trial

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SRC_NS, DUT_NS, DUT_IFACE = "xdplab-src", "xdplab-dut", "xl-dut0"
STATE = Path("/run/xdplab")
GENERATOR_MARK = "/tmp/xdplab-generator-"
# Generous bounds for a whole snakemake run: a failure is a hang, not a slow machine.
RUN_TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


# -- helpers ---------------------------------------------------------------------------

def _env(workdir):
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(workdir / "workflow")}


def tb_cli(workdir, action, check=True):
    proc = subprocess.run([sys.executable, "-m", "xdplab.testbed", action], cwd=workdir,
                          env=_env(workdir), capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


class Run:
    """snakemake in the background, in its own session and process group (like a
    shell job), its output in files so that nothing blocks on a full pipe."""

    def __init__(self, workdir, *args):
        self.workdir = workdir
        self.out_path = workdir / f"snakemake-{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([str(SNAKEMAKE), *args], cwd=workdir, env=_env(workdir),
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def wait(self, timeout=RUN_TIMEOUT_S):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"snakemake did not end within {timeout} s:\n{self.output[-4000:]}")

    def kill(self):
        if self.proc.poll() is None:
            with_suppress(os.killpg, self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    @property
    def output(self):
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")


def with_suppress(fn, *args):
    try:
        fn(*args)
    except (ProcessLookupError, OSError):
        pass


def snakemake(workdir, *args, timeout=RUN_TIMEOUT_S):
    run = Run(workdir, *args)
    rc = run.wait(timeout)
    return rc, run.output


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def trial_dir(workdir, exp, pps, size=1458, rep=0):
    return find_trial(workdir / "results" / exp, pps, size, rep)


def step_log(workdir, exp, step, pps, size=1458, rep=0):
    return trial_dir(workdir, exp, pps, size, rep) / "logs" / f"{step}.log"


def generator_running(workdir, exp, pps, run=None):
    """The generator of this trial has printed progress (so it is sending)."""
    if run is not None and run.proc.poll() is not None:
        raise AssertionError(f"snakemake ended early ({run.proc.returncode}):\n{run.output[-4000:]}")
    log = step_log(workdir, exp, "launch_generator", pps)
    return log.exists() and "progress t=" in log.read_text(errors="replace")


def generator_pids():
    out = subprocess.run(["pgrep", "-f", re.escape(GENERATOR_MARK)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def xdp_of(netns, iface):
    """The XDP entry of `ip -j link` for an interface in a namespace (None if none)."""
    out = subprocess.run(["ip", "-n", netns, "-j", "link", "show", "dev", iface],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    links = json.loads(out.stdout or "[]")
    return links[0].get("xdp") if links else None


def netns_pids(ns):
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def dut_rx_packets():
    """The DUT test interface's receive counter (None once the namespace is gone: the
    testbed was torn down, so certainly nothing is received)."""
    out = subprocess.run(["ip", "netns", "exec", DUT_NS, "cat", f"/sys/class/net/{DUT_IFACE}/statistics/rx_packets"],
                         capture_output=True, text=True)
    return int(out.stdout) if out.returncode == 0 else -1


def sshd_listener_pid():
    return int((STATE / "sshd.pid").read_text().split()[0])


def comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def only_sshd_left_on_source():
    listener = sshd_listener_pid()
    left = netns_pids(SRC_NS)
    return left == [listener] or [f"{p} {comm(p)}" for p in left]


def agent_health():
    import requests

    desc = json.loads((STATE / "testbed.json").read_text())
    token = Path(desc["dut"]["token_file"]).read_text().strip()
    r = requests.get(desc["dut"]["agent_url"] + "/health", headers={"X-Xdplab-Token": token}, timeout=5)
    r.raise_for_status()
    return r.json()


def agent_call(method, path, body=None, timeout=120):
    import requests

    desc = json.loads((STATE / "testbed.json").read_text())
    token = Path(desc["dut"]["token_file"]).read_text().strip()
    r = requests.request(method, desc["dut"]["agent_url"] + path, json=body,
                         headers={"X-Xdplab-Token": token}, timeout=timeout)
    assert r.status_code < 300, r.text
    return r.json()


def assert_nothing_left():
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "xdplab-" not in ns, ns
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert " xdp" not in links and "prog/xdp" not in links, links
    assert generator_pids() == []


def failure_of(workdir, exp, pps):
    path = trial_dir(workdir, exp, pps) / "failed.json"
    assert path.exists(), f"no {path}"
    return json.loads(path.read_text())


@pytest.fixture
def workdir(workflow_copy):
    dest = workflow_copy
    yield dest
    # Whatever happened: no snakemake of ours running, no generator, no testbed.
    for pid in generator_pids():
        with_suppress(os.kill, pid, signal.SIGKILL)
    tb_cli(dest, "down", check=False)


# -- 1. the agent is killed during a trial ------------------------------------------------

def test_agent_sigkilled_during_a_trial_fails_it_and_the_next_run_works(workdir):
    exp = "agentkill"
    # The trial is repeated by the next run with the same settings (its directory is keyed by
    # them); 8 s leave time to kill the agent while packets flow and to notice it.
    config = ["--config", "target_pps=4000", "duration_s=8", f"experiment={exp}"]
    run = Run(workdir, "--cores", "1", *config, "keep_testbed=true")
    try:
        wait_for(lambda: generator_running(workdir, exp, 4000, run), 120, "the generator to run")
        assert xdp_of(DUT_NS, DUT_IFACE), "the collector is attached while the trial runs"
        agent_pid = int((STATE / "agent.pid").read_text().split()[0])
        os.kill(agent_pid, signal.SIGKILL)
        killed, killed_wall = time.monotonic(), time.time()
        # The bpf_link goes with the agent's last file descriptor.
        wait_for(lambda: xdp_of(DUT_NS, DUT_IFACE) is None, 5, "the XDP program to go", interval=0.01)
        assert time.monotonic() - killed < 1.0, "the XDP program outlived the agent by a second"
        rc = run.wait()
    finally:
        run.kill()
    out = run.output
    assert rc != 0, out[-3000:]
    failure = failure_of(workdir, exp, 4000)
    assert failure["step"] == "launch_generator", failure
    tid = f"{exp}/{trial_dir(workdir, exp, 4000).parent.name}/rep~0"
    assert failure["trial"] == tid
    assert failure["reason"].startswith("the DUT agent stopped answering while the generator ran"), failure
    assert "10.201.2.2:7717" in failure["reason"] and "progress" not in failure["reason"], failure
    assert failure["time"], failure
    assert f"xdplab launch_generator: {failure['reason'].splitlines()[0]}" in out
    # The run's last lines, after Snakemake's: the trial, its step and its reason.
    end = out.split("At least one job did not complete successfully.", 1)[1]
    assert f"xdplab: trial {tid} FAILED in launch_generator at " in end, out[-3000:]
    assert not (trial_dir(workdir, exp, 4000) / "trial.json").exists()
    # The generator was stopped as soon as the agent was found gone, not after 20 s.
    assert generator_pids() == []
    assert failure["unix_s"] - killed_wall < 15, failure

    # The next plain run clears the dead testbed, discards the partial trial, repeats it.
    rc, out = snakemake(workdir, "--cores", "1", *config)
    assert rc == 0, out[-4000:]
    assert "cleared leftover" in out and "discarded the partial trial" in out, out[-4000:]
    trial = json.loads((trial_dir(workdir, exp, 4000) / "trial.json").read_text())
    assert [f["step"] for f in trial["previous_failures"]] == ["launch_generator"]
    assert trial["summary"]["unexplained"] == 0
    assert not (trial_dir(workdir, exp, 4000) / "failed.json").exists()
    assert_nothing_left()


# -- 2. the generator dies, or its SSH session breaks -----------------------------------------

def _ssh_session_pids():
    listener = sshd_listener_pid()
    return [p for p in netns_pids(SRC_NS) if p != listener and comm(p) == "sshd"]


@pytest.mark.parametrize("victim", ["generator", "ssh-session"])
def test_generator_or_ssh_session_dies_fails_the_trial_and_leaves_nothing(workdir, victim):
    exp = f"gendies-{victim}"
    run = Run(workdir, "--cores", "1", "--config", "target_pps=4000", "duration_s=30",
              f"experiment={exp}", "keep_testbed=true")
    try:
        wait_for(lambda: generator_running(workdir, exp, 4000, run), 120, "the generator to run")
        if victim == "generator":
            targets = generator_pids()
        else:
            targets = _ssh_session_pids()
        assert targets, victim
        for pid in targets:
            os.kill(pid, signal.SIGKILL)
        rc = run.wait()
    finally:
        run.kill()
    out = run.output
    assert rc != 0, out[-3000:]
    failure = failure_of(workdir, exp, 4000)
    assert failure["step"] == "launch_generator", failure
    assert "source host root@10.201.1.2:22" in failure["reason"], failure
    assert ("killed by a signal" if victim == "generator" else "SSH session broke") in failure["reason"]
    assert f"xdplab launch_generator: {failure['reason'].splitlines()[0]}" in out
    # The controller disarmed the trial's session; the testbed stays (keep_testbed) and idle.
    assert any(n.startswith("disarm session") for n in failure["cleanup"]), failure
    assert agent_health()["session"] is None
    assert xdp_of(DUT_NS, DUT_IFACE) is None
    # Nothing but the sshd listener is left on the source host.
    wait_for(lambda: only_sshd_left_on_source() is True, 15,
             f"only sshd on the source host (left: {only_sshd_left_on_source()})")
    assert generator_pids() == []
    tb_cli(workdir, "down")
    assert_nothing_left()


# -- 3. snakemake is interrupted ------------------------------------------------------------

def _interrupt_second_trial(workdir, exp, run):
    """Wait until one trial is complete and the other one's generator runs; return
    (finished pps, interrupted pps, finished trial.json bytes)."""
    rates = (2000, 3000)

    def state():
        done = [p for p in rates if (trial_dir(workdir, exp, p) / "trial.json").exists()]
        if len(done) == 1:
            other = [p for p in rates if p not in done][0]
            if generator_running(workdir, exp, other, run):
                return done[0], other
        return None

    finished, interrupted = wait_for(state, 180, "one trial done and the next one sending")
    return finished, interrupted, (trial_dir(workdir, exp, finished) / "trial.json").read_bytes()


@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGTERM to snakemake"])
def test_interrupted_run_stops_cleanly_and_keeps_finished_trials(workdir, how):
    exp = "sigint" if how.startswith("SIGINT") else "sigterm"
    keep = how.startswith("SIGTERM")  # and then the testbed stays up and is reused
    config = ["--config", "target_pps=[2000,3000]", "duration_s=8", f"experiment={exp}",
              f"keep_testbed={'true' if keep else 'false'}"]
    run = Run(workdir, "--cores", "1", *config)
    try:
        finished, interrupted, trial_bytes = _interrupt_second_trial(workdir, exp, run)
        rx_before = dut_rx_packets()
        if how.startswith("SIGINT"):
            os.killpg(run.proc.pid, signal.SIGINT)   # what Ctrl-C in a terminal does
        else:
            os.kill(run.proc.pid, signal.SIGTERM)
        sent = time.monotonic()
        # Within a second the traffic has stopped at the DUT: its receive counter stands still.
        time.sleep(1.0)
        rx_1s = dut_rx_packets()
        time.sleep(1.0)
        rx_2s = dut_rx_packets()
        rc = run.wait()
        took = time.monotonic() - sent
    finally:
        run.kill()
    out = run.output
    assert rc != 0, out[-3000:]
    failure = failure_of(workdir, exp, interrupted)
    assert failure["interrupted"] and failure["step"] == "launch_generator", failure
    assert failure["reason"] == f"interrupted by {how.split()[0]}", failure
    # The end says so once, and that running the same command again is what to do.
    end = out.split("At least one job did not complete successfully.", 1)[1]
    assert end.count(f"FAILED in launch_generator at {failure['time']}: interrupted by {how.split()[0]}") == 1, end
    assert out.rstrip().splitlines()[-1].endswith(
        "Run the same command again: finished trials are kept, failed or interrupted ones run again."), out[-3000:]
    assert any(n.startswith("disarm session") for n in failure["cleanup"]), failure
    # The generator stopped at once: the run did not wait out the 8 s of traffic.
    # (-1: the testbed was already torn down, so nothing at all is received)
    assert rx_2s in (rx_1s, -1), ("the DUT still received packets 1-2 s after the signal", rx_before, rx_1s, rx_2s)
    assert took < 5, f"snakemake took {took:.1f} s to exit after the {how}"
    assert generator_pids() == []
    assert not (trial_dir(workdir, exp, interrupted) / "trial.json").exists()
    assert (trial_dir(workdir, exp, finished) / "trial.json").read_bytes() == trial_bytes
    if keep:
        assert "the testbed is left up" in out
        assert agent_health()["session"] is None and xdp_of(DUT_NS, DUT_IFACE) is None
        wait_for(lambda: only_sshd_left_on_source() is True, 15, "only sshd on the source host")
    else:
        assert "xdplab: testbed down" in out
        assert_nothing_left()

    # The next run repeats only the interrupted trial (reusing a kept testbed).
    rc, out = snakemake(workdir, "--cores", "1", *config)
    assert rc == 0, out[-4000:]
    if keep:
        assert "reusing the testbed that is already up" in out, out[-3000:]
    reasons = "\n".join(line for line in out.splitlines() if "reason:" in line or "rule " in line)
    assert (trial_dir(workdir, exp, finished) / "trial.json").read_bytes() == trial_bytes, reasons
    # The terminal is quiet about jobs; Snakemake's log file names every job it ran.
    full_log = max((workdir / ".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    assert f"{trial_dir(workdir, exp, interrupted).parent.name}/rep~0/arm.json" in full_log.read_text(), \
        "the log names no job"
    assert f"{trial_dir(workdir, exp, finished).parent.name}/rep~0/arm.json" not in full_log.read_text(), \
        "the finished trial ran again"
    redone = json.loads((trial_dir(workdir, exp, interrupted) / "trial.json").read_text())
    assert [f["reason"] for f in redone["previous_failures"]] == [failure["reason"]]
    summary = (workdir / "results" / exp / "summary.csv").read_text().splitlines()
    assert len(summary) == 3, summary
    tb_cli(workdir, "down")
    assert_nothing_left()


# -- 4. leftovers of a crashed run -------------------------------------------------------------

def test_leftovers_of_a_crashed_run_are_cleared_and_named(workdir, tmp_path):
    exp = "leftovers"
    tb_cli(workdir, "up")
    # An armed session, as a run killed between arm and gather leaves it.
    tag = agent_call("POST", "/build", {"port": 12345})["prog_tag"]
    armed = agent_call("POST", "/sessions", {
        "trial": "crashed/pps~1/size~18/rep~0", "run_id": 7, "interfaces": [DUT_IFACE],
        "xdp_mode": "native", "port": 12345, "expected_tag": tag, "snaplen": 64,
        "deadline_s": 600, "expected_packets": 100})
    assert xdp_of(DUT_NS, DUT_IFACE)
    # A generator still sending on the source host.
    stray_path = Path(f"{GENERATOR_MARK}99.pyz")
    subprocess.run(["make", "-s", "-C", str(workdir), "source"], check=True)
    shutil.copy(workdir / "dist/xdplab-source.pyz", stray_path)
    stray = subprocess.Popen(["ip", "netns", "exec", SRC_NS, "python3", str(stray_path), "send", "--dst", "10.201.0.2",
                              "--port", "12345", "--pps", "100", "--size", "18", "--duration", "600",
                              "--threads", "1", "--run-id", "99"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # A half-done trial in results/.
    partial = planned_trial(workdir / "results" / exp, {"target_pps": 3000, "duration_s": 3,
                                                        "experiment": exp})
    partial.mkdir(parents=True)
    (partial / "arm.json").write_text(json.dumps({"session": "gone", "run_id": 1}))
    try:
        rc, out = snakemake(workdir, "--cores", "1", "--config", "target_pps=3000", "duration_s=3",
                            f"experiment={exp}")
        assert rc == 0, out[-4000:]
        assert f"session {armed['session']} (trial crashed/pps~1/size~18/rep~0" in out, out[-4000:]
        assert "generator still running on the source host" in out and "99" in out, out[-4000:]
        assert f"discarded the partial trial results/{exp}/trials/pps~3000" in out, out[-4000:]
        stray.wait(timeout=10)
        trial = json.loads((partial / "trial.json").read_text())
        assert trial["summary"]["unexplained"] == 0 and trial["summary"]["sent"] == 9000
        assert_nothing_left()
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()
        stray_path.unlink(missing_ok=True)


# -- 5. a foreign XDP program on the DUT interface ---------------------------------------------

FOREIGN = """
import sys
from bcc import BPF
b = BPF(text="int foreign_pass(struct xdp_md *ctx) { return XDP_PASS; }")
BPF.attach_xdp(sys.argv[1], b.load_func("foreign_pass", BPF.XDP), 0)
"""


def test_foreign_xdp_program_is_refused_and_left_in_place(workdir):
    exp = "foreign"
    tb_cli(workdir, "up")
    try:
        # A netlink attach outlives the process that made it.
        subprocess.run(["ip", "netns", "exec", DUT_NS, "/usr/bin/python3", "-c", FOREIGN, DUT_IFACE],
                       check=True, capture_output=True, timeout=120)
        before = xdp_of(DUT_NS, DUT_IFACE)
        prog = before["prog"]
        assert prog["name"] == "foreign_pass", before
        rc, out = snakemake(workdir, "--cores", "1", "--config", "target_pps=1000", "duration_s=2",
                            f"experiment={exp}", "keep_testbed=true")
        assert rc != 0, out[-3000:]
        assert f"id {prog['id']} name foreign_pass" in out, out[-3000:]
        failure = failure_of(workdir, exp, 1000)
        assert failure["step"] == "arm_collector" and "foreign_pass" in failure["reason"], failure
        after = xdp_of(DUT_NS, DUT_IFACE)
        assert after and after["prog"]["id"] == prog["id"], after
        assert not (workdir / "results" / exp / "summary.csv").exists()
    finally:
        subprocess.run(["ip", "-n", DUT_NS, "link", "set", "dev", DUT_IFACE, "xdp", "off"],
                       capture_output=True)
        tb_cli(workdir, "down", check=False)
    assert_nothing_left()


# -- 6. results unwritable, disk full ------------------------------------------------------------

@pytest.fixture
def mounts():
    mounted = []

    def mount(target, *options):
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "xdplab-test", str(target)],
                       check=True, capture_output=True)
        mounted.append(target)

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_trial_that_would_not_fit_is_refused_before_any_traffic(workdir, mounts):
    exp = "nofit"
    results = workdir / "results" / exp
    results.mkdir(parents=True)
    mounts(results, "size=2m")
    rc, out = snakemake(workdir, "--cores", "1", "--config", "target_pps=10000", "duration_s=3",
                        f"experiment={exp}")
    assert rc != 0, out[-3000:]
    failure = failure_of(workdir, exp, 10000)
    assert failure["step"] == "arm_collector", failure
    d = trial_dir(workdir, exp, 10000).relative_to(workdir)
    # 40,000 packets (1 s of warm-up, 3 s measured) x (16 + 64) bytes of capture, 30,000 feature
    # records x 40 bytes twice (raw, then Parquet) + 1 MiB of records
    assert failure["reason"].startswith(f"not enough space in {d}: the trial will write about 6.3 MiB "
                                        f"(40,000 packets x 80 bytes of capture, keep_pcap=true, "
                                        f"40 bytes per packet of feature records"), failure
    assert "MiB are free" in failure["reason"], failure
    present = sorted(p.name for p in trial_dir(workdir, exp, 10000).iterdir())
    assert "arm.json" not in present and "generator.json" not in present, present
    assert "launch_generator" not in out, "the generator was launched"
    assert_nothing_left()


def test_disk_filled_during_a_trial_names_the_path_and_leaves_no_half_trial(workdir, mounts):
    exp = "diskfull"
    results = workdir / "results" / exp
    results.mkdir(parents=True)
    mounts(results, "size=8m")
    run = Run(workdir, "--cores", "1", "--config", "target_pps=10000", "duration_s=3",
              f"experiment={exp}")
    try:
        wait_for(lambda: generator_running(workdir, exp, 10000, run), 120, "the generator to run")
        # Another program fills the disk while packets flow.
        with open(results / "filler", "wb") as f:
            try:
                while True:
                    f.write(bytes(1 << 16))
                    f.flush()
            except OSError:
                pass
        rc = run.wait()
    finally:
        run.kill()
    out = run.output
    assert rc != 0, out[-3000:]
    d = f"{trial_dir(workdir, exp, 10000).relative_to(workdir)}/"
    assert re.search(rf"cannot write {re.escape(d)}\S+: No space left on device", out), out[-4000:]
    d = trial_dir(workdir, exp, 10000)
    present = sorted(p.name for p in d.iterdir())
    assert "trial.json" not in present and "capture.pcap" not in present, present
    assert not [p for p in present if ".tmp" in p], present
    assert not (results / "summary.csv").exists()
    assert_nothing_left()


@pytest.mark.parametrize("where", ["experiment", "trials"])
def test_read_only_results_names_the_path(workdir, mounts, where):
    """Read-only results/<experiment>: refused before any job.  Read-only trials/ only:
    Snakemake itself fails to make the output directory (and skips onerror), and the
    run still ends in order: message with path and reason, testbed down."""
    exp = f"readonly-{where}"
    target = workdir / "results" / exp
    if where == "trials":
        target = target / "trials"
    target.mkdir(parents=True)
    mounts(target, "ro", "size=1m")
    rc, out = snakemake(workdir, "--cores", "1", "--config", "target_pps=1000", "duration_s=2",
                        f"experiment={exp}")
    assert rc != 0, out[-3000:]
    assert f"results/{exp}" in out and "Read-only file system" in out, out[-4000:]
    assert not list(target.iterdir())
    assert not (workdir / "results" / exp / "summary.csv").exists()
    assert_nothing_left()


# -- 7. unreachable source or agent, wrong SSH key ------------------------------------------------

CHECK = """
import json, sys
from xdplab import steps
try:
    steps.check_connectivity(sys.argv[1], sys.argv[2], steps.Log(sys.argv[3], "check"))
except steps.StepError as e:
    print(e)
    sys.exit(1)
print("ok")
"""


@pytest.fixture(scope="module")
def running_testbed(tmp_path_factory):
    """The embedded testbed's description as check_connectivity brings it up (one source, one DUT
    interface)."""
    from xdplab import steps
    from xdplab.testbed import EmbeddedTestbed

    tb = EmbeddedTestbed()
    try:
        yield steps.describe_embedded(tb.up(), "python3")
    finally:
        tb.down()


def _check(tmp_path, desc):
    path = tmp_path / f"testbed-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(desc))
    proc = subprocess.run([sys.executable, "-c", CHECK, str(path), str(tmp_path / "conn.json"),
                           str(tmp_path / "check.log")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
    return proc.returncode, proc.stdout.strip() + "\n" + proc.stderr


def _modified(desc, part, **changes):
    """The description with the DUT ("dut") or the one source ("source") changed."""
    d = json.loads(json.dumps(desc))
    (d["sources"][0] if part == "source" else d[part]).update(changes)
    return d


def test_connectivity_check_names_host_and_what_failed(running_testbed, tmp_path):
    desc = running_testbed
    rc, out = _check(tmp_path, desc)
    assert rc == 0 and out.startswith("ok\n"), out

    rc, out = _check(tmp_path, _modified(desc, "dut", agent_url="http://10.201.2.2:7799"))
    assert rc == 1 and "DUT agent at http://10.201.2.2:7799: cannot connect" in out, out
    assert "Connection refused" in out, out

    key = tmp_path / "unrelated_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    rc, out = _check(tmp_path, _modified(desc, "source", key_file=str(key)))
    assert rc == 1 and f"source host root@10.201.1.2:22 (src0): SSH login refused with key {key}" in out, out

    rc, out = _check(tmp_path, _modified(desc, "source", port=2222))
    assert rc == 1 and "source host root@10.201.1.2:2222 (src0): cannot connect over SSH" in out, out

    token = tmp_path / "wrong.token"
    token.write_text("0" * 64)
    rc, out = _check(tmp_path, _modified(desc, "dut", token_file=str(token)))
    assert rc == 1 and "the token was refused" in out and "10.201.2.2:7717" in out, out


def test_connectivity_check_names_hosts_that_accept_but_never_answer(running_testbed, tmp_path):
    import socket

    silent = []
    try:
        for addr in ("10.201.1.1", "10.201.2.1"):  # root-namespace ends of the management links
            s = socket.socket()
            s.bind((addr, 0))
            s.listen(8)
            silent.append(s)
        ssh_port, agent_port = silent[0].getsockname()[1], silent[1].getsockname()[1]
        desc = _modified(running_testbed, "source", host="10.201.1.1", port=ssh_port, known_hosts=None)
        desc["dut"]["agent_url"] = f"http://10.201.2.1:{agent_port}"
        rc, out = _check(tmp_path, desc)
    finally:
        for s in silent:
            s.close()
    assert rc == 1, out
    assert f"DUT agent at http://10.201.2.1:{agent_port}: no answer to GET /health within 5 s" in out, out
    assert f"source host root@10.201.1.1:{ssh_port} (src0): " in out, out


# -- 8. nothing reaches a shell unquoted ---------------------------------------------------------

def _python_files():
    return sorted((REPO / "workflow").rglob("*.py"))


def test_no_shell_anywhere_in_the_workflow():
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                assert not (kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                                       and kw.value.value is False)), \
                    f"{path}:{node.lineno}: shell= in a call"
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "os":
                assert f.attr not in ("system", "popen") and not f.attr.startswith(("spawn", "exec")), \
                    f"{path}:{node.lineno}: os.{f.attr}"
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]:
        text = path.read_text()
        for bad in ("shell=True", "os.system", "os.popen"):
            assert bad not in text, f"{path}: {bad}"
        # Rules run scripts (argv lists inside), never shell: or run: blocks.
        assert not re.search(r"^\s*(shell|run):", text, re.M), f"{path}: a shell: or run: block"


QUOTING_FUNCTIONS = {"remote_cmd", "generator_command"}


def _is_quoted_command(node):
    """A remote command is a call to remote_cmd/generator_command (which quote every part)."""
    if isinstance(node, ast.Call):
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
        return name in QUOTING_FUNCTIONS
    return False


def test_every_remote_command_is_quoted():
    for name in ("source.py", *(f"steps/{m}.py" for m in ("machinery", "connectivity", "arm", "traffic", "results")),
                 "housekeeping.py"):
        path = REPO / "workflow" / "xdplab" / name
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("run", "sudo") and node.args
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess")):
                assert _is_quoted_command(node.args[0]), \
                    f"{path}:{node.lineno}: a remote command not built by remote_cmd()"
    tree = ast.parse((REPO / "workflow/xdplab/source.py").read_text())
    funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    quote_calls = [n for n in ast.walk(funcs["remote_cmd"]) if isinstance(n, ast.Call)
                   and isinstance(n.func, ast.Attribute) and n.func.attr == "quote"]
    assert quote_calls, "remote_cmd quotes with shlex.quote"
    returns = [n.value for n in ast.walk(funcs["generator_command"]) if isinstance(n, ast.Return)]
    assert returns and all(_is_quoted_command(v) for v in returns)


def test_remote_commands_survive_hostile_values(tmp_path):
    sys.path.insert(0, str(REPO / "workflow"))
    from xdplab import source

    hostile = ["python3; touch /tmp/pwned", "$(reboot)", "a b", "'", '"', "`id`", "x\ny", "--dst=1"]
    for value in hostile:
        assert shlex.split(source.remote_cmd("ping", "-I", value, "10.0.0.1")) == ["ping", "-I", value, "10.0.0.1"]
        cmd = source.generator_command(value, "/tmp/g.py", {"dst": value, "port": 1, "run_id": 3})
        # sh -c '<run, then remove the file>' sh <file> <the generator's argv>: every value
        # is one argument of the generator, never shell code
        assert shlex.split(cmd) == ["sh", "-c", source._RUN_THEN_REMOVE, "sh", "/tmp/g.py",
                                    value, "/tmp/g.py", "send", "--dst", value, "--port", "1", "--run-id", "3"]
        # run for real: the program gets the values as they are, then its file is removed
        probe = tmp_path / "g.py"
        probe.write_text("import json, sys; print(json.dumps(sys.argv[1:])); sys.exit(3)\n")
        out = subprocess.run(["sh", "-c", source.generator_command(sys.executable, str(probe), {"dst": value})],
                             capture_output=True, text=True)
        assert json.loads(out.stdout) == ["send", "--dst", value] and out.returncode == 3, out
        assert not probe.exists()


def test_a_generator_uploaded_once_runs_through_a_link_of_its_run_and_stays(tmp_path):
    """A sequence's generator (xdplab.launcher) is uploaded once; each run links it at its own
    run's path, runs through the link (so that stopping by run id finds it) and removes the
    link, never the upload; hostile values stay single arguments."""
    sys.path.insert(0, str(REPO / "workflow"))
    from xdplab import source

    uploaded = tmp_path / "gen.py"
    uploaded.write_text("import json, sys; print(json.dumps([sys.argv[0]] + sys.argv[1:])); sys.exit(3)\n")
    run_path = tmp_path / "run-7.py"
    for value in ["$(reboot)", "a b", "'", "x\ny"]:
        cmd = source.generator_command(sys.executable, str(run_path), {"dst": value}, str(uploaded))
        assert shlex.split(cmd)[:6] == ["sh", "-c", source._LINK_RUN_THEN_REMOVE, "sh", str(uploaded), str(run_path)]
        out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
        assert json.loads(out.stdout) == [str(run_path), "send", "--dst", value] and out.returncode == 3, out
        assert uploaded.exists() and not run_path.exists()
