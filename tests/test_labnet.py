"""The test namespace lab (tests/labnet.py, fixture netns_lab): two source
hosts and a DUT with two test interfaces, reached from the root namespace only
through management addresses, as real machines are.

Needs root; skips otherwise.  The tests share one lab (module fixture); the one
that takes it down to check that nothing is left brings it up again.
"""

import subprocess

import paramiko
import pytest
import yaml

import labnet
from labnet import agent, ip_json, netns_names


def inet(netns, iface):
    links = ip_json("addr", "show", "dev", iface, netns=netns)
    return {f"{a['local']}/{a['prefixlen']}" for a in links[0]["addr_info"] if a["family"] == "inet"} \
        if links else None


def ssh(source, key_file=None, known_hosts=None):
    """Log in as the controller does: the host's management address, one key,
    only the host key in known_hosts."""
    c = paramiko.SSHClient()
    c.load_host_keys(known_hosts or source["known_hosts"])
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(source["host"], port=source["port"], username=source["user"],
              key_filename=key_file or source["key_file"], look_for_keys=False, allow_agent=False,
              timeout=5, banner_timeout=5, auth_timeout=5)
    return c


def run(client, command, timeout=30):
    _, out, err = client.exec_command(command, timeout=timeout)
    rc = out.channel.recv_exit_status()
    return rc, out.read().decode() + err.read().decode()


@pytest.fixture(scope="module")
def desc(netns_lab):
    return netns_lab.desc


# --- layouts and the config, without root -------------------------------------------

def test_embedded_layout_is_the_one_source_one_interface_lab():
    from xdplab import testbed

    lay = testbed.embedded_layout()
    [s] = lay.sources
    assert (s.netns, s.mgmt_root_iface, s.mgmt_root_addr, s.mgmt_addr, s.iface, s.address, s.mac,
            s.dut_iface, s.state_subdir) == ("xdplab-src", "xl-msrc", "10.201.1.1", "10.201.1.2", "xl-src0",
                                             "10.201.0.1", testbed.SRC_MAC, "xl-dut0", "")
    assert (lay.dut_netns, lay.dut_mgmt_root_iface, lay.dut_mgmt_addr) == ("xdplab-dut", "xl-mdut", "10.201.2.2")
    assert [(d.name, d.address, d.mac) for d in lay.dut_ifaces] == [("xl-dut0", "10.201.0.2", testbed.DUT_MAC)]


def test_lab_layout_gives_each_source_its_own_link_and_management_address():
    from xdplab import testbed

    lay = testbed.lab_layout("xlt-lab", 3, dut_iface_of=[2, 0, 1])
    assert [(s.address, s.dut_iface, s.mgmt_addr, s.mgmt_root_iface) for s in lay.sources] == [
        ("10.204.0.1", "xl-dut2", "10.204.1.2", "xlt-lab-m0"),
        ("10.204.0.5", "xl-dut0", "10.204.1.6", "xlt-lab-m1"),
        ("10.204.0.9", "xl-dut1", "10.204.1.10", "xlt-lab-m2")]
    # Each DUT interface holds the other end of its source's /30.
    assert {d.name: d.address for d in lay.dut_ifaces} == {"xl-dut0": "10.204.0.6", "xl-dut1": "10.204.0.10",
                                                           "xl-dut2": "10.204.0.2"}
    assert all(len(i) <= 15 for i in lay.mgmt_root_ifaces)
    with pytest.raises(ValueError, match="joined to exactly one source"):
        testbed.lab_layout("xlt-lab", 2, dut_iface_of=[0, 0])
    with pytest.raises(ValueError, match="bad interface name"):
        testbed.lab_layout("xlt-a-very-long-lab", 2)


