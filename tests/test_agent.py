"""Tests of the DUT agent (workflow/xdplab/agent/) on a real mini testbed.

The module builds its own testbed, separate from the package workflow/xdplab/testbed/:
namespaces xlt-agent-src / xlt-agent-dut joined by two veth pairs
xlt-as0 (10.202.0.1/30) <-> xlt-ad0 (10.202.0.2/30) and
xlt-as1 (10.202.0.5/30) <-> xlt-ad1 (10.202.0.6/30), plus a management veth
xlt-am (root namespace, 10.202.1.1/30) <-> mgmt0 (dut namespace, 10.202.1.2/30)
on which the agent listens.  IPv6 is off on the test links and neighbours are
static, so the only frames the DUT interfaces receive are the ones a test
sends: counts can be exact.

The agent runs from dist/xdplab-agent.pyz (built by `make agent` here), with
the contract's command line; one test runs it unzipped (python3 -m xdplab.agent).
Needs root, /usr/bin/python3 with bcc, tcpdump and iproute2; skips otherwise.
Run: flock /tmp/xdplab-testbed.lock .venv/bin/python -m pytest tests/test_agent.py -x -q
"""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")

REPO = Path(__file__).resolve().parents[1]
PYZ = REPO / "dist" / "xdplab-agent.pyz"
BPF_DIR = REPO / "bpf"
SYS_PY = "/usr/bin/python3"

NS_SRC, NS_DUT = "xlt-agent-src", "xlt-agent-dut"
LINKS = [("xlt-as0", "xlt-ad0", "10.202.0.1", "10.202.0.2"),
         ("xlt-as1", "xlt-ad1", "10.202.0.5", "10.202.0.6")]
IF_SRC, IF_DUT, SRC_ADDR, DUT_ADDR = LINKS[0]
IF_SRC1, IF_DUT1, SRC_ADDR1, DUT_ADDR1 = LINKS[1]
MGMT_ROOT, MGMT_DUT = "xlt-am", "mgmt0"
MGMT_ROOT_ADDR, AGENT_ADDR = "10.202.1.1", "10.202.1.2"
AGENT_PORT = 7717
TEST_PORT = 12345
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


def xdp_on(ifname=IF_DUT):
    """The `xdp` object of `ip -d link` for a DUT interface, or None when nothing is attached."""
    out = sh("ip", "-n", NS_DUT, "-j", "-d", "link", "show", "dev", ifname).stdout
    return json.loads(out)[0].get("xdp")


def xdp_on_dut():
    return xdp_on(IF_DUT) or xdp_on(IF_DUT1)


def nic_rx_packets(ifname=IF_DUT):
    return int(sh("ip", "netns", "exec", NS_DUT, "cat",
                  "/sys/class/net/%s/statistics/rx_packets" % ifname).stdout)


# --- testbed -------------------------------------------------------------------

def _teardown_testbed():
    for ns in (NS_SRC, NS_DUT):
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", MGMT_ROOT, check=False)
    for src, *_ in LINKS:
        sh("ip", "link", "del", src, check=False)


def _disable_ipv6(ns, *ifaces):
    for key in ("all", "default") + ifaces:
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
           "net.ipv6.conf.%s.disable_ipv6=1" % key)


def _mac(ns, ifname):
    return json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", ifname).stdout)[0]["address"]


LOCK_PATH = "/run/lock/xdplab-test-agent.lock"


@pytest.fixture(scope="module")
def testbed_lock():
    """Serializes concurrent runs of this module: they share the namespace names."""
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
        for src, dut, _, _ in LINKS:
            sh("ip", "link", "add", src, "netns", NS_SRC, "type", "veth",
               "peer", "name", dut, "netns", NS_DUT)
        sh("ip", "link", "add", MGMT_ROOT, "type", "veth", "peer", "name", MGMT_DUT,
           "netns", NS_DUT)
        _disable_ipv6(NS_SRC, *[l[0] for l in LINKS])
        _disable_ipv6(NS_DUT, MGMT_DUT, *[l[1] for l in LINKS])
        sh("sysctl", "-q", "-w", "net.ipv6.conf.%s.disable_ipv6=1" % MGMT_ROOT)
        for src, dut, src_addr, dut_addr in LINKS:
            sh("ip", "-n", NS_SRC, "addr", "add", src_addr + "/30", "dev", src)
            sh("ip", "-n", NS_DUT, "addr", "add", dut_addr + "/30", "dev", dut)
        sh("ip", "-n", NS_DUT, "addr", "add", AGENT_ADDR + "/30", "dev", MGMT_DUT)
        sh("ip", "addr", "add", MGMT_ROOT_ADDR + "/30", "dev", MGMT_ROOT)
        for ns, ifname in [(NS_SRC, "lo"), (NS_DUT, "lo"), (NS_DUT, MGMT_DUT)] + \
                [(NS_SRC, l[0]) for l in LINKS] + [(NS_DUT, l[1]) for l in LINKS]:
            sh("ip", "-n", ns, "link", "set", "dev", ifname, "up")
        sh("ip", "link", "set", "dev", MGMT_ROOT, "up")
        # Static neighbours: no ARP on the test links during a trial.
        for src, dut, src_addr, dut_addr in LINKS:
            sh("ip", "-n", NS_SRC, "neigh", "replace", dut_addr, "lladdr", _mac(NS_DUT, dut),
               "dev", src, "nud", "permanent")
            sh("ip", "-n", NS_DUT, "neigh", "replace", src_addr, "lladdr", _mac(NS_SRC, src),
               "dev", dut, "nud", "permanent")
        yield
    finally:
        _teardown_testbed()


