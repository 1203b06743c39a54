"""Several embedded testbeds on one machine (issue 22): instance 0 is the testbed `make run`
uses, unchanged; instance k >= 1 has its own namespaces, management veths, network, MACs
and state directory, so that the pool's tests can run two side by side.

The test_layout_* tests are pure (`-k layout` runs only them).  The test_two_* tests need
root and bring instances 0 and 1 up together: run them only under
`flock /tmp/xdplab-testbed.lock`.  Each instance answers on its own addresses with its
own key and token and nothing of the other's, and taking one down, either one, leaves
the other whole.  They run in file order and share the two testbeds.
"""

import ipaddress
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, skip_unless_root

from xdplab.agent import TOKEN_HEADER
from xdplab.testbed import MAX_IFNAME, MAX_INSTANCE, EmbeddedTestbed, embedded_layout, instance_names

# Instance 0's layout as it was before instances existed, byte for byte
# (json.dumps(embedded_layout().record(), sort_keys=True) at commit 0b85fb0).
INSTANCE_0_RECORD = (
    '{"dut_ifaces": [{"address": "10.201.0.2", "mac": "02:58:4c:00:00:02", "name": "xl-dut0"}], '
    '"dut_mgmt_addr": "10.201.2.2", "dut_mgmt_root_addr": "10.201.2.1", "dut_mgmt_root_iface": "xl-mdut", '
    '"dut_netns": "xdplab-dut", "name": "xdplab", "net": "10.201.0.0/16", "prefixlen": 30, '
    '"sources": [{"address": "10.201.0.1", "dut_iface": "xl-dut0", "iface": "xl-src0", "label": "src", '
    '"mac": "02:58:4c:00:00:01", "mgmt_addr": "10.201.1.2", "mgmt_root_addr": "10.201.1.1", '
    '"mgmt_root_iface": "xl-msrc", "netns": "xdplab-src", "state_subdir": ""}]}')

# Networks the tests' other namespaces use: test_agent, test_generator_net and
# bench_generator, labnet.
OTHER_TEST_NETS = [ipaddress.ip_network(n) for n in ("10.202.0.0/16", "10.203.0.0/16", "10.204.0.0/16")]


# --- the layouts (pure) ---------------------------------------------------------------------

def test_layout_instance_0_is_todays_testbed_byte_for_byte():
    assert json.dumps(embedded_layout().record(), sort_keys=True) == INSTANCE_0_RECORD
    assert json.dumps(embedded_layout(instance=0).record(), sort_keys=True) == INSTANCE_0_RECORD
    tb = EmbeddedTestbed()
    assert (tb.instance, str(tb.state_dir), tb.agent_url, tb.src_ns, tb.dut_ns) == (
        0, "/run/xdplab", "http://10.201.2.2:7717", "xdplab-src", "xdplab-dut")
    assert EmbeddedTestbed(instance=0).layout == tb.layout


def test_layout_instance_1_names_and_addresses():
    lay = embedded_layout(instance=1)
    src, dut = lay.sources[0], lay.dut_ifaces[0]
    assert (lay.name, src.netns, lay.dut_netns, str(lay.net)) == ("xdplab1", "xdplab1-src", "xdplab1-dut",
                                                                 "10.211.0.0/16")
    assert (src.mgmt_root_iface, lay.dut_mgmt_root_iface) == ("xl-msrc1", "xl-mdut1")
    assert (src.iface, src.address, src.mac) == ("xl-src0", "10.211.0.1", "02:58:4c:01:00:01")
    assert (dut.name, dut.address, dut.mac) == ("xl-dut0", "10.211.0.2", "02:58:4c:01:00:02")
    assert (src.mgmt_root_addr, src.mgmt_addr, lay.dut_mgmt_root_addr, lay.dut_mgmt_addr) == (
        "10.211.1.1", "10.211.1.2", "10.211.2.1", "10.211.2.2")
    tb = EmbeddedTestbed(instance=1)
    assert (str(tb.state_dir), tb.agent_url) == ("/run/xdplab1", "http://10.211.2.2:7717")


