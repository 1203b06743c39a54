"""The embedded testbed for real: namespaces, veths, sshd, agent, leftovers.

Needs root; skips otherwise.  Tests run in file order and share one testbed
(module fixture): the first ones look at a fresh testbed, the later ones break
it on purpose and check that up() repairs it and down() removes it.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, skip_unless_root

from xdplab import testbed as testbed_module

MGMT_SRC_IFACE, MGMT_DUT_IFACE = testbed_module.MGMT_SRC_IFACE, testbed_module.MGMT_DUT_IFACE

from labnet import agent, ip_json, netns_names  # noqa: E402

SRC_NS, DUT_NS = "xdplab-src", "xdplab-dut"


def link(name, netns=None):
    links = ip_json("addr", "show", "dev", name, netns=netns)
    return links[0] if links else None


def inet(lnk):
    return {f"{a['local']}/{a['prefixlen']}" for a in lnk.get("addr_info", []) if a["family"] == "inet"}


def neigh_state(netns, iface, addr):
    for n in ip_json("neigh", "show", "dev", iface, netns=netns):
        if n.get("dst") == addr:
            return n.get("state", [])
    return None


def ssh(desc):
    import fabric
    import paramiko

    src = desc["source"]
    c = fabric.Connection(src["host"], user=src["user"], port=src["port"], connect_timeout=5,
                          connect_kwargs={"key_filename": src["key_file"], "look_for_keys": False,
                                          "allow_agent": False})
    # Only the host key the testbed generated is accepted.
    c.client.load_host_keys(src["known_hosts"])
    c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return c


def state_files(tb):
    """Every file and directory left under the state directory, relative names."""
    if not tb.state_dir.exists():
        return set()
    return {str(p.relative_to(tb.state_dir)) for p in tb.state_dir.rglob("*")}


def assert_nothing_of_ours(tb, logs_kept=False):
    """No namespace, veth or process of ours, and nothing under the state
    directory: no key, host key, sshd_config, known_hosts, token, pid file or
    log (only the logs, when up() failed and its message points to them)."""
    assert not netns_names() & {SRC_NS, DUT_NS}
    assert link(MGMT_SRC_IFACE) is None and link(MGMT_DUT_IFACE) is None
    left = state_files(tb)
    assert left <= ({"agent.log", "sshd.log"} if logs_kept else set()), sorted(left)
    procs = subprocess.run(["pgrep", "-af", f"sshd -D -e -f {tb.state_dir}|python3.*{tb.state_dir}"],
                           capture_output=True, text=True).stdout
    assert procs.strip() == "", procs
    assert tb.find_leftovers() == []


@pytest.fixture(scope="module")
def tb(embedded_testbed):
    return embedded_testbed[0]


@pytest.fixture(scope="module")
def desc(embedded_testbed):
    return embedded_testbed[1]


# --- a fresh testbed ---------------------------------------------------------

def test_up_describes_the_testbed(tb, desc):
    assert desc["mode"] == "embedded" and desc["name"] == "xdplab"
    assert desc["source"]["host"] == "10.201.1.2" and desc["source"]["port"] == 22
    assert desc["source"]["user"] == "root" and desc["source"]["python"] == "python3"
    assert desc["dut"]["agent_url"] == "http://10.201.2.2:7717" and desc["dut"]["iface"] == "xl-dut0"
    # The lab keys, for one source and one DUT interface.
    assert desc["sources"] == [{**desc["source"], "iface": "xl-src0", "address": "10.201.0.1",
                                "mac": "02:58:4c:00:00:01", "dut_iface": "xl-dut0"}]
    assert desc["dut"]["ifaces"] == [{"name": "xl-dut0", "address": "10.201.0.2", "mac": "02:58:4c:00:00:02"}]
    tl = desc["test_link"]
    assert (tl["src_iface"], tl["dut_iface"], tl["src_addr"], tl["dut_addr"], tl["mtu"]) == \
        ("xl-src0", "xl-dut0", "10.201.0.1", "10.201.0.2", 1500)
    assert "namespace xdplab-src" in desc["created"] and "namespace xdplab-dut" in desc["created"]
    on_disk = json.loads((tb.state_dir / "testbed.json").read_text())
    assert on_disk == desc
    assert os.stat(desc["dut"]["token_file"]).st_mode & 0o777 == 0o600
    assert os.stat(desc["source"]["key_file"]).st_mode & 0o777 == 0o600


def test_namespaces_and_links(tb, desc):
    assert {SRC_NS, DUT_NS} <= netns_names()
    assert inet(link(MGMT_SRC_IFACE)) == {"10.201.1.1/30"}
    assert inet(link(MGMT_DUT_IFACE)) == {"10.201.2.1/30"}
    assert inet(link("mgmt0", SRC_NS)) == {"10.201.1.2/30"}
    assert inet(link("mgmt0", DUT_NS)) == {"10.201.2.2/30"}
    tl = desc["test_link"]
    for ns, iface, addr, mac in ((SRC_NS, "xl-src0", "10.201.0.1/30", tl["src_mac"]),
                                 (DUT_NS, "xl-dut0", "10.201.0.2/30", tl["dut_mac"])):
        lnk = link(iface, ns)
        assert lnk is not None, f"{iface} missing in {ns}"
        assert inet(lnk) == {addr}
        assert lnk["mtu"] == 1500 and lnk["address"] == mac and "UP" in lnk["flags"]
        assert not [a for a in lnk["addr_info"] if a["family"] == "inet6"], "IPv6 must be off"
        v6 = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n",
                             f"net.ipv6.conf.{iface}.disable_ipv6"], capture_output=True, text=True)
        assert v6.stdout.strip() == "1"
        assert "UP" in link("lo", ns)["flags"]
    # The test link lives only inside the namespaces.
    assert link("xl-src0") is None and link("xl-dut0") is None


def test_static_neighbours_both_ways(desc):
    tl = desc["test_link"]
    assert "PERMANENT" in neigh_state(SRC_NS, "xl-src0", "10.201.0.2")
    assert "PERMANENT" in neigh_state(DUT_NS, "xl-dut0", "10.201.0.1")
    entries = ip_json("neigh", "show", "dev", "xl-src0", netns=SRC_NS)
    assert [e["lladdr"] for e in entries if e["dst"] == "10.201.0.2"] == [tl["dut_mac"]]


def test_sshd_accepts_the_generated_key(desc):
    with ssh(desc) as c:
        r = c.run("ip -o addr", hide=True, timeout=10, in_stream=False)
    out = r.stdout
    assert "xl-src0" in out and "10.201.0.1/30" in out and "10.201.1.2/30" in out, out
    assert "xl-dut0" not in out and "10.201.2.2" not in out and "eth0" not in out, out


def test_ping_over_the_test_link(desc):
    for ns, dst in ((SRC_NS, "10.201.0.2"), (DUT_NS, "10.201.0.1")):
        r = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", dst],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    # Still the static entries: nothing was learnt over ARP.
    assert "PERMANENT" in neigh_state(SRC_NS, "xl-src0", "10.201.0.2")


def test_agent_health(desc):
    status, body = agent(desc, "GET", "/health")
    assert status == 200
    # Without the token: refused (agent/1) or only that it is alive (agent/2).
    status, anon = agent(desc, "GET", "/health", token=False)
    assert status == 401 or (status == 200 and set(anon) == {"ok", "agent"}), anon
    assert body["agent"].startswith("xdplab-agent/") and body["ok"] is True
    assert "xl-dut0" in body["interfaces"]
    assert desc["dut"]["agent"] == body["agent"]


def test_agent_runs_from_the_file_the_description_hashes(tb, desc):
    """agent_script/agent_sha256, which decide reuse, name the file the agent
    process was started from: the pyz when the repository has it or can build it."""
    pid = tb.status()["processes"]["agent"]["pid"]
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    script = Path(desc["dut"]["agent_script"])
    assert cmd[0] == b"/usr/bin/python3" and cmd[1] == bytes(script), cmd
    assert desc["dut"]["agent_sha256"] == hashlib.sha256(script.read_bytes()).hexdigest()
    if script.name == "xdplab-agent.pyz":
        args = [a.decode() for a in cmd[2:] if a]
        assert args == ["--listen", "10.201.2.2:7717", "--token-file", desc["dut"]["token_file"],
                        "--allow-program-upload", "--interface", "xl-dut0",
                        "--state-dir", str(tb.state_dir / "agent")], args


def test_cli_status(tb):
    r = subprocess.run([sys.executable, "-m", "xdplab.testbed", "status"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO / "workflow")}, timeout=60)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    # The CLI's testbed uses the repository's agent; the parts are the same.
    assert st["namespaces"] == {SRC_NS: True, DUT_NS: True}
    assert st["processes"]["sshd"]["running"] and st["processes"]["agent"]["running"]
    assert st["sshd_accepting"] and st["agent_healthy"]


# --- up() again, and repairs ---------------------------------------------------

def test_up_twice_is_idempotent(tb, desc):
    before = tb.status()
    again = tb.up()
    assert again["created"] == [] and again["cleared"] == []
    strip = lambda d: {k: v for k, v in d.items() if k not in ("created", "cleared")}  # noqa: E731
    assert strip(again) == strip(desc)
    after = tb.status()
    assert after["processes"] == before["processes"]
    assert after["up"]


def test_up_after_sshd_was_killed_clears_and_rebuilds(tb):
    old = tb.status()["processes"]["sshd"]["pid"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while tb.status()["processes"]["sshd"]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    desc = tb.up()
    cleared = "\n".join(desc["cleared"])
    assert "found namespace xdplab-src from an earlier run: removed" in desc["cleared"], cleared
    assert "stale pid file" in cleared and "sshd.pid" in cleared, cleared
    st = tb.status()
    assert st["up"] and st["processes"]["sshd"]["pid"] != old
    with ssh(desc) as c:
        assert c.run("true", hide=True, timeout=10, in_stream=False).ok


def test_namespace_deleted_by_hand_under_running_sshd_is_recovered(tb):
    """`ip netns del` leaves sshd running in an unnamed namespace that still
    holds xl-msrc's peer: the pid file finds it, up() rebuilds."""
    old = tb.status()["processes"]["sshd"]["pid"]
    subprocess.run(["ip", "netns", "del", SRC_NS], check=True)
    assert link(MGMT_SRC_IFACE) is not None
    desc = tb.up()
    cleared = "\n".join(desc["cleared"])
    assert f"sshd process {old}" in cleared and "veth xl-msrc" in cleared, cleared
    assert not os.path.exists(f"/proc/{old}") or tb.status()["processes"]["sshd"]["pid"] != old
    assert tb.status()["up"]