def test_lab_config_is_the_contracts_lab_section():
    desc = {"sources": [{"host": "192.0.2.20", "port": 22, "user": "root", "key_file": "/k0",
                         "known_hosts": "/kh0", "python": "python3", "iface": "eth1",
                         "address": "198.51.100.1", "mac": "02:00:00:00:00:01", "dut_iface": "enp5s0",
                         "netns": "x"}],
            "dut": {"agent_url": "http://192.0.2.10:7717", "token_file": "/t",
                    "ifaces": [{"name": "enp5s0", "address": "198.51.100.2", "mac": "02:00:00:00:00:02"}]}}
    assert labnet.lab_config(desc, auto_address=(0,)) == {"testbed": "lab", "lab": {
        "sources": [{"host": "192.0.2.20", "user": "root", "port": 22, "key_file": "/k0",
                     "known_hosts": "/kh0", "iface": "eth1", "address": "auto", "python": "python3",
                     "dut_iface": "enp5s0"}],
        "dut": {"agent": "http://192.0.2.10:7717", "token_file": "/t", "ifaces": ["enp5s0"]}}}


# --- the lab, for real ---------------------------------------------------------------


def test_the_lab_comes_up(netns_lab, desc):
    names = netns_names()
    assert {"xlt-lab-src0", "xlt-lab-src1", "xlt-lab-dut"} <= names
    assert netns_lab.lab.status()["up"]
    assert [(s["host"], s["iface"], s["address"], s["dut_iface"], s["netns"]) for s in desc["sources"]] == [
        ("10.204.1.2", "xl-src0", "10.204.0.1", "xl-dut0", "xlt-lab-src0"),
        ("10.204.1.6", "xl-src1", "10.204.0.5", "xl-dut1", "xlt-lab-src1")]
    assert [(d["name"], d["address"]) for d in desc["dut"]["ifaces"]] == [
        ("xl-dut0", "10.204.0.2"), ("xl-dut1", "10.204.0.6")]
    assert desc["dut"]["agent_url"] == "http://10.204.2.2:7717"
    # Each source and each DUT interface: its own /30, IPv6 off, static neighbours.
    for s, d in zip(desc["sources"], desc["dut"]["ifaces"]):
        assert inet(s["netns"], s["iface"]) == {s["address"] + "/30"}
        assert inet("xlt-lab-dut", d["name"]) == {d["address"] + "/30"}
        for ns, iface, peer, peer_mac in ((s["netns"], s["iface"], d["address"], d["mac"]),
                                          ("xlt-lab-dut", d["name"], s["address"], s["mac"])):
            [n] = [n for n in ip_json("neigh", "show", "dev", iface, netns=ns) if n["dst"] == peer]
            assert n["lladdr"] == peer_mac and "PERMANENT" in n["state"]
            v6 = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n",
                                 f"net.ipv6.conf.{iface}.disable_ipv6"], capture_output=True, text=True)
            assert v6.stdout.strip() == "1"
    # The root namespace holds only the management ends and knows no test address.
    for iface, addr in (("xlt-lab-m0", "10.204.1.1/30"), ("xlt-lab-m1", "10.204.1.5/30"),
                        ("xlt-lab-md", "10.204.2.1/30")):
        assert inet(None, iface) == {addr}
    assert all(inet(None, i) is None for i in ("xl-src0", "xl-src1", "xl-dut0", "xl-dut1"))
    assert not [r for r in ip_json("-4", "route", "show") if r.get("dst", "").startswith("10.204.0.")]


def test_the_config_is_what_a_user_writes_for_real_machines(netns_lab, desc):
    config = yaml.safe_load(netns_lab.config_path.read_text())
    assert config == netns_lab.config
    assert config["testbed"] == "lab"
    src0, src1 = config["lab"]["sources"]
    assert src0["host"] == "10.204.1.2" and src0["address"] == "auto" and src0["iface"] == "xl-src0"
    assert src1["host"] == "10.204.1.6" and src1["address"] == "10.204.0.5" and src1["iface"] == "xl-src1"
    for src, d in zip((src0, src1), desc["sources"]):
        assert src["user"] == "root" and src["port"] == 22 and src["dut_iface"] == d["dut_iface"]
        assert src["key_file"] == d["key_file"] and src["known_hosts"] == d["known_hosts"]
    assert config["lab"]["dut"] == {"agent": "http://10.204.2.2:7717",
                                    "token_file": desc["dut"]["token_file"],
                                    "ifaces": ["xl-dut0", "xl-dut1"]}
    # Nothing in it names a namespace: the workflow cannot take a shortcut.
    assert "xlt-lab" not in netns_lab.config_path.read_text()


