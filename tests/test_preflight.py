"""The pre-flight check (xdplab.preflight, docs/preflight.md): its decisions on the hosts'
facts (unit tests), the facts as this kernel reports them, and on the namespace lab a DUT
interface without native XDP refused before any traffic."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xdplab import clocks, preflight
from xdplab.agent import environment, prefacts
from xdplab.sourcehost import facts as source_facts

REPO = Path(__file__).resolve().parents[1]
BOOT = "d3011a55-6316-410e-8b7c-930ea983da56"
OTHER_BOOT = "0b5c0d9e-1111-4222-8333-944455556666"
VETH_OFFLOADS = {"generic-receive-offload": "on", "large-receive-offload": "off [fixed]",
                 "rx-gro-hw": "off [fixed]", "rx-gro-list": "off", "rx-udp-gro-forwarding": "off",
                 "rx-vlan-offload": "on"}


def run(**kw):
    r = {"xdp_mode": ["native"], "attaches": True, "packet_size": [1458], "target_pps": [10000],
         "send_path": "udp", "generator": "python", "ndr_max_pps": None}
    r.update(kw)
    return r


def dut(**iface):
    f = {"mtu": 1500, "speed_mbps": None, "driver": "veth", "xdp_features": ["basic", "redirect", "rx-sg"],
         "offloads": dict(VETH_OFFLOADS), "irqs": {}}
    f.update(iface)
    return {"where": "DUT dut0 (agent http://10.0.0.2:7717)", "boot_id": BOOT,
            "interfaces": {"eth1": f}, "bpf_jit_enable": "1", "page_size": 4096, "agent_cpus": [0, 1],
            "cpufreq_governors": None, "clock": None}


def src(**facts):
    f = {"boot_id": BOOT, "euid": 0, "mtu": 1500, "speed_mbps": None,
         "neighbour": {"state": "REACHABLE", "lladdr": "02:00:00:00:00:02"}, "clock": None,
         "trafgen": "/usr/sbin/trafgen"}
    f.update(facts)
    return {"where": "source host root@10.0.1.2:22 (src0)", "name": "src0", "system": "Linux",
            "iface": "eth0", "dut_iface": "eth1", "dut_address": "10.0.0.2",
            "dut_mac": "02:00:00:00:00:02", "facts": f}


def test_the_embedded_testbeds_facts_pass():
    got = preflight.decide(dut(), [src()], run())
    assert got["problems"] == []
    assert got["clock"]["latency"] == "one clock" and got["clock"]["reported"]
    assert any("no link speed reported" in r for r in got["reports"])    # line rate not checked
    # veth reports 10000 Mbit/s, but no device is behind it: no line rate
    veth = preflight.decide(dut(), [src(speed_mbps=10000, physical=False)], run(target_pps=[2000000]))
    assert veth["problems"] == []
    assert any("no line rate: a virtual interface" in r and "10,000 Mbit/s" in r for r in veth["reports"])


# -- the DUT ---------------------------------------------------------------------------

def test_an_interface_without_native_xdp_is_refused_when_native_is_asked():
    got = preflight.decide(dut(xdp_features=[], driver="dummy"), [src()], run())
    assert len(got["problems"]) == 1
    p = got["problems"][0]
    assert "DUT dut0" in p and "interface eth1" in p and "no native XDP" in p and "xdp_mode: generic" in p
    # generic asked: no refusal; nothing attached (collector off): no refusal either
    assert preflight.decide(dut(xdp_features=[]), [src()], run(xdp_mode=["generic"]))["problems"] == []
    assert preflight.decide(dut(xdp_features=[]), [src()], run(attaches=False))["problems"] == []


def test_unknown_xdp_features_are_reported_not_refused():
    got = preflight.decide(dut(xdp_features=None, xdp_features_unavailable="Linux < 6.3"), [src()], run())
    assert got["problems"] == []
    assert any("Linux < 6.3" in r for r in got["reports"])


def test_a_packet_size_above_the_mtu_is_refused_on_either_end():
    got = preflight.decide(dut(mtu=1400), [src()], run(packet_size=[18, 1458]))
    assert len(got["problems"]) == 1 and "interface eth1" in got["problems"][0]
    assert "1486 B, above its MTU 1400 B" in got["problems"][0]
    got = preflight.decide(dut(), [src(mtu=1400)], run(packet_size=[18, 1458]))
    assert len(got["problems"]) == 1 and "src0" in got["problems"][0] and "MTU 1400" in got["problems"][0]


def test_an_mtu_above_native_xdps_single_buffer_limit_is_refused():
    assert preflight.xdp_single_buffer_mtu(4096) == 3506
    got = preflight.decide(dut(mtu=9000), [src(mtu=9000)], run())
    assert any("single-buffer limit 3506 B" in p for p in got["problems"])
    assert preflight.decide(dut(mtu=9000), [src(mtu=9000)], run(xdp_mode=["generic"]))["problems"] == []


def test_the_jit_off_is_refused():
    d = dut()
    d["bpf_jit_enable"] = "0"
    got = preflight.decide(d, [src()], run())
    assert len(got["problems"]) == 1 and "bpf_jit_enable = 0" in got["problems"][0]


def test_offloads_that_merge_frames_before_xdp():
    got = preflight.decide(dut(offloads=dict(VETH_OFFLOADS, **{"large-receive-offload": "on"})), [src()], run())
    assert len(got["problems"]) == 1 and "large-receive-offload is on" in got["problems"][0]
    udp_gro = dut(offloads=dict(VETH_OFFLOADS, **{"rx-udp-gro-forwarding": "on"}))
    assert preflight.decide(udp_gro, [src()], run())["problems"] == []          # after native XDP
    got = preflight.decide(udp_gro, [src()], run(xdp_mode=["generic"]))
    assert len(got["problems"]) == 1 and "before generic XDP" in got["problems"][0]


def test_irqs_sharing_the_agents_cpus_and_the_governor_are_reported():
    d = dut(irqs={"40": [1], "41": [2]})
    d["cpufreq_governors"] = {"powersave": [0, 1, 2, 3]}
    got = preflight.decide(d, [src()], run())
    assert got["problems"] == []
    assert any("IRQs 40, 41 on CPUs 1-2: sharing CPUs 1 with the agent" in r for r in got["reports"])
    assert any("powersave on CPUs 0-3" in r and "varies" in r for r in got["reports"])


# -- the sources -----------------------------------------------------------------------

def test_a_rate_above_line_rate_is_refused():
    # 1458-byte payloads: 1504-byte frames, 1524 bytes of line time: 12,192 bits a packet
    assert preflight.wire_bits_per_s(1, 1458) == 12192
    assert preflight.wire_bits_per_s(1, 18) == (64 + 20) * 8
    fits = preflight.decide(dut(), [src(speed_mbps=1000)], run(target_pps=[80000]))
    assert fits["problems"] == []
    got = preflight.decide(dut(), [src(speed_mbps=1000)], run(target_pps=[10000, 100000]))
    assert len(got["problems"]) == 1
    assert "src0" in got["problems"][0] and "1,219.2 Mbit/s on the wire, above its line rate 1,000 Mbit/s" \
        in got["problems"][0]
    # two sources share the rate: each offers half
    two = [src(speed_mbps=1000), dict(src(speed_mbps=1000), where="src1", name="src1")]
    assert preflight.decide(dut(), two, run(target_pps=[100000]))["problems"] == []
    # and the DUT's interface takes what all of them offer
    got = preflight.decide(dut(speed_mbps=1000), two, run(target_pps=[100000]))
    assert len(got["problems"]) == 1 and "interface eth1" in got["problems"][0]


def test_the_send_path_needs_linux_and_root():
    mac = dict(src(), system="Darwin")
    assert preflight.decide(dut(), [mac], run())["problems"] == []     # udp: any OS
    got = preflight.decide(dut(), [mac], run(send_path="packet"))
    assert len(got["problems"]) == 1 and "needs Linux" in got["problems"][0] and "Darwin" in got["problems"][0]
    got = preflight.decide(dut(), [src(euid=1000)], run(send_path="packet"))
    assert len(got["problems"]) == 1 and "needs root" in got["problems"][0] and "uid 1000" in got["problems"][0]
    got = preflight.decide(dut(), [src(euid=1000, trafgen=None)], run(generator="trafgen"))
    assert len(got["problems"]) == 2 and "not installed" in got["problems"][1]


def test_send_path_auto_is_accepted_everywhere_and_says_which_path():
    unresolved = {"neighbour": {"state": "FAILED", "lladdr": None, "said": ""}}
    # Linux as root, the DUT's MAC known: the packet path, whose frames carry the MAC
    got = preflight.decide(dut(), [src(**unresolved)], run(send_path="auto"))
    assert got["problems"] == [] and any("send_path auto: the generator will send with packet" in r
                                         for r in got["reports"])
    # macOS, or no root: the UDP socket, which needs the neighbour entry resolved
    for host in (dict(src(), system="Darwin"), src(euid=1000)):
        got = preflight.decide(dut(), [host], run(send_path="auto"))
        assert got["problems"] == [] and any("will send with udp" in r for r in got["reports"]), got
    got = preflight.decide(dut(), [src(euid=1000, **unresolved)], run(send_path="auto"))
    assert len(got["problems"]) == 1 and "not resolved" in got["problems"][0]


def test_the_duts_neighbour_entry_must_be_resolved_and_be_the_dut():
    unresolved = src(neighbour={"state": "FAILED", "lladdr": None, "said": ""})
    got = preflight.decide(dut(), [unresolved], run())
    assert len(got["problems"]) == 1 and "not resolved (FAILED)" in got["problems"][0]
    # packet and trafgen frames carry the DUT's MAC themselves: reported only
    assert preflight.decide(dut(), [unresolved], run(send_path="packet"))["problems"] == []
    elsewhere = src(neighbour={"state": "STALE", "lladdr": "02:00:00:00:00:99"})
    got = preflight.decide(dut(), [elsewhere], run())
    assert len(got["problems"]) == 1 and "resolves to 02:00:00:00:00:99" in got["problems"][0]


def test_every_problem_is_said_at_once():
    d = dut(xdp_features=[], mtu=1400)
    d["bpf_jit_enable"] = "0"
    got = preflight.decide(d, [src(speed_mbps=10, euid=1000)], run(send_path="packet"))
    assert len(got["problems"]) == 5


def test_run_settings_from_the_configuration():
    from xdplab.config import validate_config

    r = preflight.run_settings(validate_config({"target_pps": [1000, 500], "xdp_mode": "generic"}).values)
    assert r["target_pps"] == [500, 1000] and r["xdp_mode"] == ["generic"] and r["attaches"]
    off = preflight.run_settings(validate_config({"collector": "off"}).values)
    assert not off["attaches"]


# -- clocks ----------------------------------------------------------------------------

CHRONY = """Reference ID    : C0A80001 (ntp.lan)
Stratum         : 3
Ref time (UTC)  : Sun Dec 06 17:00:00 2026
System time     : 0.000012000 seconds slow of NTP time
Last offset     : +0.000001000 seconds
RMS offset      : 0.000005000 seconds
Frequency       : 1.234 ppm fast
Residual freq   : +0.001 ppm
Skew            : 0.010 ppm
Root delay      : 0.000200000 seconds
Root dispersion : 0.000030000 seconds
Update interval : 64.2 seconds
Leap status     : Normal
"""
CHRONY_UNSYNCED = """Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds fast of NTP time
Root delay      : 1.000000000 seconds
Root dispersion : 1.000000000 seconds
Leap status     : Not synchronised
"""
PMC = """sending: GET TIME_STATUS_NP
	a0369f.fffe.2e3c4d-0 seq 0 RESPONSE MANAGEMENT TIME_STATUS_NP
		master_offset              -87
		ingress_time               1765040000000000000
		gmPresent                  true
		gmIdentity                 a0369f.fffe.000001
