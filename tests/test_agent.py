"""Tests of the DUT agent (workflow/xdplab/agent.py) on a real mini testbed.

The module builds its own testbed, separate from workflow/xdplab/testbed.py:
namespaces xlt-agent-src / xlt-agent-dut joined by veth xlt-as0 (10.202.0.1/30)
<-> xlt-ad0 (10.202.0.2/30), plus a management veth xlt-am (root namespace,
10.202.1.1/30) <-> mgmt0 (dut namespace, 10.202.1.2/30) on which the agent
listens.  IPv6 is off on the test link and neighbours are static, so the only
frames xlt-ad0 receives are the ones a test sends: counts can be exact.

Needs root, /usr/bin/python3 with bcc, tcpdump and iproute2; skips otherwise.
Run: .venv/bin/python -m pytest tests/test_agent.py -v
"""

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")

REPO = Path(__file__).resolve().parents[1]
AGENT_PY = REPO / "workflow" / "xdplab" / "agent.py"
BPF_DIR = REPO / "bpf"
SYS_PY = "/usr/bin/python3"

NS_SRC, NS_DUT = "xlt-agent-src", "xlt-agent-dut"
IF_SRC, IF_DUT = "xlt-as0", "xlt-ad0"
MGMT_ROOT, MGMT_DUT = "xlt-am", "mgmt0"
SRC_ADDR, DUT_ADDR = "10.202.0.1", "10.202.0.2"
MGMT_ROOT_ADDR, AGENT_ADDR = "10.202.1.1", "10.202.1.2"
AGENT_PORT = 7717
TEST_PORT = 12345
MAGIC = 0x58444C42
TOKEN = "test-token-" + "0123456789abcdef"


def _why_skip():
    if os.geteuid() != 0:
        return "needs root (network namespaces, XDP, tcpdump)"
    for tool in ("ip", "tcpdump"):
        if shutil.which(tool) is None:
            return "needs %s" % tool
    if not os.path.exists(SYS_PY):
        return "needs %s" % SYS_PY
    r = subprocess.run([SYS_PY, "-c", "import bcc"], capture_output=True)
    if r.returncode != 0:
        return "needs bcc importable in %s" % SYS_PY
    return None


_SKIP = _why_skip()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


def sh(*argv, check=True, timeout=30):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
    return r


def xdp_on_dut():
    """The `xdp` object of `ip -d link` for xlt-ad0, or None when nothing is attached."""
    out = sh("ip", "-n", NS_DUT, "-j", "-d", "link", "show", "dev", IF_DUT).stdout
    return json.loads(out)[0].get("xdp")


def xdp_in_ip_link():
    """Whether plain `ip -j link` shows an XDP program on xlt-ad0."""
    out = sh("ip", "-n", NS_DUT, "-j", "link", "show", "dev", IF_DUT).stdout
    return "xdp" in json.loads(out)[0]


def nic_rx_packets():
    return int(sh("ip", "netns", "exec", NS_DUT, "cat",
                  "/sys/class/net/%s/statistics/rx_packets" % IF_DUT).stdout)


# --- testbed -------------------------------------------------------------------

def _teardown_testbed():
    for ns in (NS_SRC, NS_DUT):
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", MGMT_ROOT, check=False)
    sh("ip", "link", "del", IF_SRC, check=False)


def _disable_ipv6(ns, *ifaces):
    for key in ("all", "default") + ifaces:
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
           "net.ipv6.conf.%s.disable_ipv6=1" % key)


def _mac(ns, ifname):
    return json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", ifname).stdout)[0]["address"]


LOCK_PATH = "/run/lock/xdplab-test-agent.lock"


@pytest.fixture(scope="module")
def testbed_lock():
    """Serializes concurrent runs of this module (say, `pytest tests/` started
    by someone else meanwhile): they share the namespace names."""
    f = open(LOCK_PATH if os.path.isdir("/run/lock") else "/tmp/xdplab-test-agent.lock", "w")
    try:
        deadline = time.monotonic() + 900
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another run of test_agent.py held %s for 15 min" % f.name)
                time.sleep(0.5)
        yield
    finally:
        f.close()