def test_down_sigkills_what_ignores_sigterm(tb, monkeypatch):
    monkeypatch.setattr(testbed_module.services, "TERM_WAIT_S", 0.5)
    stubborn = subprocess.Popen(["ip", "netns", "exec", DUT_NS, "/usr/bin/python3", "-c",
                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(600)"],
                                stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    removed = tb.down()
    assert time.monotonic() - t0 < 5
    assert stubborn.wait(timeout=5) == -signal.SIGKILL
    assert f"process {stubborn.pid} (python3) in namespace {DUT_NS}" in removed
    assert_nothing_of_ours(tb)
    tb.up()


def test_down_kills_everything_in_our_namespaces(tb, tmp_path):
    extra = subprocess.Popen(["ip", "netns", "exec", SRC_NS, "sleep", "600"])
    time.sleep(0.2)
    secrets = {"id_ed25519", "ssh_host_ed25519_key", "sshd_config", "known_hosts", "authorized_keys",
               "agent.token"}
    assert secrets <= state_files(tb)
    copied = tb.copy_logs(tmp_path / "logs")
    assert sorted(p.name for p in copied) == ["agent.log", "sshd.log"]
    assert "starting agent" in (tmp_path / "logs" / "agent.log").read_text()
    assert "starting sshd" in (tmp_path / "logs" / "sshd.log").read_text()
    removed = tb.down()
    assert extra.wait(timeout=10) is not None
    text = "\n".join(removed)
    assert f"process {extra.pid} (sleep) in namespace {SRC_NS}" in removed, text
    for item in ("namespace xdplab-src", "namespace xdplab-dut", "veth xl-msrc", "veth xl-mdut"):
        assert item in removed, text
    assert_nothing_of_ours(tb)


def test_cli_down_keeps_the_logs_where_asked_and_removes_the_rest(tb, tmp_path):
    tb.up()
    r = subprocess.run([sys.executable, "-m", "xdplab.testbed", "down", "--keep-logs", str(tmp_path / "logs")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "workflow")},
                       timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert sorted(out["logs_copied"]) == [str(tmp_path / "logs" / n) for n in ("agent.log", "sshd.log")]
    assert "namespace xdplab-dut" in out["removed"]
    assert_nothing_of_ours(tb)


def test_down_twice_is_a_no_op(tb):
    assert tb.down() == []
    assert_nothing_of_ours(tb)


def test_stale_namespace_is_cleared_by_up(tb):
    subprocess.run(["ip", "netns", "add", DUT_NS], check=True)
    try:
        assert tb.find_leftovers() == [f"namespace {DUT_NS}"]
        desc = tb.up()
        assert desc["cleared"] == [f"found namespace {DUT_NS} from an earlier run: removed"]
        assert tb.status()["up"]
    finally:
        tb.down()
    assert_nothing_of_ours(tb)


def test_recorded_pid_reused_by_another_process_is_not_killed(tb):
    dead = subprocess.Popen(["true"])
    dead.wait()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        tb.state_dir.mkdir(parents=True, exist_ok=True)
        (tb.state_dir / "sshd.pid").write_text(f"{dead.pid}\n")
        (tb.state_dir / "agent.pid").write_text(f"{bystander.pid}\n")
        left = tb.find_leftovers()
        assert len(left) == 2 and all(item.startswith("stale pid file") for item in left), left
        removed = tb.down()
        assert bystander.poll() is None, "a pid that is no longer ours must not be killed"
        assert sorted(removed) == sorted(f"pid file {tb.state_dir / n}" for n in ("sshd.pid", "agent.pid"))
        assert_nothing_of_ours(tb)
    finally:
        bystander.kill()
        bystander.wait()


def test_address_conflict_is_refused_and_leaves_nothing(tb):
    """A foreign interface holding an address in 10.201.0.0/16 stops up()."""
    subprocess.run(["ip", "link", "add", "xlt-tbconf0", "type", "veth", "peer", "name", "xlt-tbconf1"],
                   check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.201.77.1/24", "dev", "xlt-tbconf0"], check=True)
        with pytest.raises(testbed_module.TestbedError, match="xlt-tbconf0"):
            tb.up()
        assert_nothing_of_ours(tb)
        assert link("xlt-tbconf0") is not None, "a foreign interface is never touched"
    finally:
        subprocess.run(["ip", "link", "del", "xlt-tbconf0"], capture_output=True)


def test_not_root_is_refused():
    skip_unless_root()
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                        "-m", "xdplab.testbed", "up", "--state-dir", "/tmp/xdplab-not-root"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "workflow")},
                       timeout=60)
    assert r.returncode == 1 and "needs root" in r.stderr, r.stderr