def test_layout_every_instance_is_distinct_and_clear_of_the_tests_networks():
    layouts = [embedded_layout(instance=k) for k in range(MAX_INSTANCE + 1)]
    names = [instance_names(k) for k in range(MAX_INSTANCE + 1)]
    namespaces = [ns for lay in layouts for ns in lay.namespaces]
    roots = [i for lay in layouts for i in lay.mgmt_root_ifaces]
    macs = [m for lay in layouts for m in (lay.sources[0].mac, lay.dut_ifaces[0].mac)]
    for things in (namespaces, roots, macs, [n.state_dir for n in names], [lay.name for lay in layouts]):
        assert len(set(things)) == len(things), things
    assert all(len(i) <= MAX_IFNAME for i in roots), roots
    nets = [lay.net for lay in layouts]
    for a, net in enumerate(nets):
        assert not any(net.overlaps(other) for other in nets[a + 1:] + OTHER_TEST_NETS), net
        assert ipaddress.ip_network("10.0.0.0/8").supernet_of(net)
    # The conftest leak check finds every one of them by its prefixes.
    from conftest import OUR_LINK_PREFIXES, OUR_NETNS_PREFIXES

    assert all(ns.startswith(OUR_NETNS_PREFIXES) for ns in namespaces)
    assert all(i.startswith(OUR_LINK_PREFIXES) for i in roots)


@pytest.mark.parametrize("bad", [-1, MAX_INSTANCE + 1, "1", 1.0, True])
def test_layout_instance_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="instance"):
        embedded_layout(instance=bad)
    with pytest.raises(ValueError, match="instance"):
        EmbeddedTestbed(instance=bad)


def test_each_instance_runs_its_generators_under_a_name_of_its_own():
    """Instances share one process table: a check of instance 0 stops leftovers named
    /tmp/xdplab-generator-<run>.pyz, never instance 1's /tmp/xdplab1-generator-<run>.pyz."""
    import re

    from xdplab import source
    from xdplab.steps.connectivity import describe_embedded

    def described(name):
        return describe_embedded({"name": name, "test_link": {"src_iface": "xl-src0", "src_addr": "10.211.0.1",
                                                             "dut_iface": "xl-dut0"},
                                  "source": {"host": "10.211.1.1"}, "dut": {"agent_url": "u", "token_file": "t"}},
                                 "python3")["sources"][0]
    zero, one = described("xdplab"), described("xdplab1")
    assert "generator_prefix" not in zero and source.remote_generator_path(7, zero) == "/tmp/xdplab-generator-7.pyz"
    assert source.remote_generator_path(7, one) == "/tmp/xdplab1-generator-7.pyz"
    # sourcehost/preflight.py's pattern for instance 0's leftovers
    mine = re.compile(r"(^|\s)" + re.escape(source.remote_prefix(zero)) + r"\d+\.pyz?(\s|$|\.trafgen-)")
    assert mine.search("python3 /tmp/xdplab-generator-7.pyz send")
    assert not mine.search("python3 /tmp/xdplab1-generator-7.pyz send")


def test_layout_cli_refuses_an_instance_out_of_range(capsys):
    from xdplab.testbed.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["status", "--instance", str(MAX_INSTANCE + 1)])
    assert e.value.code == 2 and "--instance" in capsys.readouterr().err


# --- two instances up at once (root) ------------------------------------------------------------