@pytest.fixture(scope="module")
def testbed(testbed_lock):
    _teardown_testbed()   # leftovers of an earlier crashed run
    try:
        sh("ip", "netns", "add", NS_SRC)
        sh("ip", "netns", "add", NS_DUT)
        sh("ip", "link", "add", IF_SRC, "netns", NS_SRC, "type", "veth",
           "peer", "name", IF_DUT, "netns", NS_DUT)
        sh("ip", "link", "add", MGMT_ROOT, "type", "veth", "peer", "name", MGMT_DUT,
           "netns", NS_DUT)
        _disable_ipv6(NS_SRC, IF_SRC)
        _disable_ipv6(NS_DUT, IF_DUT, MGMT_DUT)
        sh("sysctl", "-q", "-w", "net.ipv6.conf.%s.disable_ipv6=1" % MGMT_ROOT)
        sh("ip", "-n", NS_SRC, "addr", "add", SRC_ADDR + "/30", "dev", IF_SRC)
        sh("ip", "-n", NS_DUT, "addr", "add", DUT_ADDR + "/30", "dev", IF_DUT)
        sh("ip", "-n", NS_DUT, "addr", "add", AGENT_ADDR + "/30", "dev", MGMT_DUT)
        sh("ip", "addr", "add", MGMT_ROOT_ADDR + "/30", "dev", MGMT_ROOT)
        for ns, ifname in ((NS_SRC, "lo"), (NS_SRC, IF_SRC), (NS_DUT, "lo"),
                           (NS_DUT, IF_DUT), (NS_DUT, MGMT_DUT)):
            sh("ip", "-n", ns, "link", "set", "dev", ifname, "up")
        sh("ip", "link", "set", "dev", MGMT_ROOT, "up")
        # Static neighbours: no ARP on the test link during a trial.
        sh("ip", "-n", NS_SRC, "neigh", "replace", DUT_ADDR, "lladdr", _mac(NS_DUT, IF_DUT),
           "dev", IF_SRC, "nud", "permanent")
        sh("ip", "-n", NS_DUT, "neigh", "replace", SRC_ADDR, "lladdr", _mac(NS_SRC, IF_SRC),
           "dev", IF_DUT, "nud", "permanent")
        yield
    finally:
        _teardown_testbed()


class AgentProc:
    """The agent running in the dut namespace; restartable."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.token_file = self.workdir / "agent.token"
        self.token_file.write_text(TOKEN + "\n")
        os.chmod(self.token_file, 0o600)
        self.state_dir = self.workdir / "state"
        self.log_path = self.workdir / "agent.log"
        self.url = "http://%s:%d" % (AGENT_ADDR, AGENT_PORT)
        self.proc = None
        self.session = requests.Session()
        self.session.headers[("X-Xdplab-Token")] = TOKEN

    def start(self):
        self._log = open(self.log_path, "a")
        # `ip netns exec` execs the agent, so proc.pid is the agent itself.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS_DUT, SYS_PY, str(AGENT_PY),
             "--listen", "%s:%d" % (AGENT_ADDR, AGENT_PORT), "--token-file", str(self.token_file),
             "--bpf-dir", str(BPF_DIR), "--allow-interface", IF_DUT,
             "--state-dir", str(self.state_dir)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                if self.get("/health").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("agent did not come up:\n" + self.log())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def log(self):
        try:
            return self.log_path.read_text()[-6000:]
        except OSError:
            return ""

    def get(self, path, **kw):
        return self.session.get(self.url + path, timeout=60, **kw)

    def post(self, path, body=None, **kw):
        return self.session.post(self.url + path, json=body, timeout=60, **kw)


@pytest.fixture(scope="module")
def agent_proc(testbed, tmp_path_factory):
    a = AgentProc(tmp_path_factory.mktemp("agent"))
    try:
        a.start()
        yield a
    finally:
        a.stop()


@pytest.fixture
def agent(agent_proc):
    """The running agent; after each test nothing is left armed or attached."""
    if agent_proc.proc is None or agent_proc.proc.poll() is not None:
        agent_proc.start()
    try:
        yield agent_proc
    finally:
        try:
            if agent_proc.proc is not None and agent_proc.proc.poll() is None:
                agent_proc.post("/reset")
        finally:
            # Captured, so pytest shows it only when the test fails.
            sys.stderr.write("\n--- agent log (tail) ---\n" + agent_proc.log())


@pytest.fixture(scope="module")
def built(agent_proc):
    r = agent_proc.post("/build", {"port": TEST_PORT})
    assert r.status_code == 200, r.text
    return r.json()


def arm_body(**over):
    body = {"trial": "test/pps~1000/rep~0", "run_id": 4242, "interface": IF_DUT,
            "xdp_mode": "native", "port": TEST_PORT, "expected_tag": None,
            "snaplen": 64, "deadline_s": 60, "expected_packets": 1000}
    body.update(over)
    return body


SENDER = textwrap.dedent("""
    import socket, struct, sys, time
    n, run_id, port, size, dst = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4]), sys.argv[5]
    pad = bytes(size - 18)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(n):
        s.sendto(struct.pack("!IIQH", 0x58444c42, i, time.monotonic_ns(), run_id) + pad,
                 (dst, port))
        if i % 50 == 49:
            time.sleep(0.001)   # gentle: the veth ring holds 256 frames
    print(n)