@pytest.mark.parametrize("agent_code, timeout_s, expected", [
    ("import sys; sys.exit('agent: cannot start')", 20, "agent exited with code 1 while starting"),
    ("import time; time.sleep(600)", 1, "agent did not answer GET http://10.201.2.2:7717/health"),
])
def test_agent_that_does_not_come_up_is_reported_and_torn_down(tb, tmp_path, agent_code, timeout_s, expected):
    from xdplab.testbed import EmbeddedTestbed

    fake = tmp_path / "repo"
    (fake / "dist").mkdir(parents=True)
    (fake / "dist" / "xdplab-agent.pyz").write_text(agent_code + "\n")
    broken = EmbeddedTestbed(repo_root=fake, state_dir=tb.state_dir, ready_timeout_s=timeout_s)
    with pytest.raises(testbed_module.TestbedError) as e:
        broken.up()
    assert expected in str(e.value) and str(tb.state_dir / "agent.log") in str(e.value), str(e.value)
    # The log the message points to is kept; every secret is gone.
    assert_nothing_of_ours(tb, logs_kept=True)
    tb.down()
    assert_nothing_of_ours(tb)


def test_agent_pyz_is_built_by_make_and_started_as_documented(tb, tmp_path):
    """No dist/xdplab-agent.pyz but a `make agent` target: up() builds it and
    starts it with the documented command line."""
    from xdplab.testbed import EmbeddedTestbed

    fake = tmp_path / "repo"
    fake.mkdir()
    (fake / "agent_src.py").write_text("import sys; sys.exit('fake agent: ' + ' '.join(sys.argv[1:]))\n")
    (fake / "Makefile").write_text("agent:\n\tmkdir -p dist && cp agent_src.py dist/xdplab-agent.pyz\n")
    broken = EmbeddedTestbed(repo_root=fake, state_dir=tb.state_dir)
    with pytest.raises(testbed_module.TestbedError) as e:
        broken.up()
    assert (fake / "dist" / "xdplab-agent.pyz").is_file()
    sd = tb.state_dir
    assert (f"fake agent: --listen 10.201.2.2:7717 --token-file {sd / 'agent.token'} "
            f"--allow-program-upload --interface xl-dut0 --state-dir {sd / 'agent'}") in str(e.value), \
        str(e.value)
    tb.down()
    assert_nothing_of_ours(tb)