def cli(action, instance, timeout=180):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(REPO / "workflow")}
    return subprocess.Popen([sys.executable, "-m", "xdplab.testbed", action, "--instance", str(instance)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def beds():
    """{0: (testbed, description), 1: (...)}: both brought up at the same time by two
    `python -m xdplab.testbed up` processes; both taken down at the end."""
    skip_unless_root()
    tbs = {k: EmbeddedTestbed(repo_root=REPO, instance=k) for k in (0, 1)}
    try:
        procs = {k: cli("up", k) for k in tbs}
        descs = {k: finish(p) for k, p in procs.items()}
        yield {k: (tbs[k], descs[k]) for k in tbs}
    finally:
        for tb in tbs.values():
            tb.down()


def agent(desc, token_file=None):
    """(status, body) of GET /health on this testbed's agent with this token file's token
    (its own by default)."""
    token = Path(token_file or desc["dut"]["token_file"]).read_text().strip()
    req = urllib.request.Request(desc["dut"]["agent_url"] + "/health", headers={TOKEN_HEADER: token})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def ssh_run(source, command, key_file=None):
    """Run command on a testbed's source host over SSH (xdplab.source.connect, as the
    controller logs in), with its own client key unless another is given."""
    from xdplab import source as source_module

    src = dict(source, key_file=key_file or source["key_file"])
    with source_module.connect(src, timeout_s=5) as c:
        return c.run(command, hide=True, timeout=10, in_stream=False).stdout


def ping(netns, dst):
    return subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "2", "-i", "0.2", "-W", "2", dst],
                          capture_output=True, text=True, timeout=30)


def assert_whole(tb, desc):
    """The testbed answers as the controller uses it: status up, ping over its test link,
    the agent's /health with its token, SSH with its key into its own source namespace."""
    st = tb.status()
    assert st["up"], st
    link = desc["test_link"]
    r = ping(tb.src_ns, link["dut_addr"])
    assert r.returncode == 0, r.stdout + r.stderr
    status, body = agent(desc)
    assert status == 200 and body["ok"] and "xl-dut0" in body["interfaces"], body
    out = ssh_run(desc["source"], "ip -o addr; ip -o link")
    assert f"{link['src_addr']}/30" in out and desc["source"]["host"] + "/30" in out, out
    assert link["src_mac"] in out, out


def test_two_up_at_once_each_with_its_own_names(beds):
    (tb0, d0), (tb1, d1) = beds[0], beds[1]
    assert d0["layout"] == embedded_layout().record()
    assert d1["layout"] == embedded_layout(instance=1).record()
    assert (d0["state_dir"], d1["state_dir"]) == ("/run/xdplab", "/run/xdplab1")
    assert d1["dut"]["agent_url"] == "http://10.211.2.2:7717" and d1["source"]["host"] == "10.211.1.2"
    assert (d1["test_link"]["src_mac"], d1["test_link"]["dut_mac"]) == ("02:58:4c:01:00:01", "02:58:4c:01:00:02")
    # Bringing one up cleared nothing of the other's.
    for d, other in ((d0, tb1), (d1, tb0)):
        assert not any(other.src_ns in c or other.dut_ns in c or str(other.state_dir) + "/" in c
                       for c in d["cleared"]), d["cleared"]
    for tb, d in beds.values():
        assert_whole(tb, d)


def test_two_bring_up_reads_the_instance_from_its_parameters(beds):
    """The workflow's step (steps.connectivity.bring_up) takes the instance from its
    parameters ("instance", default 0) and reuses each running one as it is."""
    from xdplab.steps.connectivity import bring_up

    base = {"testbed": "embedded", "src_iface": "xl-src0", "dut_iface": "xl-dut0", "mtu": 1500,
            "source_python": "python3"}
    for k, params in ((0, base), (1, dict(base, instance=1))):
        tb, d = beds[k]
        desc = bring_up(params, lambda msg, echo=False: None)
        assert desc["embedded"]["state_dir"] == str(tb.state_dir) and desc["embedded"]["created"] == []
        assert desc["dut"]["agent_url"] == d["dut"]["agent_url"]
        assert desc["sources"][0]["host"] == d["source"]["host"]
        assert desc["sources"][0]["key_file"] == d["source"]["key_file"]