"""


def chrony(text=CHRONY, code=0):
    return {"chronyc_tracking": {"exit": code, "text": text}, "pmc_time_status": None}


def two_kernels(dut_clock, src_clock):
    d = dut()
    d["clock"] = dut_clock
    return d, [src(boot_id=OTHER_BOOT, clock=src_clock)]


def test_chrony_and_pmc_parsed_with_their_bounds():
    c = clocks.parse_chronyc_tracking(CHRONY)
    assert c["synchronised"] and c["offset_s"] == -12e-6
    assert c["bound_s"] == pytest.approx(12e-6 + 100e-6 + 30e-6)
    assert not clocks.parse_chronyc_tracking(CHRONY_UNSYNCED)["synchronised"]
    p = clocks.parse_pmc_time_status(PMC)
    assert p["synchronised"] and p["master_offset_ns"] == -87 and p["bound_s"] == pytest.approx(87e-9)


def test_clock_one_kernel_by_boot_id():
    got = clocks.clock_decision(dut(), [src(), dict(src(), where="src1")])
    assert got["latency"] == "one clock" and got["reported"] and got["offset_bound_ns"] == 0
    assert BOOT in got["why"]


def test_clock_synchronised_with_a_stated_offset_bound():
    d, s = two_kernels(chrony(), {"chronyc_tracking": None, "pmc_time_status": {"exit": 0, "text": PMC}})
    got = clocks.clock_decision(d, s, stamp_clock="realtime")
    assert got["latency"] == "synchronised" and got["reported"]
    # the DUT's chrony bound (142 us) plus the source's PTP bound (87 ns)
    assert got["offset_bound_ns"] == 142000 + 87
    assert "+/- 142.1 us" in got["why"]
    # today's timestamps are CLOCK_MONOTONIC: synchronisation does not align them
    mono = clocks.clock_decision(d, s)
    assert mono["latency"] == "n/a" and not mono["reported"] and mono["offset_bound_ns"] == 142087
    assert "CLOCK_MONOTONIC" in mono["why"]


def test_clock_not_available_without_synchronisation():
    d, s = two_kernels(chrony(), chrony(CHRONY_UNSYNCED))
    got = clocks.clock_decision(d, s, stamp_clock="realtime")
    assert got["latency"] == "n/a" and not got["reported"] and got["offset_bound_ns"] is None
    assert "src0" in got["why"] and "chrony: not synchronised" in got["why"]
    d, s = two_kernels(None, {"chronyc_tracking": {"exit": 1, "text": "506 Cannot talk to daemon"},
                              "pmc_time_status": None})
    got = clocks.clock_decision(d, s, stamp_clock="realtime")
    assert got["latency"] == "n/a" and "506 Cannot talk to daemon" in got["why"]
    got = clocks.clock_decision(dut(), [src(boot_id=None)])
    assert got["latency"] == "n/a" and "no boot id from source host" in got["why"]


def test_the_latency_columns_say_why_not_when_the_clocks_differ():
    """Where the latency columns are made (trialrows), two kernels give no number, but why."""
    from xdplab import trialrows

    feats = [{"latency_ns": {"p50": 5000}}]
    gens = [{"boot_id": OTHER_BOOT, "backend": "python"}]
    p50, p99, why = trialrows._latency(gens, {"boot_id": BOOT}, feats, "features")
    assert p50 is None and p99 is None and "do not share a clock" in why


# -- the facts, as this kernel reports them ---------------------------------------------

def test_the_agents_facts_on_this_kernel():
    c = environment.Collected()
    f = environment.preflight_facts(c, prefacts.run_quick, ["lo", "xlt-none0"])
    assert f["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert f["page_size"] == os.sysconf("SC_PAGE_SIZE") and f["agent_cpus"]
    assert f["bpf_jit_enable"] in ("0", "1", "2")
    # loopback has generic XDP only: no "basic" among its driver's XDP features
    assert f["interfaces"]["lo"]["xdp_features"] is not None
    assert "basic" not in f["interfaces"]["lo"]["xdp_features"]
    assert f["interfaces"]["lo"]["mtu"] == 65536 and f["interfaces"]["lo"]["physical"] is False
    assert f["interfaces"]["xlt-none0"]["xdp_features"] is None
    assert "preflight.interfaces.xlt-none0.xdp_features" in c.unavailable
    assert prefacts.cpu_list("0-2,5") == [0, 1, 2, 5]


def test_the_sources_facts_on_this_host():
    f = source_facts.preflight_facts("Linux", "lo", "127.0.0.1")
    assert f["boot_id"] and f["euid"] == os.geteuid() and f["mtu"] == 65536
    assert f["speed_mbps"] is None and f["physical"] is False    # loopback: no speed, no device
    assert set(f["clock"]) == {"chronyc_tracking", "pmc_time_status"}
    assert f["neighbour"]["state"] is not None


# -- on the namespace lab ---------------------------------------------------------------

def _ip(*argv):
    return subprocess.run(["ip", *argv], capture_output=True, text=True)


def _no_native_xdp_kind(ns):
    """A kind of interface without native XDP this kernel can make: dummy (the issue's
    choice), else a bridge (kernels built without the dummy driver, as this one may be)."""
    for kind in ("dummy", "bridge"):
        if _ip("-n", ns, "link", "add", "xlt-pfprobe", "type", kind).returncode == 0:
            _ip("-n", ns, "link", "del", "xlt-pfprobe")
            return kind
    pytest.skip("this kernel makes neither a dummy nor a bridge interface")


def test_a_dut_interface_without_native_xdp_is_refused_before_traffic(netns_lab, workflow_copy):
    """The lab's DUT interface xl-dut1 swapped for a dummy (or bridge) interface of the same
    name, and xl-dut0's MTU lowered below the packets: `snakemake preflight` with xdp_mode
    native refuses both at once, naming the DUT and each interface, and records why; with
    xdp_mode generic and the MTU back it passes."""
    import yaml

    ns = netns_lab.desc["dut"]["netns"]
    kind = _no_native_xdp_kind(ns)
    config = json.loads(json.dumps(netns_lab.config))
    config["lab"]["sources"] = config["lab"]["sources"][:1]      # src0 -> xl-dut0 sends; xl-dut1 collects
    path = workflow_copy / "lab-preflight.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    assert _ip("-n", ns, "link", "set", "xl-dut0", "mtu", "1400").returncode == 0
    assert _ip("-n", ns, "link", "set", "xl-dut1", "down").returncode == 0
    assert _ip("-n", ns, "link", "set", "xl-dut1", "name", "xlt-pfkeep").returncode == 0
    try:
        for argv in (["link", "add", "xl-dut1", "type", kind], ["addr", "add", "10.204.0.10/30", "dev", "xl-dut1"],
                     ["link", "set", "xl-dut1", "up"]):
            r = _ip("-n", ns, *argv)
            assert r.returncode == 0, r.stderr
        refused = subprocess.run(["snakemake", "--cores", "1", "preflight", "--configfile", str(path),
                                  "--config", "experiment=pf", "xdp_mode=native"],
                                 cwd=workflow_copy, env=env, capture_output=True, text=True, timeout=180)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0, said
        assert "pre-flight refused the run" in said
        line = next(l for l in said.splitlines() if "no native XDP" in l)
        assert "interface xl-dut1" in line and "DUT" in line and "agent http://10.204.2.2:7717" in line
        assert "xl-dut0" not in line
        record = json.loads((workflow_copy / "results/pf/preflight.json").read_text())
        assert record["verdict"] == "refused" and len(record["problems"]) == 2
        line = next(l for l in said.splitlines() if "above its MTU" in l)
        assert "interface xl-dut0" in line and "1486 B, above its MTU 1400 B" in line
        assert record["facts"]["dut"]["interfaces"]["xl-dut0"]["xdp_features"][:1] == ["basic"]
        assert record["clock"]["latency"] == "one clock"      # namespaces: one kernel
        assert record["facts"]["dut"]["bpf_jit_enable"] in ("0", "1", "2")   # read from a namespace
        assert not (workflow_copy / "results/pf/trials").exists()

        assert _ip("-n", ns, "link", "set", "xl-dut0", "mtu", "1500").returncode == 0
        passed = subprocess.run(["snakemake", "--cores", "1", "preflight", "--configfile", str(path),
                                 "--config", "experiment=pf", "xdp_mode=generic"],
                                cwd=workflow_copy, env=env, capture_output=True, text=True, timeout=180)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        record = json.loads((workflow_copy / "results/pf/preflight.json").read_text())
        assert record["verdict"] == "ok" and record["problems"] == []
    finally:
        _ip("-n", ns, "link", "set", "xl-dut0", "mtu", "1500")
        _ip("-n", ns, "link", "del", "xl-dut1")
        _ip("-n", ns, "link", "set", "xlt-pfkeep", "name", "xl-dut1")
        _ip("-n", ns, "link", "set", "xl-dut1", "up")


def test_the_archive_lists_the_record(tmp_path):
    from xdplab import archive

    assert archive.preflight_summary(str(tmp_path)) is None
    (tmp_path / "preflight.json").write_text(json.dumps(
        {"verdict": "ok", "checked": "2026-12-06T18:00:00Z", "problems": [], "reports": ["a", "b"],
         "clock": {"latency": "one clock"}}))
    assert archive.preflight_summary(str(tmp_path)) == \
        "ok at 2026-12-06T18:00:00Z, 0 problem(s), 2 report(s); latency: one clock"


def test_the_duts_facts_from_its_health_and_environment():
    desc = {"agent_url": "http://10.0.0.2:7717", "ifaces": ["eth1"]}
    health = {"hostname": "dut0", "boot_id": BOOT,
              "interfaces": {"eth1": {"mtu": 1500, "driver": "veth"}}}
    env = {"interfaces": {"eth1": {"driver": "veth", "offloads": dict(VETH_OFFLOADS)}},
           "preflight": {"boot_id": BOOT, "bpf_jit_enable": "1", "page_size": 4096, "agent_cpus": [0],
                         "interfaces": {"eth1": {"mtu": 1500, "speed_mbps": 10000, "physical": False,
                                                 "xdp_features": ["basic"], "irqs": {}}}},
           "unavailable": {}}
    d = preflight.dut_facts(desc, health, env, None)
    assert d["where"] == "DUT dut0 (agent http://10.0.0.2:7717)" and d["boot_id"] == BOOT
    assert d["interfaces"]["eth1"]["xdp_features"] == ["basic"] and d["interfaces"]["eth1"]["physical"] is False
    assert preflight.decide(d, [src()], run())["problems"] == []
    # an agent without the preflight block (older), or whose /environment failed: unknown, reported
    for env_found, error, why in ((dict(env, preflight=None), None, "an older agent"),
                                  (None, "GET /environment failed: 500", "GET /environment failed")):
        d = preflight.dut_facts(desc, health, env_found, error)
        assert d["interfaces"]["eth1"]["xdp_features"] is None
        got = preflight.decide(d, [src()], run())
        assert got["problems"] == [] and any(why in r for r in got["reports"])