def test_each_sshd_accepts_only_its_own_key(desc):
    s0, s1 = desc["sources"]
    assert s0["key_file"] != s1["key_file"] and s0["known_hosts"] != s1["known_hosts"]
    for me, other in ((s0, s1), (s1, s0)):
        with ssh(me) as c:
            rc, out = run(c, "ip -o -4 addr show")
            assert rc == 0 and f"{me['address']}/30" in out and me["iface"] in out, out
            assert other["iface"] not in out and "xl-dut" not in out, out
        with pytest.raises(paramiko.AuthenticationException):
            ssh(me, key_file=other["key_file"]).close()
        # And the other host's known_hosts line does not vouch for this host.
        with pytest.raises(paramiko.SSHException):
            ssh(me, known_hosts=other["known_hosts"]).close()


def test_each_source_pings_its_dut_interface_over_its_test_link(desc):
    ifaces = {d["name"]: d for d in desc["dut"]["ifaces"]}
    for s in desc["sources"]:
        mine = ifaces[s["dut_iface"]]
        other = next(d for name, d in ifaces.items() if name != s["dut_iface"])
        with ssh(s) as c:
            rc, out = run(c, f"ping -c 3 -i 0.2 -W 2 -I {s['iface']} {mine['address']}")
            assert rc == 0 and "3 received" in out, out
            # The other source's test link is not reachable from here.
            rc, out = run(c, f"ping -c 1 -W 1 {other['address']}")
            assert rc != 0, out
        [n] = [n for n in ip_json("neigh", "show", "dev", s["iface"], netns=s["netns"])
               if n["dst"] == mine["address"]]
        assert "PERMANENT" in n["state"], "nothing was learnt over ARP"


def test_the_agent_answers_on_its_management_address_and_wants_the_token(desc):
    status, body = agent(desc, "GET", "/health")
    assert status == 200 and body["ok"] is True and body["agent"].startswith("xdplab-agent/")
    assert {"xl-dut0", "xl-dut1"} <= set(body["interfaces"])
    status, anon = agent(desc, "GET", "/health", token=False)
    assert status == 401 or (status == 200 and set(anon) == {"ok", "agent"}), anon
    assert agent(desc, "POST", "/reset", token=False)[0] == 401
    assert agent(desc, "GET", "/sessions/nope", token=False)[0] == 401


def test_logs_are_copied_and_down_leaves_nothing(netns_lab, tmp_path):
    lab = netns_lab.lab
    copied = sorted(p.name for p in lab.copy_logs(tmp_path / "logs"))
    assert copied == ["agent.log", "sshd-src0.log", "sshd-src1.log"]
    lab.down()
    assert not {n for n in netns_names() if n.startswith(labnet.LAB_NAME)}
    assert all(inet(None, i) is None for i in ("xlt-lab-m0", "xlt-lab-m1", "xlt-lab-md"))
    state = lab.state_dir
    assert not state.exists() or list(state.iterdir()) == [], sorted(map(str, state.rglob("*")))
    assert lab.find_leftovers() == []
    procs = subprocess.run(["pgrep", "-af", str(state)], capture_output=True, text=True).stdout
    assert procs.strip() == "", procs
    # Up again for whatever test follows: new keys and token at the same paths,
    # so the lab config written by the fixture still holds.
    again = lab.up()
    assert [s["key_file"] for s in again["sources"]] == [s["key_file"] for s in netns_lab.desc["sources"]]
    assert again["dut"]["token_file"] == netns_lab.desc["dut"]["token_file"]
    with ssh(again["sources"][1]) as c:
        assert run(c, "true")[0] == 0