@pytest.fixture(scope="module")
def pyz(testbed):
    r = subprocess.run(["make", "-s", "agent"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert PYZ.is_file()
    return PYZ


def agent_argv(token_file, state_dir, port=AGENT_PORT, interfaces=(IF_DUT, IF_DUT1),
               pyz=PYZ):
    argv = ["ip", "netns", "exec", NS_DUT, SYS_PY]
    argv += [str(pyz)] if pyz else ["-m", "xdplab.agent"]
    argv += ["--listen", "%s:%d" % (AGENT_ADDR, port), "--token-file", str(token_file)]
    for i in interfaces:
        argv += ["--interface", i]
    return argv + ["--state-dir", str(state_dir)]


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
        self.session.headers["X-Xdplab-Token"] = TOKEN

    def start(self):
        self._log = open(self.log_path, "a")
        # `ip netns exec` execs the agent, so proc.pid is the agent itself.
        self.proc = subprocess.Popen(agent_argv(self.token_file, self.state_dir),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
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
def agent_proc(pyz, tmp_path_factory):
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
    body = {"trial": "test/pps~1000/rep~0", "run_id": 4242, "interfaces": [IF_DUT],
            "xdp_mode": "native", "port": TEST_PORT, "expected_tag": None,
            "snaplen": 64, "deadline_s": 60, "expected_packets": 1000}
    body.update(over)
    return body


def arm(agent, **over):
    r = agent.post("/sessions", arm_body(**over))
    assert r.status_code == 201, r.text
    return r.json()


SENDER = textwrap.dedent("""
    import socket, struct, sys, time
    n, run_id, port, size, dst, kind = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4]), sys.argv[5], sys.argv[6]
    pad = bytes(max(0, size - 18))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(n):
        if kind == "xdplab":
            payload = struct.pack("!IIQH", 0x58444c42, i, time.monotonic_ns(), run_id) + pad
        else:   # "plain": no payload header
            payload = bytes(size)
        s.sendto(payload, (dst, port))
        if i % 50 == 49:
            time.sleep(0.001)   # gentle: the veth ring holds 256 frames
    print(n)
""")

RAW_SENDER = textwrap.dedent("""
    import socket, struct, sys
    n, ifname, dst_mac, ethertype = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4], 0)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    src = s.getsockname()[4]
    dst = bytes.fromhex(dst_mac.replace(":", ""))
    if ethertype == 0x0806:   # ARP request for an address nobody has
        body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, bytes([10, 202, 0, 1]),
                           bytes(6), bytes([10, 202, 0, 3]))
    else:
        body = bytes(46)
    for _ in range(n):
        s.send(dst + src + struct.pack("!H", ethertype) + body)
    print(n)
""")


def send(n, run_id=4242, port=TEST_PORT, size=100, dst=DUT_ADDR, kind="xdplab"):
    r = sh("ip", "netns", "exec", NS_SRC, SYS_PY, "-c", SENDER, str(n), str(run_id), str(port),
           str(size), dst, kind, timeout=120)
    assert int(r.stdout) == n


def send_raw(n, ethertype, src_if=IF_SRC, dut_if=IF_DUT):
    r = sh("ip", "netns", "exec", NS_SRC, SYS_PY, "-c", RAW_SENDER, str(n), src_if,
           _mac(NS_DUT, dut_if), hex(ethertype), timeout=60)
    assert int(r.stdout) == n


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# --- health and the token --------------------------------------------------------

def test_health_without_token_is_minimal_and_with_token_full(agent):
    r = requests.get(agent.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json() == {"ok": True, "agent": "xdplab-agent/2"}
    r = requests.get(agent.url + "/health", headers={"X-Xdplab-Token": "wrong"}, timeout=10)
    assert r.status_code == 401 and "token" in r.json()["error"].lower()
    h = agent.get("/health").json()
    assert h["ok"] is True and h["agent"] == "xdplab-agent/2"
    assert set(h["interfaces"]) == {IF_DUT, IF_DUT1}
    i = h["interfaces"][IF_DUT]
    assert i["exists"] is True and i["ipv4"] == [DUT_ADDR + "/30"] and i["driver"] == "veth"
    assert i["mtu"] == 1500 and i["mac"] == _mac(NS_DUT, IF_DUT) and i["xdp"] is None
    assert i["ifindex"] > 0
    assert h["session"] is None
    assert h["boot_id"] and h["kernel"] and h["bcc_version"]
    assert h["pid"] == agent.proc.pid
    assert len(h["agent_instance"]) == 16 and int(h["agent_instance"], 16) >= 0
    assert 0 < h["started_monotonic_ns"] < time.monotonic_ns()
    assert isinstance(h["stale_files_removed"], list)


@pytest.mark.parametrize("method,path", [
    ("GET", "/metrics"), ("POST", "/build"), ("POST", "/sessions"), ("POST", "/reset"),
    ("GET", "/sessions/x"), ("POST", "/sessions/x/disarm"), ("POST", "/sessions/x/capture/stop"),
    ("GET", "/sessions/x/capture.pcap"), ("GET", "/nowhere"), ("GET", "/environment"),
    ("GET", "/sessions/x/features")])
@pytest.mark.parametrize("token", [None, "wrong", TOKEN[:-1]])
def test_no_or_wrong_token_is_401_and_changes_nothing(agent, method, path, token):
    headers = {} if token is None else {"X-Xdplab-Token": token}
    body = json.dumps(arm_body()).encode() if path == "/sessions" else b"{not json"
    r = requests.request(method, agent.url + path, data=body, headers=headers, timeout=10)
    assert r.status_code == 401, r.text
    assert "X-Xdplab-Token" in r.json()["error"]
    assert agent.get("/health").json()["session"] is None
    assert xdp_on_dut() is None


# --- refusals -----------------------------------------------------------------------

def test_interface_not_given_at_start_is_403_naming_the_allowed(agent):
    r = agent.post("/sessions", arm_body(interfaces=[IF_DUT, "lo"]))
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err.startswith("interfaces:") and "lo" in err and IF_DUT in err and IF_DUT1 in err
    assert xdp_on_dut() is None


def test_a_users_program_is_refused_unless_the_operator_allowed_it(agent):
    """This agent was started without --allow-programs / --allow-program-upload: an upload,
    a check and an arm naming a program are each refused, naming the flags; nothing is
    stored, loaded or attached."""
    obj = b"\x7fELF" + bytes(14) + (247).to_bytes(2, "little") + bytes(44)
    sha = hashlib.sha256(obj).hexdigest()
    r = agent.session.post(agent.url + "/programs", data=obj, timeout=10,
                           headers={"X-Xdplab-Sha256": sha})
    assert r.status_code == 403 and "--allow-program-upload" in r.json()["error"], r.text
    r = agent.post("/programs/check", {"program": {"sha256": sha}, "port": 12345})
    assert r.status_code == 403, r.text
    assert "--allow-programs" in r.json()["error"] and "--allow-program-upload" in r.json()["error"]
    r = agent.post("/sessions", arm_body(program={"sha256": sha, "name": None, "globals": {}}))
    assert r.status_code == 403 and "--allow-program" in r.json()["error"], r.text
    assert agent.get("/health").json()["user_programs"] == {"allow_programs": None,
                                                             "allow_program_upload": False}
    assert not (agent.state_dir / "programs").exists()
    assert xdp_on_dut() is None


def test_oversized_body_is_413_naming_content_length(agent):
    r = agent.session.post(agent.url + "/sessions", data=b"x" * (64 * 1024 + 1), timeout=10)
    assert r.status_code == 413, r.text
    assert r.json()["error"].startswith("Content-Length:")
    # A lie about the length that is never followed by a body is refused at once too.
    with socket.create_connection((AGENT_ADDR, AGENT_PORT), timeout=5) as c:
        c.sendall(b"POST /sessions HTTP/1.1\r\nHost: x\r\nX-Xdplab-Token: " + TOKEN.encode() +
                  b"\r\nContent-Length: 999999999\r\n\r\n")
        head = c.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")
    assert agent.get("/health").json()["session"] is None


def test_slow_client_is_dropped(agent):
    """A client that sends half a request is disconnected after the socket
    timeout, and the agent keeps answering others meanwhile."""
    c = socket.create_connection((AGENT_ADDR, AGENT_PORT), timeout=30)
    try:
        c.sendall(b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Le")
        t0 = time.monotonic()
        assert agent.get("/health").status_code == 200       # not blocked by the slow one
        data = c.recv(4096)       # b"" once the agent closes the connection
        waited = time.monotonic() - t0
    finally:
        c.close()
    assert not data.startswith(b"HTTP/1.1 2")
    assert 5 <= waited <= 15, waited
    # An idle keep-alive connection is closed the same way.
    c = socket.create_connection((AGENT_ADDR, AGENT_PORT), timeout=30)
    try:
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = c.recv(4096)
        t0 = time.monotonic()
        rest = c.recv(4096)
        while rest:
            rest = c.recv(4096)
        assert first.startswith(b"HTTP/1.1 200") and 5 <= time.monotonic() - t0 <= 15
    finally:
        c.close()


def test_arm_refused_while_armed(agent):
    sid = arm(agent)["session"]
    r2 = agent.post("/sessions", arm_body(trial="other", interfaces=[IF_DUT1]))
    assert r2.status_code == 409
    assert sid in r2.json()["error"]
    assert xdp_on(IF_DUT1) is None
    assert agent.post("/sessions/%s/disarm" % sid).status_code == 200
    assert xdp_on_dut() is None


def test_tag_mismatch_is_422_and_leaves_nothing(agent):
    pcaps = sorted(agent.state_dir.glob("*.pcap"))
    r = agent.post("/sessions", arm_body(expected_tag="0000000000000000"))
    assert r.status_code == 422
    assert "0000000000000000" in r.json()["error"]
    assert xdp_on_dut() is None
    assert agent.get("/health").json()["session"] is None
    assert sorted(agent.state_dir.glob("*.pcap")) == pcaps   # the failed arm's is gone


FOREIGN = textwrap.dedent("""
    import sys
    from bcc import BPF
    b = BPF(text="int foreign_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    fn = b.load_func("foreign_xdp", BPF.XDP)
    BPF.attach_xdp(sys.argv[1], fn, 2)   # netlink, generic mode: outlives this process
""")


def test_foreign_program_is_refused_and_left_alone(agent):
    sh("ip", "netns", "exec", NS_DUT, SYS_PY, "-c", FOREIGN, IF_DUT1, timeout=120)
    try:
        before = xdp_on(IF_DUT1)
        assert before and before["prog"]["name"] == "foreign_xdp"
        r = agent.post("/sessions", arm_body(interfaces=[IF_DUT, IF_DUT1]))
        assert r.status_code == 409
        err = r.json()["error"]
        assert str(before["prog"]["id"]) in err and err.count("foreign_xdp") == 1, err
        assert before["prog"]["tag"] in err and IF_DUT1 in err
        after = xdp_on(IF_DUT1)
        assert after and after["prog"]["id"] == before["prog"]["id"]
        assert xdp_on(IF_DUT) is None
    finally:
        sh("ip", "-n", NS_DUT, "link", "set", "dev", IF_DUT1, "xdpgeneric", "off", check=False)
    assert xdp_on_dut() is None


@pytest.mark.parametrize("field,value", [
    ("trial", ""), ("trial", 5), ("trial", "a\nb"),
    ("run_id", 0), ("run_id", 65536), ("run_id", "1"), ("run_id", True),
    ("run_ids", 0), ("run_ids", 17), ("run_ids", 1.0),
    ("interfaces", "xlt-ad0"), ("interfaces", []), ("interfaces", [None]),
    ("interfaces", [IF_DUT, IF_DUT]),
    ("xdp_mode", "offload"), ("xdp_mode", "NATIVE"),
    ("port", 0), ("port", 65536), ("port", 1.5),
    ("expected_tag", "zz"), ("expected_tag", 12),
    ("snaplen", 41), ("snaplen", 262145),
    ("deadline_s", 0), ("deadline_s", -1), ("deadline_s", 86401), ("deadline_s", "10"),
    ("deadline_s", False), ("deadline_s", float("nan")),
    ("expected_packets", -1), ("expected_packets", "many"), ("expected_packets", 2 ** 32 + 1),
    ("ringbuf_pages", 0), ("ringbuf_pages", 3), ("ringbuf_pages", 32768), ("ringbuf_pages", "4"),
    ("ringbuf_pages", True), ("ringbuf_pages", 4.0), ("ringbuf_pages", -4),
    ("collector", "all"),
    ("bogus", 1),
])
def test_arm_rejects_bad_input(agent, field, value):
    body = arm_body()
    body[field] = value
    r = agent.session.post(agent.url + "/sessions", data=json.dumps(body), timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field + ":")
    assert xdp_on_dut() is None


def test_missing_field_and_bad_bodies(agent):
    body = arm_body()
    del body["snaplen"]
    r = agent.post("/sessions", body)
    assert r.status_code == 400 and r.json()["error"].startswith("snaplen:")
    r = agent.post("/sessions", arm_body(run_id=65535, run_ids=2))
    assert r.status_code == 400 and r.json()["error"].startswith("run_ids:")
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
    r = agent.post("/build", {"port": TEST_PORT, "collector": "off"})
    assert r.status_code == 400 and r.json()["error"].startswith("collector:")


def test_unknown_session_is_404(agent):
    for method, path in (("GET", "/sessions/nope"), ("POST", "/sessions/nope/disarm"),
                         ("POST", "/sessions/nope/capture/stop"),
                         ("GET", "/sessions/nope/capture.pcap"),
                         ("GET", "/sessions/..%2f..%2fetc/capture.pcap")):
        r = agent.session.request(method, agent.url + path, timeout=10)
        assert r.status_code == 404, (path, r.text)
        assert "error" in r.json()


# --- build and trials -------------------------------------------------------------------

def test_build_reports_program_and_is_reused(agent, built):
    assert built["prog_name"] == "xdplab_collect" and built["collector"] == "features"
    assert len(built["prog_tag"]) == 16 and int(built["prog_tag"], 16) >= 0
    assert built["insn_count"] > 10 and built["verified_insns"] > 0
    assert built["source_sha256"] == hashlib.sha256(
        (BPF_DIR / "collector.bpf.c").read_bytes()).hexdigest()
    assert built["header_sha256"] == hashlib.sha256((BPF_DIR / "xdplab.h").read_bytes()).hexdigest()
    assert built["cflags"] == ["-DXDPLAB_PORT=%d" % TEST_PORT]
    assert built["ringbuf_pages"] == 2048
    assert built["ringbuf_bytes"] == 2048 * os.sysconf("SC_PAGE_SIZE")
    assert xdp_on_dut() is None   # build never attaches
    assert built["instances"] == 2        # one per --interface: arming never compiles
    again = agent.post("/build", {"port": TEST_PORT}).json()
    assert again["reused"] is True and again["compile_s"] == 0
    assert again["prog_tag"] == built["prog_tag"]


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_trial_counts_are_exact(agent, built, mode):
    n = 1000
    rx0 = nic_rx_packets()
    arm_r = arm(agent, xdp_mode=mode, expected_tag=built["prog_tag"], expected_packets=n)
    sid = arm_r["session"]
    link = arm_r["interfaces"][IF_DUT]
    assert link["xdp_mode_in_effect"] == mode and link["prog_tag"] == built["prog_tag"]
    assert link["prog_id"] > 0 and link["link_id"] > 0
    assert arm_r["compile_s"] == 0          # built before: no compile at arm
    assert arm_r["deadline_monotonic_ns"] > arm_r["armed_monotonic_ns"]
    assert arm_r["ringbuf_pages"] == 2048 and arm_r["run_ids"] == 1
    assert arm_r["agent_instance"] == agent.get("/health").json()["agent_instance"]
    x = xdp_on()
    assert x and x["prog"]["id"] == link["prog_id"]
    assert agent.get("/health").json()["session"]["session"] == sid
    assert agent.get("/sessions/" + sid).json()["state"] == "armed"

    send(n)
    r = agent.post("/sessions/%s/capture/stop" % sid)
    assert r.status_code == 200, r.text
    cap = r.json()[IF_DUT]
    assert cap["captured"] == n and cap["received_by_filter"] == n
    assert cap["dropped_by_kernel"] == 0
    assert agent.post("/sessions/%s/capture/stop" % sid).json()[IF_DUT] == cap
    assert agent.get("/sessions/" + sid).json()["state"] == "capture_stopped"
    # The capture is checked where it was written: the controller need not download it.
    chk = agent.post("/sessions/%s/capture/check" % sid,
                     {"interface": IF_DUT, "run_id": 4242, "scheduled": n, "threads": 1})
    assert chk.status_code == 200, chk.text
    chk = chk.json()
    assert (chk["matched"], chk["unique"], chk["missing"], chk["duplicated"]) == (n, n, 0, 0), chk
    assert chk["pcap_sha256"] == cap["pcap_sha256"]
    for body, status in (({"interface": "eth9", "run_id": 4242, "scheduled": n, "threads": 1}, 404),
                         ({"interface": IF_DUT, "run_id": 0, "scheduled": n, "threads": 1}, 400),
                         ({"interface": IF_DUT, "run_id": 4242, "scheduled": n, "threads": 1,
                           "failed_seqs": list(range(1001))}, 400)):
        r = agent.post("/sessions/%s/capture/check" % sid, body)
        assert r.status_code == status, (body, r.text)

    r = agent.post("/sessions/%s/disarm" % sid)
    assert r.status_code == 200, r.text
    res = r.json()
    assert xdp_on() is None
    assert res["session"] == sid and res["watchdog"] is False and res["run_id"] == 4242
    assert res["agent_instance"] == arm_r["agent_instance"]
    i = res["interfaces"][IF_DUT]
    assert i["nic"]["rx_packets"] == n and "rx_missed_errors" in i["nic"]
    assert nic_rx_packets() - rx0 == n
    xdp = i["xdp"]
    assert xdp["seen"] == n and xdp["ipv4_udp"] == n
    assert xdp["matched"] == n and xdp["features"] == n
    assert xdp["ringbuf_full"] == 0 and xdp["parse_errors"] == 0 and xdp["unaccounted"] == 0
    assert xdp["foreign_arp"] == xdp["foreign_port"] == xdp["foreign_other"] == 0
    assert xdp["run_cnt"] == n and xdp["run_time_ns"] > 0 and xdp["ns_per_pkt"] > 0
    assert i["matched_by_run"] == {"4242": n}
    f = i["features"]
    assert f["received"] == n and f["for_run"] == n and f["other_run"] == 0
    assert f["unique_seqs"] == n and f["duplicates"] == 0 and f["drained"] is True
    assert f["by_run"] == {"4242": {"received": n, "unique_seqs": n, "duplicates": 0}}
    lat = f["latency_ns"]
    assert lat["count"] == n and sum(b[2] for b in lat["histogram"]["buckets"]) == n
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    # Gaps are taken in arrival order, whatever order two CPUs' batches were read in; a
    # record read after GAP_WINDOW later arrivals is late, not a gap.
    assert f["gap_ns"]["count"] + f["gap_ns"]["late"] == n - 1
    assert res["window"]["armed_monotonic_ns"] <= f["first_arrival_ns"] <= f["last_arrival_ns"] \
        <= res["window"]["disarmed_monotonic_ns"]
    assert i["tcpdump"]["captured"] == n
    assert res["udp_sink"]["received_by_socket_or_dropped"] == n
    assert res["softirq"]["window"] == "first to last matched arrival"
    assert res["softirq"]["samples"] >= 2 and res["softirq"]["cpu_pct"] is not None
    # The fixed cost of a trial once the program is built (a figure: benchmarks/ measure it).
    sys.stderr.write("arm %.3f s, capture stop %.3f s, disarm %.3f s\n"
                     % (res["arm_s"], res["stop_s"], res["disarm_s"]))

    assert agent.post("/sessions/%s/disarm" % sid).json() == res
    s = agent.get("/sessions/" + sid).json()
    assert s["state"] == "disarmed" and s["result_ready"] is True

    r = agent.get("/sessions/%s/capture.pcap" % sid)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/vnd.tcpdump.pcap"
    assert r.headers["X-Xdplab-Sha256"] == cap["pcap_sha256"]
    assert len(r.content) == cap["pcap_bytes"] > 24
    assert hashlib.sha256(r.content).hexdigest() == cap["pcap_sha256"]
    r = agent.get("/sessions/%s/capture.pcap?interface=%s" % (sid, IF_DUT1))
    assert r.status_code == 404 and r.json()["error"].startswith("interface:")


def test_foreign_traffic_is_accounted(agent, built):
    """seen = matched + foreign_arp + foreign_port + foreign_other + parse_errors,
    and tcpdump captures only what XDP matched."""
    sid = arm(agent, run_id=100, run_ids=2, expected_packets=50)["session"]
    send(50, run_id=100)                           # matched
    send(7, run_id=102)                            # foreign_port: run id outside 100..101
    send(9, kind="plain")                          # foreign_port: no payload header
    send(5, kind="plain", size=4)                  # foreign_port: too short for the header
    send(11, run_id=100, port=TEST_PORT + 1)       # foreign_other: another port
    send_raw(6, 0x0806)                            # foreign_arp
    send_raw(4, 0x88b5)                            # foreign_other: another ethertype
    cap = agent.post("/sessions/%s/capture/stop" % sid).json()[IF_DUT]
    res = agent.post("/sessions/%s/disarm" % sid).json()
    i = res["interfaces"][IF_DUT]
    xdp = i["xdp"]
    assert xdp["matched"] == 50
    assert xdp["foreign_port"] == 7 + 9 + 5
    assert xdp["foreign_arp"] == 6
    assert xdp["foreign_other"] == 11 + 4
    assert xdp["parse_errors"] == 0
    assert xdp["seen"] == 50 + 21 + 6 + 15 == i["nic"]["rx_packets"]
    assert xdp["unaccounted"] == 0
    assert xdp["ipv4_udp"] == 50 + 21 + 11
    assert i["matched_by_run"] == {"100": 50, "101": 0}
    assert cap["captured"] == 50 and i["features"]["received"] == 50


def test_several_run_ids(agent):
    sid = arm(agent, run_id=7, run_ids=3, expected_packets=100)["session"]
    send(100, run_id=7)
    send(30, run_id=8)
    send(20, run_id=9)
    send(20, run_id=7)    # seqs 0..19 again: duplicates
    send(40, run_id=10)   # outside the range
    time.sleep(0.05)
    cap = agent.post("/sessions/%s/capture/stop" % sid).json()[IF_DUT]
    res = agent.post("/sessions/%s/disarm" % sid).json()
    i = res["interfaces"][IF_DUT]
    assert i["xdp"]["matched"] == 170 and i["xdp"]["foreign_port"] == 40
    assert i["matched_by_run"] == {"7": 120, "8": 30, "9": 20}
    f = i["features"]
    assert f["received"] == 170 and f["for_run"] == 170 and f["other_run"] == 0
    assert f["unique_seqs"] == 150 and f["duplicates"] == 20
    assert f["by_run"] == {"7": {"received": 120, "unique_seqs": 100, "duplicates": 20},
                           "8": {"received": 30, "unique_seqs": 30, "duplicates": 0},
                           "9": {"received": 20, "unique_seqs": 20, "duplicates": 0}}
    assert cap["captured"] == 170


def test_two_interfaces(agent, built):
    a = arm(agent, interfaces=[IF_DUT, IF_DUT1], run_ids=2)
    sid = a["session"]
    assert a["compile_s"] == 0       # /build loaded an instance per interface
    assert set(a["interfaces"]) == {IF_DUT, IF_DUT1}
    l0, l1 = a["interfaces"][IF_DUT], a["interfaces"][IF_DUT1]
    assert l0["prog_id"] != l1["prog_id"] and l0["link_id"] != l1["link_id"]
    assert l0["prog_tag"] == l1["prog_tag"]
    assert xdp_on(IF_DUT)["prog"]["id"] == l0["prog_id"]
    assert xdp_on(IF_DUT1)["prog"]["id"] == l1["prog_id"]
    send(300, run_id=4242)
    send(200, run_id=4243, dst=DUT_ADDR1)
    r = agent.post("/sessions/%s/capture/stop" % sid).json()
    assert r[IF_DUT]["captured"] == 300 and r[IF_DUT1]["captured"] == 200
    res = agent.post("/sessions/%s/disarm" % sid).json()
    assert xdp_on_dut() is None
    i0, i1 = res["interfaces"][IF_DUT], res["interfaces"][IF_DUT1]
    assert i0["xdp"]["matched"] == i0["nic"]["rx_packets"] == 300
    assert i1["xdp"]["matched"] == i1["nic"]["rx_packets"] == 200
    assert i0["matched_by_run"] == {"4242": 300, "4243": 0}
    assert i1["matched_by_run"] == {"4242": 0, "4243": 200}
    assert i0["features"]["unique_seqs"] == 300 and i1["features"]["unique_seqs"] == 200
    r = agent.get("/sessions/%s/capture.pcap" % sid)
    assert r.status_code == 400 and r.json()["error"].startswith("interface:")
    p1 = agent.get("/sessions/%s/capture.pcap?interface=%s" % (sid, IF_DUT1))
    assert p1.status_code == 200
    assert hashlib.sha256(p1.content).hexdigest() == i1["tcpdump"]["pcap_sha256"]


def test_collector_counters_and_off(agent):
    a = arm(agent, collector="counters")
    assert a["collector"] == "counters" and a["ringbuf_pages"] is None
    send(200)
    cap = agent.post("/sessions/%s/capture/stop" % a["session"]).json()[IF_DUT]
    res = agent.post("/sessions/%s/disarm" % a["session"]).json()
    i = res["interfaces"][IF_DUT]
    assert i["xdp"]["matched"] == 200 and i["xdp"]["features"] == 0
    assert i["xdp"]["ringbuf_full"] == 0 and i["matched_by_run"] == {"4242": 200}
    assert i["features"]["received"] == 0 and i["features"]["latency_ns"] is None
    assert cap["captured"] == 200

    a = arm(agent, collector="off")
    assert a["interfaces"][IF_DUT]["prog_id"] is None
    assert xdp_on() is None
    send(150)
    cap = agent.post("/sessions/%s/capture/stop" % a["session"]).json()[IF_DUT]
    res = agent.post("/sessions/%s/disarm" % a["session"]).json()
    i = res["interfaces"][IF_DUT]
    assert i["nic"]["rx_packets"] == 150 and cap["captured"] == 150
    assert all(v is None for v in i["xdp"].values()) and i["matched_by_run"] is None
    assert i["features"]["received"] is None


def test_metrics(agent):
    r = agent.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert "xdplab_session_armed 0" in r.text
    sid = arm(agent)["session"]
    send(40)
    text = agent.get("/metrics").text
    lab = '{interface="%s"}' % IF_DUT
    assert "xdplab_xdp_matched_total%s 40" % lab in text
    assert "xdplab_xdp_seen_total%s 40" % lab in text
    assert "xdplab_nic_rx_packets_total%s 40" % lab in text
    assert "# TYPE xdplab_xdp_matched_total counter" in text
    # As Prometheus scrapes it: the token as a bearer (its `authorization:` setting).
    scrape = lambda token: requests.get(   # noqa: E731
        agent.url + "/metrics", headers={"Authorization": "Bearer " + token}, timeout=10)
    assert scrape("wrong").status_code == 401
    r = scrape(TOKEN)
    assert r.status_code == 200, r.text
    from prometheus_client.parser import text_string_to_metric_families
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert all(f.type in ("counter", "gauge") for f in fams.values())
    assert [s.labels for s in fams["xdplab_session_info"].samples] == [
        {"session": sid, "trial": arm_body()["trial"], "state": "armed"}]
    assert [(s.labels, s.value) for s in fams["xdplab_xdp_matched"].samples] == [
        ({"interface": IF_DUT}, 40)]
    assert not any("instance" in s.labels for f in fams.values() for s in f.samples)
    agent.post("/sessions/%s/disarm" % sid)


# --- faults -------------------------------------------------------------------------------

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
    """The agent is SIGKILLed mid-trial on two interfaces.  Nothing of it may
    stay behind but its pcaps, which the next agent removes; the next agent is
    recognisably another one, does not know the old session, and arms fine."""
    h0 = agent.get("/health").json()
    arm_r = arm(agent, interfaces=[IF_DUT, IF_DUT1])
    sid = arm_r["session"]
    assert xdp_on(IF_DUT) and xdp_on(IF_DUT1)
    assert len(_tcpdumps_for(sid)) == 2
    pcaps = sorted(agent.state_dir.glob(sid + ".*pcap"))
    assert len(pcaps) == 2
    rx0 = nic_rx_packets()
    flood = subprocess.Popen(["ip", "netns", "exec", NS_SRC, SYS_PY, "-c", SENDER, "500000",
                              "4242", str(TEST_PORT), "100", DUT_ADDR, "xdplab"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: nic_rx_packets() > rx0 + 500, 20), "no traffic arrived"
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(5)
        t0 = time.monotonic()
        assert wait_for(lambda: not xdp_on_dut(), 1.0, step=0.02), \
            "XDP still attached 1 s after SIGKILL"
        sys.stderr.write("detached %.3f s after SIGKILL\n" % (time.monotonic() - t0))
        assert flood.poll() is None, "traffic had stopped before the check"
        assert wait_for(lambda: not _tcpdumps_for(sid), 2.0), "tcpdump outlived the agent"
        assert all(p.is_file() for p in pcaps)   # what the killed agent could not clean up
    finally:
        flood.kill()
        flood.wait()
        time.sleep(0.2)   # frames still in the veth reach the DUT before the next test
    agent.restart()
    h1 = agent.get("/health").json()
    assert h1["session"] is None
    assert h1["agent_instance"] != h0["agent_instance"]
    assert h1["pid"] != h0["pid"] and h1["started_monotonic_ns"] > h0["started_monotonic_ns"]
    assert {p.name for p in pcaps} <= {f["file"] for f in h1["stale_files_removed"]}
    assert not any(p.exists() for p in pcaps)
    assert "removed stale capture %s" % pcaps[0] in agent.log()
    r = agent.get("/sessions/" + sid)
    assert r.status_code == 404 and sid in r.json()["error"]
    r = agent.post("/sessions", arm_body())
    assert r.status_code == 201, r.text
    assert r.json()["agent_instance"] == h1["agent_instance"]
    r = agent.post("/sessions/%s/disarm" % r.json()["session"])
    assert r.status_code == 200, r.text
    assert not xdp_on_dut()


def test_second_agent_on_the_same_state_dir_is_refused(agent):
    """Also: the package runs unzipped as python3 -m xdplab.agent."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    r = subprocess.run(agent_argv(agent.token_file, agent.state_dir, port=AGENT_PORT + 1,
                                  pyz=None), capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1, r.stderr
    assert "in use by another agent (pid %d)" % agent.proc.pid in r.stderr
    assert agent.get("/health").status_code == 200


def test_help_needs_no_bcc(pyz):
    r = subprocess.run([SYS_PY, "-S", str(pyz), "--help"], capture_output=True, text=True,
                       timeout=30)   # -S: no site-packages, so no bcc
    assert r.returncode == 0, r.stderr
    for flag in ("--listen", "--token-file", "--interface", "--state-dir"):
        assert flag in r.stdout


def test_sigterm_disarms_and_exits_0(agent):
    sid = arm(agent, interfaces=[IF_DUT, IF_DUT1])["session"]
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(15) == 0
    assert xdp_on_dut() is None
    assert not _tcpdumps_for(sid)
    assert "session %s disarmed" % sid in agent.log()
    assert not list(agent.state_dir.glob("*.pcap"))   # nobody could fetch them any more
    agent.restart()


def test_watchdog_disarms_at_deadline(agent):
    sid = arm(agent, deadline_s=1.5)["session"]
    send(10)
    assert wait_for(lambda: agent.get("/sessions/" + sid).json()["state"] == "disarmed", 6)
    assert xdp_on_dut() is None
    assert agent.get("/health").json()["session"] is None
    s = agent.get("/sessions/" + sid).json()
    assert s["watchdog"] is True and s["result_ready"] is True
    r = agent.post("/sessions/%s/capture/stop" % sid)
    assert r.status_code == 200, r.text
    cap = r.json()[IF_DUT]
    assert cap["captured"] == 10 and cap["dropped_by_kernel"] == 0
    r = agent.post("/sessions/%s/disarm" % sid)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["watchdog"] is True
    i = res["interfaces"][IF_DUT]
    assert i["xdp"]["matched"] == 10 and i["features"]["unique_seqs"] == 10
    assert i["tcpdump"]["captured"] == 10
    r = agent.get("/sessions/%s/capture.pcap" % sid)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == cap["pcap_sha256"]


def test_stalled_consumer_counts_drops(agent, built):
    """The ring-buffer consumer stops (the whole agent is SIGSTOPped) while
    packets arrive.  A 4-page ring overflows; every drop is counted."""
    n = 3000
    arm_r = arm(agent, ringbuf_pages=4, expected_tag=built["prog_tag"], expected_packets=n)
    sid = arm_r["session"]
    assert arm_r["ringbuf_pages"] == arm_r["ringbuf_pages_requested"] == 4
    assert arm_r["ringbuf_bytes"] == 4 * os.sysconf("SC_PAGE_SIZE")
    assert arm_r["prog_tag"] == built["prog_tag"]   # the ring size is not in the program's tag
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        send(n)
        time.sleep(0.2)
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    cap = agent.post("/sessions/%s/capture/stop" % sid).json()[IF_DUT]
    res = agent.post("/sessions/%s/disarm" % sid).json()
    i = res["interfaces"][IF_DUT]
    xdp, f = i["xdp"], i["features"]
    assert xdp["matched"] == n and xdp["ringbuf_full"] > 0
    assert xdp["matched"] == f["received"] + xdp["ringbuf_full"]
    assert xdp["features"] == f["received"] == f["unique_seqs"]
    assert f["drained"] is True
    assert cap["captured"] == n and cap["dropped_by_kernel"] == 0   # tcpdump still saw all
    sys.stderr.write("stalled consumer: %d matched, %d records, %d ring-buffer drops\n"
                     % (xdp["matched"], f["received"], xdp["ringbuf_full"]))


def test_reset_disarms(agent):
    sid = arm(agent)["session"]
    r = agent.post("/reset")
    assert r.status_code == 200 and r.json() == {"disarmed": [sid]}
    assert xdp_on_dut() is None
    assert agent.post("/reset").json() == {"disarmed": []}
    assert agent.get("/sessions/" + sid).json()["state"] == "disarmed"


# --- time series and environment ---------------------------------------------------------

TS_COLUMNS = ["t_ns", "nic_rx_packets", "xdp_seen", "xdp_matched_measured",
              "features_measured", "ringbuf_drops", "softirq_pct"]


def check_series(ts, interval_s=0.1):
    """Rows in time order, every count cumulative (never falling); returns the rows."""
    assert ts["columns"] == TS_COLUMNS and ts["interval_s"] == interval_s
    rows = ts["rows"]
    assert len(rows) >= 3 and all(len(r) == len(TS_COLUMNS) for r in rows)
    for prev, row in zip(rows, rows[1:]):
        assert row[0] > prev[0]
        for c in range(1, 6):
            assert (prev[c] is None) == (row[c] is None)
            assert prev[c] is None or row[c] >= prev[c], (TS_COLUMNS[c], prev, row)
        assert row[6] is None or 0 <= row[6] <= 100
    assert rows[0][6] is None
    gaps = sorted(b[0] - a[0] for a, b in zip(rows[:-1], rows[1:-1]))   # the last is at disarm
    if gaps:
        assert 0.08e9 <= gaps[len(gaps) // 2] <= 0.15e9, gaps
    return rows


def test_timeseries_follows_the_trial(agent, built):
    n = 600
    a = arm(agent, expected_packets=n, expected_tag=built["prog_tag"])
    sid = a["session"]
    assert a["measured_run_ids"] == 1 and a["keep_features"] is False
    for _ in range(3):                 # three bursts 0.25 s apart: the series sees them grow
        send(n // 3)
        time.sleep(0.25)
    agent.post("/sessions/%s/capture/stop" % sid)
    res = agent.post("/sessions/%s/disarm" % sid).json()
    i = res["interfaces"][IF_DUT]
    rows = check_series(i["timeseries"])
    last = rows[-1]
    assert last[1] == i["nic"]["rx_packets"] == n
    assert last[2] == i["xdp"]["seen"] and last[3] == i["xdp"]["matched"] == n
    assert last[4] == i["features"]["received"] == n and last[5] == i["xdp"]["ringbuf_full"]
    assert rows[0][0] >= res["window"]["armed_monotonic_ns"]
    assert rows[-1][0] <= res["window"]["disarmed_monotonic_ns"]
    # The counts grew in steps: some row in between holds part of the packets.
    assert any(0 < r[3] < n for r in rows), rows
    assert i["measured_window_ns"] == [i["features"]["first_arrival_ns"],
                                       i["features"]["last_arrival_ns"]]
    assert i["measured_window_from"] == "feature records"
    assert i["features"]["features_file"] if "features_file" in i["features"] else True


def test_timeseries_with_counters_and_off(agent):
    for collector in ("counters", "off"):
        sid = arm(agent, collector=collector)["session"]
        time.sleep(0.25)
        send(100)
        time.sleep(0.25)
        res = agent.post("/sessions/%s/disarm" % sid).json()
        i = res["interfaces"][IF_DUT]
        rows = check_series(i["timeseries"])
        assert rows[-1][1] == 100 and rows[-1][4] is None
        if collector == "counters":
            assert rows[-1][3] == i["xdp"]["matched"] == 100 and rows[-1][5] == 0
            column = "xdp_matched_measured"
        else:
            assert rows[-1][2] is None and rows[-1][3] is None and rows[-1][5] is None
            column = "nic_rx_packets"
        first, last = i["measured_window_ns"]
        assert rows[0][0] < first <= last <= rows[-1][0]
        assert column in i["measured_window_from"]


def _features_take_warmup():
    import inspect
    from xdplab.agent import features
    return "measured_run_ids" in inspect.signature(features.Features).parameters


@pytest.mark.skipif(not _features_take_warmup(),
                    reason="Features(measured_run_ids=) not there yet (consumer's branch)")
def test_timeseries_counts_measured_run_ids_only(agent, built):
    sid = arm(agent, run_id=500, run_ids=2, measured_run_ids=1, expected_packets=300)["session"]
    send(200, run_id=501)              # warm-up
    send(300, run_id=500)              # measured
    res = agent.post("/sessions/%s/disarm" % sid).json()
    assert res["measured_run_ids"] == 1
    i = res["interfaces"][IF_DUT]
    last = check_series(i["timeseries"])[-1]
    assert i["matched_by_run"] == {"500": 300, "501": 200}
    assert last[1] == 500 and last[2] == 500 and last[3] == 300 and last[4] == 300


def test_arm_refuses_bad_warmup_and_keep_features(agent):
    for field, value in (("measured_run_ids", 0), ("measured_run_ids", 2),
                         ("measured_run_ids", "1"), ("keep_features", "yes"),
                         ("keep_features", 1)):
        r = agent.post("/sessions", arm_body(**{field: value}))
        assert r.status_code == 400 and r.json()["error"].startswith(field + ":"), r.text
    assert xdp_on_dut() is None


def test_environment(agent, built):
    # The latest program built or armed (another test may have restarted the agent).
    assert agent.post("/build", {"port": TEST_PORT}).json()["prog_tag"] == built["prog_tag"]
    r = agent.get("/environment")
    assert r.status_code == 200, r.text
    e = r.json()
    assert set(e) >= {"kernel", "cpu", "interfaces", "bcc", "llvm", "tcpdump", "libpcap",
                      "python", "collector", "unavailable"}
    assert e["kernel"]["release"] == os.uname().release
    assert e["kernel"]["version"] == os.uname().version
    cfg = e["kernel"]["config"]
    if cfg is None:
        assert "kernel.config" in e["unavailable"]
    else:
        assert cfg.get("CONFIG_BPF") == "y" and cfg.get("CONFIG_BPF_SYSCALL") == "y"
        assert all(k.startswith("CONFIG_") for k in cfg)
    assert e["cpu"]["count"] == os.cpu_count() and e["cpu"]["model"]
    assert set(e["interfaces"]) == {IF_DUT, IF_DUT1}
    i = e["interfaces"][IF_DUT]
    assert i["driver"] == "veth" and i["version"]
    assert i["offloads"]["generic-receive-offload"].split()[0] in ("on", "off")
    for k in ("firmware", "bus"):      # veth reports none: null, with the reason
        assert i[k] is None and "interfaces.%s.%s" % (IF_DUT, k) in e["unavailable"]
    out = sh("tcpdump", "--version").stdout
    assert e["tcpdump"] in out and e["libpcap"] in out
    assert e["bcc"] == built["bcc_version"]
    assert e["llvm"] and e["llvm"][0].isdigit()
    assert e["python"] == sh(SYS_PY, "-c", "import platform; "
                                           "print(platform.python_version())").stdout.strip()
    c = e["collector"]
    assert c["source_sha256"] == built["source_sha256"] == \
        hashlib.sha256((BPF_DIR / "collector.bpf.c").read_bytes()).hexdigest()
    assert c["prog_tag"] == built["prog_tag"]
    sys.stderr.write("environment: %s\n" % json.dumps(
        {k: e[k] for k in ("bcc", "llvm", "tcpdump", "libpcap", "python")}))


def _vm_kib(pid, key):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def test_agent_peak_rss_stays_under_200_mib(agent):
    """BCC compiles in a child process: LLVM's peak (~140 MiB a compile) never lands in
    the long-lived agent, whose VmHWM stays under 200 MiB over builds and trials."""
    pid = agent.proc.pid
    steps = [("start", _vm_kib(pid, "VmHWM"), _vm_kib(pid, "VmRSS"))]
    builds = []
    for port, coll in ((TEST_PORT, "features"), (TEST_PORT, "counters"),
                       (TEST_PORT + 7, "features")):
        builds.append(agent.post("/build", {"port": port, "collector": coll}).json())
        steps.append(("build %s %d" % (coll, port), _vm_kib(pid, "VmHWM"), _vm_kib(pid, "VmRSS")))
    sys.stderr.write("VmHWM/VmRSS KiB: %s\n" % steps)
    sid = arm(agent, interfaces=[IF_DUT, IF_DUT1], port=TEST_PORT + 7, expected_packets=2000)["session"]
    send(2000, port=TEST_PORT + 7)
    res = agent.post("/sessions/%s/disarm" % sid).json()
    assert res["interfaces"][IF_DUT]["xdp"]["matched"] == 2000
    hwm, rss = _vm_kib(pid, "VmHWM"), _vm_kib(pid, "VmRSS")
    child = max(b["compile_vm_hwm_bytes"] or 0 for b in builds)
    sys.stderr.write("agent VmHWM %.0f MiB, VmRSS %.0f MiB (RssAnon %.0f, RssFile %.0f, RssShmem "
                     "%.0f); compile child VmHWM %.0f MiB\n"
                     % (hwm / 1024, rss / 1024, _vm_kib(pid, "RssAnon") / 1024,
                        _vm_kib(pid, "RssFile") / 1024, _vm_kib(pid, "RssShmem") / 1024,
                        child / 2 ** 20))
    assert hwm < 200 * 1024, hwm
