"""Where every lost packet went, and traffic that is not ours: loss injected at known
places on the embedded testbed, each checked to the packet where the kernel counts it.

Each test brings the embedded testbed up first (the workflow reuses a healthy one),
changes the test link the way a real network would misbehave, runs one short trial
with the snakemake command line, and reads the trial's row.  The testbed is torn down
afterwards, whatever happened.
"""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import planned_trial

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SRC_NS, DUT_NS, SRC_IF, DUT_IF = "xdplab-src", "xdplab-dut", "xl-src0", "xl-dut0"
DUT_ADDR = "10.201.0.2"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


def _env(workdir):
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(workdir / "workflow")}


def sh(*argv, check=True, timeout=60):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    assert not check or r.returncode == 0, (argv, r.stderr)
    return r


@pytest.fixture
def workdir(testbed_up_copy):
    return testbed_up_copy


def start(workdir, *config):
    out = open(workdir / f"run-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen([str(SNAKEMAKE), "--cores", "1", "--config", *config, "keep_testbed=true"],
                            cwd=workdir, env=_env(workdir), stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    return proc, out


def finish(proc, out, timeout=300):
    rc = proc.wait(timeout=timeout)
    out.seek(0)
    text = out.read()
    assert rc == 0, text[-4000:]
    return text


def run(workdir, *config):
    return finish(*start(workdir, *config))


def row(workdir, exp):
    with open(workdir / "results" / exp / "summary.csv") as f:
        (r,) = list(csv.DictReader(f))
    return r


def n(r, col):
    return int(float(r[col]))


def all_lost(r):
    """Packets lost over the whole trial: its measured window's and its warm-up's."""
    return n(r, "lost") + n(r, "warmup_lost")


def all_sent(r):
    return n(r, "sent") + n(r, "warmup_sent")


PLACES = ("src_stack", "src_qdisc", "src_nic", "dut_nic")


def located(r, place, phase=""):
    """Packets of one phase ("" the measured window, "warmup_") located at one place."""
    return n(r, f"{phase}lost_{place}")


def each_phase_adds_up(r):
    """The window's location columns add up to lost, the warm-up's to warmup_lost."""
    for phase, lost in (("", "lost"), ("warmup_", "warmup_lost")):
        assert sum(located(r, p, phase) for p in PLACES + ("unlocated",)) == n(r, lost), (phase, r)


def test_a_rate_limit_on_the_source_is_lost_at_the_source_qdisc(workdir):
    # 10,000 pps of 1,500-byte packets is ~120 Mbit/s; the qdisc lets 40 through.
    sh("tc", "-n", SRC_NS, "qdisc", "add", "dev", SRC_IF, "root", "tbf", "rate", "40mbit",
       "burst", "6000", "limit", "12000")
    # send_path udp: the packet path (the default's choice as root on Linux) bypasses the
    # qdisc by design, and so the rate limit
    run(workdir, "target_pps=10000", "duration_s=2", "send_path=udp", "experiment=tbf")
    r = row(workdir, "tbf")
    stats = json.loads(sh("tc", "-n", SRC_NS, "-s", "-j", "qdisc", "show", "dev", SRC_IF).stdout)
    drops = sum(q.get("drops", 0) for q in stats)
    # Each phase's loss is located by its own counters: the source reads them at the
    # window's start too.
    assert n(r, "lost") > 0 and n(r, "warmup_lost") > 0 and all_lost(r) == drops, (r, stats)
    assert n(r, "lost_src_qdisc") == n(r, "lost") and n(r, "warmup_lost_src_qdisc") == n(r, "warmup_lost"), r
    assert n(r, "lost_unlocated") == n(r, "warmup_lost_unlocated") == 0, r
    assert n(r, "located_excess") == n(r, "warmup_located_excess") == 0, r
    each_phase_adds_up(r)
    assert n(r, "unexplained") == 0 and r["loss_where"] == f"src_qdisc {n(r, 'lost')}", r


def test_a_dut_that_cannot_keep_up_is_lost_where_veth_counts_it(workdir):
    # send_path udp: on the packet path (the default's choice as root on Linux) a full veth
    # ring fails the send itself (ENOBUFS, a send error, not a loss) on this kernel
    text = run(workdir, "target_pps=600000", "duration_s=2", "packet_size=18", "threads=2", "send_path=udp",
               "experiment=overrun")
    r = row(workdir, "overrun")
    trial = json.loads(next((workdir / "results/overrun/trials").glob("*/rep~*/trial.json")).read_text())
    (gen,) = trial["generators"]
    tx_dropped = gen["source_counters"]["delta"]["nic_tx_dropped"]
    # veth drops what the DUT's receive ring has no room for when it transmits: the
    # source end's tx_dropped counts exactly the packets lost.
    assert n(r, "lost") > 0, r
    assert all_lost(r) == tx_dropped, (r, gen["source_counters"])
    assert n(r, "lost_src_nic") == n(r, "lost") and n(r, "warmup_lost_src_nic") == n(r, "warmup_lost"), r
    assert n(r, "lost_unlocated") == n(r, "warmup_lost_unlocated") == 0 and n(r, "unexplained") == 0, r
    each_phase_adds_up(r)
    # the DUT's receive ring was full: the trial says whether its own observers were busy
    # (agent and capture together at least a quarter of one CPU; docs/method.md)
    busy = float(r["agent_cpu_pct"]) + float(r["capture_cpu_pct"]) >= 25
    assert r["observers_busy"] == str(busy), r
    assert ("they may have been the bottleneck" in text) == busy, text[-3000:]



def test_on_the_packet_path_a_full_veth_ring_fails_the_send_and_nothing_is_lost_there(workdir):
    # The same overrun on the packet path (send_path auto's choice here): a frame veth
    # refuses fails the send (ENOBUFS: a send error, never sent) or, when sendmmsg swallowed
    # the error, is sent again; veth's tx_dropped counts every refusal, which locates no
    # loss at the source's NIC.  The DUT that cannot keep up shows as back-pressure.
    run(workdir, "target_pps=600000", "duration_s=2", "packet_size=18", "threads=2", "send_path=packet",
        "experiment=overrun_packet")
    r = row(workdir, "overrun_packet")
    trial = json.loads(next((workdir / "results/overrun_packet/trials").glob("*/rep~*/trial.json")).read_text())
    (gen,) = trial["generators"]
    refused = gen["send_error_kinds"].get("ENOBUFS", 0) + gen["warmup"]["send_error_kinds"].get("ENOBUFS", 0)
    assert refused > 0, gen["send_error_kinds"]   # the ring did fill
    assert gen["source_counters"]["delta"]["nic_tx_dropped"] >= refused, gen["source_counters"]
    assert n(r, "lost_src_nic") == n(r, "warmup_lost_src_nic") == 0, r
    assert n(r, "located_excess") == n(r, "warmup_located_excess") == 0, r
    assert n(r, "lost_unlocated") == 0 and n(r, "unexplained") == 0, r
    each_phase_adds_up(r)

def _nft_on_source_egress(statement):
    rules = (f'table netdev xlt {{\n chain c {{\n  type filter hook egress device "{SRC_IF}" priority 0;\n'
             f'  udp dport 12345 numgen inc mod 100 == 0 {statement}\n }}\n}}\n')
    r = subprocess.run(["ip", "netns", "exec", SRC_NS, "nft", "-f", "-"], input=rules, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_a_drop_on_the_source_egress_is_the_source_stack(workdir):
    # An nftables drop on the egress hook returns NET_XMIT_DROP: sendto still succeeds, and
    # the kernel counts the packet in Udp SndbufErrors (and Ip OutDiscards).
    # send_path udp: this is the UDP stack's count; an AF_PACKET send the egress hook drops
    # fails (ENOBUFS) and is a send error, not a loss
    _nft_on_source_egress("drop")
    run(workdir, "target_pps=5000", "duration_s=2", "send_path=udp", "experiment=nftdrop")
    r = row(workdir, "nftdrop")
    assert all_lost(r) == all_sent(r) // 100 and n(r, "lost") > 0, r
    assert n(r, "lost_src_stack") == n(r, "lost") and n(r, "warmup_lost_src_stack") == n(r, "warmup_lost"), r
    assert n(r, "lost_unlocated") == n(r, "warmup_lost_unlocated") == 0, r
    each_phase_adds_up(r)
    assert n(r, "unexplained") == 0 and r["loss_where"] == f"src_stack {n(r, 'lost')}", r


def test_a_loss_no_counter_sees_is_lost_unlocated(workdir):
    # Every 100th packet leaves by another interface, as a misconfigured switch would send
    # it elsewhere: the sender, the test interface and the DUT count nothing unusual.
    sh("ip", "-n", SRC_NS, "link", "add", "xlt-sink0", "type", "veth", "peer", "name", "xlt-sink1")
    for dev in ("xlt-sink0", "xlt-sink1"):
        sh("ip", "-n", SRC_NS, "link", "set", dev, "up")
    _nft_on_source_egress('fwd to "xlt-sink0"')
    # send_path udp: the egress hook as an application's traffic meets it
    run(workdir, "target_pps=5000", "duration_s=2", "send_path=udp", "experiment=nftfwd")
    r = row(workdir, "nftfwd")
    assert all_lost(r) == all_sent(r) // 100 and n(r, "lost") > 0, r
    assert n(r, "lost_unlocated") == n(r, "lost") and n(r, "warmup_lost_unlocated") == n(r, "warmup_lost"), r
    assert sum(located(r, p, ph) for p in PLACES for ph in ("", "warmup_")) == 0, r
    each_phase_adds_up(r)
    assert n(r, "unexplained") == 0 and r["loss_where"] == f"unlocated {n(r, 'lost')}", r


FOREIGN = r"""
import socket, struct, sys
dst = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(300):                      # to the measured port, without our header
    s.sendto(b"not xdplab" + bytes(50), (dst, 12345))
for i in range(7):                        # to another port
    s.sendto(b"x" * 20, (dst, 9999))
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind(("xl-src0", 0))
mac = open("/sys/class/net/xl-src0/address").read().strip()
src = bytes.fromhex(mac.replace(":", ""))
arp = (b"\xff" * 6 + src + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src
       + socket.inet_aton("10.201.0.1") + bytes(6) + socket.inet_aton(dst))
for i in range(3):                        # ARP requests
    raw.send(arp)
"""


def test_foreign_traffic_is_reported_and_never_unexplained(workdir):
    proc, out = start(workdir, "target_pps=5000", "duration_s=4", "experiment=foreign")
    log = planned_trial(workdir / "results/foreign", {"target_pps": 5000, "duration_s": 4,
                                                      "experiment": "foreign"}) / "logs/launch_generator.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "progress t=" in log.read_text(errors="replace")):
        assert proc.poll() is None and time.monotonic() < deadline, "the generator never ran"
        time.sleep(0.1)
    sh("ip", "netns", "exec", SRC_NS, "/usr/bin/python3", "-c", FOREIGN, DUT_ADDR)
    finish(proc, out)
    r = row(workdir, "foreign")
    assert n(r, "foreign_port") == 300 and n(r, "foreign_arp") == 3 and n(r, "foreign_other") >= 7, r
    assert n(r, "foreign_rx") == n(r, "xdp_seen") - all_sent(r), r
    assert n(r, "unexplained") == 0 and n(r, "lost") == n(r, "warmup_lost") == 0, r
    assert n(r, "tcpdump_captured") == all_sent(r) and n(r, "xdp_matched") == n(r, "sent"), r