""")


def send(n, run_id=4242, port=TEST_PORT, size=100):
    r = sh("ip", "netns", "exec", NS_SRC, SYS_PY, "-c", SENDER, str(n), str(run_id), str(port),
           str(size), DUT_ADDR, timeout=120)
    assert int(r.stdout) == n


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# --- tests ----------------------------------------------------------------------

def test_health_requires_token(agent):
    url = agent.url + "/health"
    r = requests.get(url, timeout=10)
    assert r.status_code == 401
    assert "token" in r.json()["error"].lower()
    r = requests.get(url, headers={"X-Xdplab-Token": "wrong"}, timeout=10)
    assert r.status_code == 401
    # The token is checked before the body is looked at.
    r = requests.post(agent.url + "/sessions", data=b"{not json", timeout=10)
    assert r.status_code == 401
    r = agent.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["ok"] is True and h["agent"] == "xdplab-agent/1"
    assert h["interfaces"] == [IF_DUT]
    assert h["session"] is None
    assert h["boot_id"] and h["kernel"] and h["bcc_version"]
    assert h["pid"] == agent.proc.pid
    assert len(h["agent_instance"]) == 16 and int(h["agent_instance"], 16) >= 0
    assert 0 < h["started_monotonic_ns"] < time.monotonic_ns()
    assert isinstance(h["stale_files_removed"], list)


def test_build_reports_program(agent, built):
    assert built["prog_name"] == "xdplab_collect"
    assert len(built["prog_tag"]) == 16 and int(built["prog_tag"], 16) >= 0
    assert built["insn_count"] > 10
    assert built["verified_insns"] > 0
    assert built["source_sha256"] == hashlib.sha256(
        (BPF_DIR / "collector.bpf.c").read_bytes()).hexdigest()
    assert built["header_sha256"] == hashlib.sha256((BPF_DIR / "xdplab.h").read_bytes()).hexdigest()
    assert "-DXDPLAB_PORT=%d" % TEST_PORT in built["cflags"]
    assert xdp_on_dut() is None   # build never attaches


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_trial_counts_are_exact(agent, built, mode):
    n = 1000
    rx0 = nic_rx_packets()
    r = agent.post("/sessions", arm_body(xdp_mode=mode, expected_tag=built["prog_tag"],
                                         expected_packets=n))
    assert r.status_code == 201, r.text
    arm = r.json()
    sid = arm["session"]
    assert arm["xdp_mode_in_effect"] == mode
    assert arm["prog_tag"] == built["prog_tag"]
    assert arm["prog_id"] > 0 and arm["link_id"] > 0
    assert arm["deadline_monotonic_ns"] > arm["armed_monotonic_ns"]
    assert arm["ringbuf_pages"] == 2048 and arm["ringbuf_pages_requested"] is None
    assert arm["ringbuf_bytes"] == 2048 * os.sysconf("SC_PAGE_SIZE")
    assert arm["agent_instance"] == agent.get("/health").json()["agent_instance"]
    x = xdp_on_dut()
    assert x and x["prog"]["id"] == arm["prog_id"]
    assert agent.get("/health").json()["session"]["session"] == sid
    assert agent.get("/sessions/" + sid).json()["state"] == "armed"

    send(n)
    time.sleep(0.3)

    r = agent.post("/sessions/%s/capture/stop" % sid)
    assert r.status_code == 200, r.text
    cap = r.json()
    assert cap["captured"] == n and cap["received_by_filter"] == n
    assert cap["dropped_by_kernel"] == 0
    assert agent.post("/sessions/%s/capture/stop" % sid).json() == cap
    assert agent.get("/sessions/" + sid).json()["state"] == "capture_stopped"

    r = agent.post("/sessions/%s/disarm" % sid)
    assert r.status_code == 200, r.text
    res = r.json()
    assert xdp_on_dut() is None
    assert res["session"] == sid and res["watchdog"] is False and res["run_id"] == 4242
    assert res["agent_instance"] == arm["agent_instance"] and res["ringbuf_pages"] == 2048
    assert res["nic"]["rx_packets"] == n
    assert nic_rx_packets() - rx0 == n
    xdp = res["xdp"]
    assert xdp["seen"] == n and xdp["ipv4_udp"] == n
    assert xdp["matched"] == n and xdp["features"] == n
    assert xdp["ringbuf_full"] == 0 and xdp["parse_errors"] == 0
    assert xdp["run_cnt"] == n and xdp["run_time_ns"] > 0 and xdp["ns_per_pkt"] > 0
    f = res["features"]
    assert f["received"] == n and f["for_run"] == n and f["other_run"] == 0
    assert f["unique_seqs"] == n and f["duplicates"] == 0
    assert f["drained"] is True
    assert f["latency_ns"]["count"] == n
    assert 0 < f["latency_ns"]["p50"] <= f["latency_ns"]["p99"] <= f["latency_ns"]["max"]
    assert res["window"]["armed_monotonic_ns"] <= f["first_arrival_ns"] <= f["last_arrival_ns"] \
        <= res["window"]["disarmed_monotonic_ns"]
    assert res["tcpdump"]["captured"] == n
    assert res["udp_sink"]["received_by_socket_or_dropped"] == n
    assert res["softirq"]["window"] == "first to last matched arrival"
    assert res["softirq"]["samples"] >= 2 and res["softirq"]["cpu_pct"] is not None

    assert agent.post("/sessions/%s/disarm" % sid).json() == res
    s = agent.get("/sessions/" + sid).json()
    assert s["state"] == "disarmed" and s["result"] == res

    r = agent.get("/sessions/%s/capture.pcap" % sid)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/vnd.tcpdump.pcap"
    assert len(r.content) == cap["pcap_bytes"] > 24
    assert r.content[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    assert hashlib.sha256(r.content).hexdigest() == cap["pcap_sha256"]


def test_other_run_ids_are_counted_apart(agent):
    r = agent.post("/sessions", arm_body(run_id=7, expected_packets=100))
    assert r.status_code == 201, r.text
    sid = r.json()["session"]
    send(100, run_id=7)
    send(30, run_id=8)
    send(20, run_id=7)   # seqs 0..19 again: duplicates
    time.sleep(0.2)
    res = agent.post("/sessions/%s/disarm" % sid).json()
    f = res["features"]
    assert res["xdp"]["matched"] == 150
    assert f["received"] == 150 and f["for_run"] == 120 and f["other_run"] == 30
    assert f["unique_seqs"] == 100 and f["duplicates"] == 20


def test_arm_refused_while_armed(agent):
    r = agent.post("/sessions", arm_body())
    assert r.status_code == 201, r.text
    sid = r.json()["session"]
    r2 = agent.post("/sessions", arm_body(trial="other"))
    assert r2.status_code == 409
    assert sid in r2.json()["error"]
    assert agent.post("/sessions/%s/disarm" % sid).status_code == 200
    assert xdp_on_dut() is None


def test_tag_mismatch_is_422_and_leaves_nothing(agent):
    r = agent.post("/sessions", arm_body(expected_tag="0000000000000000"))
    assert r.status_code == 422
    assert "0000000000000000" in r.json()["error"]
    assert xdp_on_dut() is None
    assert agent.get("/health").json()["session"] is None


FOREIGN = textwrap.dedent("""
    import sys
    from bcc import BPF
    b = BPF(text="int foreign_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    fn = b.load_func("foreign_xdp", BPF.XDP)
    BPF.attach_xdp(sys.argv[1], fn, 2)   # netlink, generic mode: outlives this process
""")


def test_foreign_program_is_refused_and_left_alone(agent):
    sh("ip", "netns", "exec", NS_DUT, SYS_PY, "-c", FOREIGN, IF_DUT, timeout=120)
    try:
        before = xdp_on_dut()
        assert before and before["prog"]["name"] == "foreign_xdp"
        r = agent.post("/sessions", arm_body())
        assert r.status_code == 409
        err = r.json()["error"]
        assert str(before["prog"]["id"]) in err and err.count("foreign_xdp") == 1, err
        assert before["prog"]["tag"] in err
        after = xdp_on_dut()
        assert after and after["prog"]["id"] == before["prog"]["id"]
    finally:
        sh("ip", "-n", NS_DUT, "link", "set", "dev", IF_DUT, "xdpgeneric", "off", check=False)
    assert xdp_on_dut() is None


def _tcpdumps_for(session_id):
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path("/proc/%s/cmdline" % pid).read_bytes()
            except OSError:
                continue
            if b"tcpdump" in cmd and session_id.encode() in cmd:
                pids.append(int(pid))
    return pids


def test_sigkill_while_armed_with_traffic(agent):
    """Fault 1: the agent is SIGKILLed mid-trial.  Nothing of it may stay behind
    but its pcap, which the next agent removes; the next agent is recognisably
    another one, does not know the old session, and arms fine."""
    h0 = agent.get("/health").json()
    r = agent.post("/sessions", arm_body())
    assert r.status_code == 201, r.text
    arm = r.json()
    sid = arm["session"]
    assert arm["agent_instance"] == h0["agent_instance"]
    assert xdp_in_ip_link()
    assert _tcpdumps_for(sid)
    pcap = agent.state_dir / (sid + ".pcap")
    rx0 = nic_rx_packets()
    flood = subprocess.Popen(["ip", "netns", "exec", NS_SRC, SYS_PY, "-c", SENDER, "500000",
                              "4242", str(TEST_PORT), "100", DUT_ADDR],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: nic_rx_packets() > rx0 + 500, 20), "no traffic arrived"
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(5)
        t0 = time.monotonic()
        assert wait_for(lambda: not xdp_in_ip_link(), 1.0, step=0.02), \
            "XDP still attached 1 s after SIGKILL"
        sys.stderr.write("detached %.3f s after SIGKILL\n" % (time.monotonic() - t0))
        assert flood.poll() is None, "traffic had stopped before the check"
        assert wait_for(lambda: not _tcpdumps_for(sid), 2.0), "tcpdump outlived the agent"
        assert pcap.is_file()   # what the killed agent could not clean up
    finally:
        flood.kill()
        flood.wait()
        time.sleep(0.2)   # frames still in the veth reach the DUT before the next test
    agent.restart()
    h1 = agent.get("/health").json()
    assert h1["session"] is None
    assert h1["agent_instance"] != h0["agent_instance"]
    assert h1["pid"] != h0["pid"] and h1["started_monotonic_ns"] > h0["started_monotonic_ns"]
    assert sid + ".pcap" in [f["file"] for f in h1["stale_files_removed"]]
    assert not pcap.exists()
    assert "removed stale capture %s" % pcap in agent.log()
    r = agent.get("/sessions/" + sid)
    assert r.status_code == 404 and sid in r.json()["error"]
    r = agent.post("/sessions", arm_body())
    assert r.status_code == 201, r.text
    assert r.json()["agent_instance"] == h1["agent_instance"]
    r = agent.post("/sessions/%s/disarm" % r.json()["session"])
    assert r.status_code == 200, r.text
    assert not xdp_in_ip_link()


def test_second_agent_on_the_same_state_dir_is_refused(agent):
    r = sh("ip", "netns", "exec", NS_DUT, SYS_PY, str(AGENT_PY),
           "--listen", "%s:%d" % (AGENT_ADDR, AGENT_PORT + 1), "--token-file", str(agent.token_file),
           "--bpf-dir", str(BPF_DIR), "--allow-interface", IF_DUT,
           "--state-dir", str(agent.state_dir), check=False, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "in use by another agent (pid %d)" % agent.proc.pid in r.stderr
    assert agent.get("/health").status_code == 200


def _agent_module():
    spec = importlib.util.spec_from_file_location("xdplab_agent_under_test", AGENT_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_forgotten_sessions_and_stale_files_lose_their_pcap(tmp_path):
    m = _agent_module()
    a = m.Agent.__new__(m.Agent)   # only the session bookkeeping, no BPF
    ids = ["s%03d" % i for i in range(m.MAX_KEPT_SESSIONS + 3)]
    a.sessions = {}
    for sid in ids:
        path = tmp_path / (sid + ".pcap")
        path.write_bytes(b"pcap")
        a.sessions[sid] = types.SimpleNamespace(id=sid, state="disarmed", pcap_path=str(path))
    armed = tmp_path / "armed.pcap"
    armed.write_bytes(b"pcap")
    a.sessions["armed"] = types.SimpleNamespace(id="armed", state="armed", pcap_path=str(armed))
    a._forget_old_sessions()
    assert sorted(a.sessions) == sorted(ids[3:] + ["armed"])
    # Captures live in RAM (/run): only the newest finished sessions keep theirs.
    kept = [sid + ".pcap" for sid in ids[-m.MAX_KEPT_CAPTURES:]] + ["armed.pcap"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert a.sessions[ids[3]].pcap_path is None

    # At start: only <session>.pcap regular files go; nothing else is touched.
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link.pcap").symlink_to(tmp_path / "notes.txt")
    removed = m.remove_stale_pcaps(str(tmp_path))
    assert sorted(r["file"] for r in removed) == sorted(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link.pcap", "notes.txt"]


def test_sigterm_disarms_and_exits_0(agent):
    r = agent.post("/sessions", arm_body())
    assert r.status_code == 201, r.text
    sid = r.json()["session"]
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(15) == 0
    assert xdp_on_dut() is None
    assert not _tcpdumps_for(sid)
    assert "session %s disarmed" % sid in agent.log()
    assert not list(agent.state_dir.glob("*.pcap"))   # nobody could fetch them any more
    agent.restart()


def test_watchdog_disarms_at_deadline(agent):
    r = agent.post("/sessions", arm_body(deadline_s=1.5))
    assert r.status_code == 201, r.text
    sid = r.json()["session"]
    send(10)
    assert wait_for(lambda: agent.get("/sessions/" + sid).json()["state"] == "disarmed", 6)
    assert xdp_on_dut() is None
    assert agent.get("/health").json()["session"] is None
    # Fault 2, DUT side: nobody called disarm; the results are still there.
    s = agent.get("/sessions/" + sid).json()
    assert s["watchdog"] is True and s["result"]["watchdog"] is True
    r = agent.post("/sessions/%s/capture/stop" % sid)
    assert r.status_code == 200, r.text
    cap = r.json()
    assert cap["captured"] == 10 and cap["dropped_by_kernel"] == 0
    r = agent.post("/sessions/%s/disarm" % sid)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["watchdog"] is True
    assert res["xdp"]["matched"] == 10 and res["features"]["unique_seqs"] == 10
    assert res["tcpdump"]["captured"] == 10
    assert res == s["result"]
    r = agent.get("/sessions/%s/capture.pcap" % sid)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == cap["pcap_sha256"]


def test_stalled_consumer_counts_drops_and_accounting_closes(agent, built):
    """Fault 6: the ring-buffer consumer stops (the whole agent is SIGSTOPped)
    while packets arrive.  A 4-page ring overflows; every drop is counted and
    the trial's books still close."""
    from xdplab import accounting   # tests/conftest.py puts workflow/ on sys.path

    n = 3000
    r = agent.post("/sessions", arm_body(ringbuf_pages=4, expected_tag=built["prog_tag"],
                                         expected_packets=n))
    assert r.status_code == 201, r.text
    arm = r.json()
    sid = arm["session"]
    assert arm["ringbuf_pages"] == arm["ringbuf_pages_requested"] == 4
    assert arm["ringbuf_bytes"] == 4 * os.sysconf("SC_PAGE_SIZE")
    assert arm["prog_tag"] == built["prog_tag"]   # the ring size is not in the program's tag
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        send(n)
        time.sleep(0.2)
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    r = agent.post("/sessions/%s/capture/stop" % sid)
    assert r.status_code == 200, r.text
    cap = r.json()
    r = agent.post("/sessions/%s/disarm" % sid)
    assert r.status_code == 200, r.text
    res = r.json()
    xdp, f = res["xdp"], res["features"]
    assert res["ringbuf_pages"] == 4
    assert xdp["matched"] == n
    assert xdp["ringbuf_full"] > 0
    assert xdp["matched"] == f["received"] + xdp["ringbuf_full"]
    assert xdp["features"] == f["received"] == f["unique_seqs"]
    assert f["drained"] is True
    assert cap["captured"] == n and cap["dropped_by_kernel"] == 0   # tcpdump still saw all
    ids = accounting.identities({"sent": n}, {"tcpdump": cap}, res)
    assert {i["name"]: i["residual"] for i in ids} == {
        "nic_vs_xdp": 0, "xdp_vs_features": 0, "passed_vs_tcpdump": 0, "matched_over_sent": 0}
    sys.stderr.write("stalled consumer: %d matched, %d records, %d ring-buffer drops\n"
                     % (xdp["matched"], f["received"], xdp["ringbuf_full"]))


@pytest.mark.parametrize("field,value", [
    ("trial", ""), ("trial", 5), ("trial", "a\nb"),
    ("run_id", -1), ("run_id", 65536), ("run_id", "1"), ("run_id", True),
    ("interface", "lo"), ("interface", "xl-dut0; reboot"), ("interface", None),
    ("xdp_mode", "offload"), ("xdp_mode", "NATIVE"),
    ("port", 0), ("port", 65536), ("port", 1.5),
    ("expected_tag", "zz"), ("expected_tag", 12),
    ("snaplen", 41), ("snaplen", 262145),
    ("deadline_s", 0), ("deadline_s", -1), ("deadline_s", 86401), ("deadline_s", "10"),
    ("deadline_s", False),
    ("expected_packets", -1), ("expected_packets", "many"),
    ("ringbuf_pages", 0), ("ringbuf_pages", 3), ("ringbuf_pages", 32768), ("ringbuf_pages", "4"),
    ("ringbuf_pages", True), ("ringbuf_pages", 4.0), ("ringbuf_pages", -4),
    ("bogus", 1),
])
def test_arm_rejects_bad_input(agent, field, value):
    body = arm_body()
    body[field] = value
    r = agent.post("/sessions", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field + ":")
    assert xdp_on_dut() is None


def test_missing_field_and_bad_bodies(agent):
    body = arm_body()
    del body["snaplen"]
    r = agent.post("/sessions", body)
    assert r.status_code == 400 and r.json()["error"].startswith("snaplen:")
    r = agent.post("/sessions", [1, 2])
    assert r.status_code == 400 and r.json()["error"].startswith("body:")
    r = agent.session.post(agent.url + "/sessions", data=b"{not json",
                           headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"].startswith("body:")
    r = agent.post("/build", {"port": 70000})
    assert r.status_code == 400 and r.json()["error"].startswith("port:")
    r = agent.post("/build", {})
    assert r.status_code == 400 and r.json()["error"].startswith("port:")
    r = agent.post("/build", {"port": TEST_PORT, "ringbuf_pages": 6})
    assert r.status_code == 400 and r.json()["error"].startswith("ringbuf_pages:")


def test_unknown_session_is_404(agent):
    for method, path in (("GET", "/sessions/nope"), ("POST", "/sessions/nope/disarm"),
                         ("POST", "/sessions/nope/capture/stop"),
                         ("GET", "/sessions/nope/capture.pcap"),
                         ("GET", "/sessions/..%2f..%2fetc/capture.pcap")):
        r = agent.session.request(method, agent.url + path, timeout=10)
        assert r.status_code == 404, (path, r.text)
        assert "error" in r.json()


def test_reset_disarms(agent):
    r = agent.post("/sessions", arm_body())
    assert r.status_code == 201, r.text
    sid = r.json()["session"]
    r = agent.post("/reset")
    assert r.status_code == 200 and r.json() == {"disarmed": [sid]}
    assert xdp_on_dut() is None
    assert agent.post("/reset").json() == {"disarmed": []}
    assert agent.get("/sessions/" + sid).json()["state"] == "disarmed"