def test_two_neither_sees_the_other(beds):
    (tb0, d0), (tb1, d1) = beds[0], beds[1]
    for (tb, d), (_, other) in (((tb0, d0), (tb1, d1)), ((tb1, d1), (tb0, d0))):
        # Its namespaces hold only its own interfaces, and no route leads to the other's.
        for ns in (tb.src_ns, tb.dut_ns):
            names = {lnk["ifname"] for lnk in json.loads(subprocess.run(
                ["ip", "-j", "-n", ns, "link", "show"], capture_output=True, text=True).stdout)}
            assert names == {"lo", "mgmt0", "xl-src0" if ns == tb.src_ns else "xl-dut0"}, (ns, names)
        for dst in (other["test_link"]["dut_addr"], other["source"]["host"],
                    other["dut"]["agent_url"].split("//")[1].split(":")[0]):
            assert ping(tb.src_ns, dst).returncode != 0, (tb.src_ns, dst)
        # Its agent does not take the other's token; its sshd does not take the other's key.
        status, body = agent(d, token_file=other["dut"]["token_file"])
        assert status in (401, 403) or (status == 200 and "interfaces" not in (body or {})), body
        import paramiko

        with pytest.raises(paramiko.AuthenticationException):
            ssh_run(d["source"], "true", key_file=other["source"]["key_file"])


def test_two_status_of_one_names_only_its_own(beds):
    for k, (tb, d) in beds.items():
        st = tb.status()
        assert set(st["namespaces"]) == {tb.src_ns, tb.dut_ns}
        assert set(st["processes"]) == {"sshd", "agent"}
        own = set(embedded_layout(instance=k).mgmt_root_ifaces)
        assert {i for i in st["links"] if "/" not in i} == own


def pids(tb):
    return {part: p["pid"] for part, p in tb.status()["processes"].items()}


def test_two_down_of_instance_1_leaves_instance_0_whole(beds):
    (tb0, d0), (tb1, _) = beds[0], beds[1]
    before = pids(tb0)
    removed = finish(cli("down", 1))["removed"]
    assert not any("xdplab-" in r or "/run/xdplab/" in r or r in ("veth xl-msrc", "veth xl-mdut")
                   for r in removed), removed
    assert "namespace xdplab1-src" in removed and "veth xl-msrc1" in removed, removed
    assert pids(tb0) == before
    assert_whole(tb0, d0)
    assert not tb1.status()["up"] and not tb1.find_leftovers()


def test_two_down_of_instance_0_leaves_instance_1_whole(beds):
    (tb0, _), (tb1, _) = beds[0], beds[1]
    d1 = tb1.up()                  # up again beside instance 0, on its own
    assert d1["created"] and not d1["cleared"], d1["cleared"]
    before = pids(tb1)
    removed = finish(cli("down", 0))["removed"]
    assert not any("xdplab1" in r or r.endswith(("xl-msrc1", "xl-mdut1")) for r in removed), removed
    assert pids(tb1) == before
    assert_whole(tb1, d1)
    assert not tb0.status()["up"] and not tb0.find_leftovers()


def test_two_after_both_downs_nothing_is_left(beds):
    (tb0, _), (tb1, _) = beds[0], beds[1]
    tb1.down()
    for tb in (tb0, tb1):
        assert not tb.find_leftovers()
        assert not [p for p in tb.state_dir.rglob("*")], tb.state_dir
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "xdplab-" not in namespaces and "xdplab1-" not in namespaces, namespaces
    links = {lnk["ifname"] for lnk in json.loads(subprocess.run(
        ["ip", "-j", "link", "show"], capture_output=True, text=True).stdout)}
    assert not links & {"xl-msrc", "xl-mdut", "xl-msrc1", "xl-mdut1"}, links
    procs = subprocess.run(["pgrep", "-af", "/run/xdplab1?/"], capture_output=True, text=True).stdout
    assert not procs.strip(), procs
