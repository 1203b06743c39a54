"""Generator tests that need root: source counters against a real qdisc and an
unresolved neighbour, the AF_PACKET send path, and the trafgen backend (every seq of
its warm-up and measured runs in a tcpdump capture), each in namespaces of its own
(xlt-gen-*, 10.203.0.0/16), removed on every path out.

Run under the testbed lock:
    flock /tmp/xdplab-testbed.lock env PYTHONPATH=workflow .venv/bin/python -m pytest tests/test_generator_net.py -q
"""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab.source import source_pyz  # noqa: E402
from xdplab.sourcehost import counters  # noqa: E402

SEND = [source_pyz(), "send"]  # the file the controller uploads (built with `make source` when stale)
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None
    or not sys.platform.startswith("linux"),
    reason="needs root, ip and tc on Linux (network namespaces)")


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


def nsx(ns, *cmd):
    return ["ip", "netns", "exec", ns] + [str(c) for c in cmd]


@contextlib.contextmanager
def link(tag, net, peer_addr=True, static_neigh=True):
    """Namespaces xlt-gen-<tag>-s / -d joined by veth xg<tag>s <-> xg<tag>d, addresses
    10.203.<net>.1/.2 (the peer's only if peer_addr), IPv6 off; always removed."""
    src, dst = "xlt-gen-%s-s" % tag, "xlt-gen-%s-d" % tag
    sif, dif = "xg%ss" % tag, "xg%sd" % tag
    sip, dip = "10.203.%d.1" % net, "10.203.%d.2" % net
    try:
        for ns in (src, dst):
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "netns", "add", ns)
            sh(*nsx(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
            sh(*nsx(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"))
        sh(*nsx(src, "ip", "link", "add", sif, "type", "veth", "peer", "name", dif))
        sh("ip", "-n", src, "link", "set", dif, "netns", dst)
        sh("ip", "-n", src, "addr", "add", sip + "/24", "dev", sif)
        if peer_addr:
            sh("ip", "-n", dst, "addr", "add", dip + "/24", "dev", dif)
        for ns, dev in ((src, sif), (dst, dif)):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        smac = sh(*nsx(src, "cat", "/sys/class/net/%s/address" % sif)).stdout.strip()
        dmac = sh(*nsx(dst, "cat", "/sys/class/net/%s/address" % dif)).stdout.strip()
        if static_neigh:
            sh("ip", "-n", src, "neigh", "replace", dip, "lladdr", dmac, "dev", sif, "nud", "permanent")
            sh("ip", "-n", dst, "neigh", "replace", sip, "lladdr", smac, "dev", dif, "nud", "permanent")
        yield {"src": src, "dst": dst, "sif": sif, "dif": dif, "sip": sip, "dip": dip, "dmac": dmac}
    finally:
        for ns in (src, dst):
            sh("ip", "netns", "del", ns, check=False)


def stat(ns, dev, name):
    return int(sh(*nsx(ns, "cat", "/sys/class/net/%s/statistics/%s" % (dev, name))).stdout)


def generate(l, *args):
    cmd = nsx(l["src"], PYTHON, *SEND, "--dst", l["dip"], "--port", 12345, "--run-id", 5,
              "--progress-s", 0, *args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_qdisc_drops_equal_what_the_qdisc_dropped():
    with link("q", 41) as l:
        sh(*nsx(l["src"], "tc", "qdisc", "add", "dev", l["sif"], "root", "tbf", "rate", "1mbit", "burst", "1600",
                "limit", "3000"))
        rx0 = stat(l["dst"], l["dif"], "rx_packets")
        out = generate(l, "--pps", 2000, "--size", 1000, "--duration", 0.5, "--threads", 1, "--iface", l["sif"])
        rx = stat(l["dst"], l["dif"], "rx_packets") - rx0
        tc = json.loads(sh(*nsx(l["src"], "tc", "-s", "-j", "qdisc", "show", "dev", l["sif"])).stdout)
    d = out["source_counters"]["delta"]
    assert out["source_counters"]["iface"] == l["sif"]
    assert out["sent"] == 1000 and out["send_errors"] == 0  # a qdisc drop is no sendto error
    assert 0 < rx < 1000
    # What left the qdisc arrived at the peer; the rest the qdisc dropped.
    assert d["qdisc_drops"] == out["sent"] - rx == tc[0]["drops"]
    assert d["nic_tx_packets"] == rx
    # The UDP layer saw each drop as ENOBUFS and counted it, without failing the send.
    assert d["udp_sndbuf_errors"] == d["qdisc_drops"]
    assert d["udp_out_datagrams"] + d["udp_sndbuf_errors"] == out["sent"]
    # Ip OutDiscards also counts each send refused by a pending ICMP port-unreachable
    # (nobody listens on the peer), which the generator sent again.
    assert d["ip_out_discards"] == d["qdisc_drops"] + out["refused_retries"]
    assert d["nic_tx_dropped"] == 0 and d["arp_unresolved_discards"] is not None
    assert out["source_counters"]["after"]["qdisc_drops"] == tc[0]["drops"]


def test_unresolved_neighbour_discards_are_counted_while_sendto_succeeds():
    # The peer has no address and no static entry exists: ARP goes unanswered, the
    # neighbour's queue (kept small here) holds a few packets and discards the rest.
    with link("a", 42, peer_addr=False, static_neigh=False) as l:
        sh(*nsx(l["src"], "sysctl", "-qw", "net.ipv4.neigh.%s.unres_qlen_bytes=8192" % l["sif"]))
        out = generate(l, "--pps", 1000, "--size", 100, "--duration", 0.5, "--threads", 1, "--iface", l["sif"])
        state = sh("ip", "-n", l["src"], "neigh", "show", l["dip"]).stdout
    d = out["source_counters"]["delta"]
    assert out["sent"] == 500 and out["send_errors"] == 0
    assert "INCOMPLETE" in state or "FAILED" in state, state
    # arp_cache statistics are the host's, not the namespace's: another namespace's
    # discards could add to them, hence a bound above and not an equality.
    queued = out["sent"] - d["arp_unresolved_discards"]
    assert 1 <= queued <= 64, d
    assert d["nic_tx_packets"] < 10  # only ARP requests left the interface
    assert d["udp_out_datagrams"] == 500 and d["udp_sndbuf_errors"] == 0


RECEIVER = r"""
import json, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("0.0.0.0", 12345))
s.settimeout(1.0)
print("ready", flush=True)
seqs, ports, bad = [], set(), 0
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        data, src = s.recvfrom(70000)
    except socket.timeout:
        if seqs:
            break
        continue
    magic, seq, send_ns, run_id = struct.unpack_from("!IIQH", data, 0)
    if magic != 0x58444C42 or run_id != 5 or data[18:] != bytes(len(data) - 18):
        bad += 1
    seqs.append(seq)
    ports.add(src[1])
print(json.dumps({"seqs": seqs, "ports": sorted(ports), "bad": bad, "len": len(data) if seqs else None}))
"""


def test_packet_path_sends_valid_frames():
    with link("p", 43) as l:
        csum0 = sh(*nsx(l["dst"], "cat", "/proc/net/snmp")).stdout
        rx = subprocess.Popen(nsx(l["dst"], PYTHON, "-c", RECEIVER), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True)
        try:
            assert rx.stdout.readline().strip() == "ready"
            out = generate(l, "--pps", 2000, "--size", 100, "--duration", 0.5, "--threads", 2,
                           "--iface", l["sif"], "--send-path", "packet", "--dst-mac", l["dmac"])
            got = json.loads(rx.communicate(timeout=60)[0])
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
    assert out["send_path"] == "packet" and out["send_call"] == "sendmmsg"
    assert out["sent"] == 1000 and out["send_errors"] == 0 and out["rate_sustained"] is True
    # The kernel's IPv4 receive path checked every header checksum: all arrived.
    assert sorted(got["seqs"]) == list(range(1000)) and got["bad"] == 0 and got["len"] == 100
    assert len(got["ports"]) == 2  # one source port per sender
    d = out["source_counters"]["delta"]
    assert d["nic_tx_packets"] == 1000
    assert d["udp_out_datagrams"] == 0 and d["qdisc_drops"] == 0  # no UDP stack, no qdisc on this path
    assert "InCsumErrors" in csum0


def test_packet_path_bypasses_the_qdisc():
    with link("b", 44) as l:
        sh(*nsx(l["src"], "tc", "qdisc", "add", "dev", l["sif"], "root", "tbf", "rate", "1mbit", "burst", "1600",
                "limit", "3000"))
        rx0 = stat(l["dst"], l["dif"], "rx_packets")
        out = generate(l, "--pps", 2000, "--size", 1000, "--duration", 0.25, "--iface", l["sif"],
                       "--send-path", "packet", "--dst-mac", l["dmac"])
        rx = stat(l["dst"], l["dif"], "rx_packets") - rx0
    assert out["sent"] == rx == 500
    assert out["source_counters"]["delta"]["qdisc_drops"] == 0


def _snmp(ns):
    text = sh(*nsx(ns, "cat", "/proc/net/snmp")).stdout
    return {"%s.%s" % k: v for k, v in counters.parse_snmp(text).items()}


@pytest.mark.skipif(shutil.which("trafgen") is None or shutil.which("tcpdump") is None,
                    reason="needs trafgen (netsniff-ng) and tcpdump")
def test_trafgen_backend_sends_every_seq_of_warmup_and_measured_run():
    sys.path.insert(0, str(REPO / "workflow"))
    from xdplab.pcapcheck import verify_capture

    with link("t", 45) as l:
        pcap = "/tmp/xlt-gen-trafgen-%d.pcap" % os.getpid()
        cap = subprocess.Popen(nsx(l["dst"], "tcpdump", "-i", l["dif"], "-p", "-nn", "-U", "--immediate-mode",
                                   "-s", "128", "-w", pcap,
                                   "udp"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               universal_newlines=True)
        try:
            assert "listening on" in cap.stderr.readline()
            snmp0 = _snmp(l["dst"])
            rx0 = stat(l["dst"], l["dif"], "rx_packets")
            out = generate(l, "--backend", "trafgen", "--pps", 2000, "--size", 100, "--duration", 1.5,
                           "--warmup-s", 0.5, "--warmup-run-id", 6, "--iface", l["sif"], "--dst-mac", l["dmac"])
            rx = stat(l["dst"], l["dif"], "rx_packets") - rx0
            snmp = _snmp(l["dst"])
        finally:
            time.sleep(0.3)  # what tcpdump has received, it writes before it stops
            cap.send_signal(2)
            cap_err = cap.communicate(timeout=10)[1]
        try:
            measured = verify_capture(pcap, run_id=5, port=12345, scheduled=out["scheduled"], threads=1)
            warm = verify_capture(pcap, run_id=6, port=12345, scheduled=out["warmup"]["scheduled"], threads=1)
        finally:
            os.unlink(pcap)
    w = out["warmup"]
    assert out["backend"] == "trafgen" and out["interrupted"] is False
    # Exact counts: everything scheduled was sent (trafgen's count), left the NIC and arrived.
    assert (out["scheduled"], out["sent"], out["not_offered"]) == (3000, 3000, 0)
    assert (w["scheduled"], w["sent"], w["not_offered"], w["nic_tx_packets"]) == (1000, 1000, 0, 1000)
    assert out["nic_tx_packets"] == 3000
    assert out["source_counters"]["delta"]["nic_tx_packets"] == 4000 == rx
    # Read between trafgen's two processes, the counters split exactly at the window's start.
    sc = out["source_counters"]
    assert (sc["warmup_delta"]["nic_tx_packets"], sc["window_delta"]["nic_tx_packets"]) == (1000, 3000), sc
    assert sc["window_start"]["sent_by_then"] is None
    assert out["rate_sustained"] is True and out["window_s"] == 1.5
    # Each run's seqs 0..n-1, each once, in order, with the magic and its run id.
    for check, n in ((measured, 3000), (warm, 1000)):
        assert (check["unique"], check["missing"], check["duplicated"], check["out_of_range"]) == (n, 0, 0, 0), (
            check, cap_err)
        assert check["reordered"] == 0
    assert measured["matched"] == 3000 and warm["matched"] == 1000
    # The kernel took every frame as valid UDP (nobody listens: NoPorts), no header errors.
    assert snmp["Udp.NoPorts"] - snmp0["Udp.NoPorts"] == 4000
    assert snmp["Ip.InHdrErrors"] == snmp0["Ip.InHdrErrors"]
    assert snmp.get("Udp.InCsumErrors") == snmp0.get("Udp.InCsumErrors")
    # The measured run followed the warm-up closely, and the gap is recorded.
    assert 0 <= w["gap_to_measured_s"] < 0.1
    assert sum(out["sent_per_s"]) <= 3000 and len(out["sent_per_s"]) == 1


@pytest.mark.skipif(shutil.which("trafgen") is None or shutil.which("tcpdump") is None,
                    reason="needs trafgen (netsniff-ng) and tcpdump")
def test_trafgen_backend_over_ssh_on_the_embedded_testbed(embedded_testbed):
    """The controller's path: source.run_generators uploads the generator over SSH and
    runs it with backend trafgen (warm-up, then measured) in the source namespace; a
    capture on the DUT's interface holds every seq of both runs, and nothing of ours
    is left on the source."""
    import io

    sys.path.insert(0, str(REPO / "workflow"))
    from xdplab import source
    from xdplab.pcapcheck import verify_capture

    tb, desc = embedded_testbed
    s = desc["sources"][0]
    link_ = desc["test_link"]
    src = {k: s[k] for k in ("host", "port", "user", "key_file", "known_hosts", "python", "iface")}
    src["name"] = "src-trafgen"
    args = {"dst": link_["dut_addr"], "port": 12345, "pps": 5000, "size": 64, "duration": 1.2, "threads": 1,
            "run_id": 300, "src": link_["src_addr"], "iface": link_["src_iface"], "backend": "trafgen",
            "dst_mac": link_["dut_mac"], "warmup_s": 0.4, "warmup_run_id": 301, "progress_s": 0.5}
    pcap = "/tmp/xlt-gen-trafgen-ssh-%d.pcap" % os.getpid()
    cap = subprocess.Popen(nsx(desc["dut"]["netns"], "tcpdump", "-i", link_["dut_iface"], "-p", "-nn", "-U",
                               "--immediate-mode", "-s", "128", "-w", pcap, "udp", "port", "12345"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        assert "listening on" in cap.stderr.readline()
        log = io.StringIO()
        [out] = source.run_generators([(src, args)], timeout_s=30, err_stream=log)
    finally:
        time.sleep(0.3)
        cap.send_signal(2)
        cap.communicate(timeout=10)
    try:
        measured = verify_capture(pcap, run_id=300, port=12345, scheduled=out["scheduled"], threads=1)
        warm = verify_capture(pcap, run_id=301, port=12345, scheduled=out["warmup"]["scheduled"], threads=1)
    finally:
        os.unlink(pcap)
    assert out["backend"] == "trafgen" and out["interrupted"] is False
    assert (out["scheduled"], out["sent"], out["warmup"]["scheduled"], out["warmup"]["sent"]) == (6000, 6000,
                                                                                                  2000, 2000)
    for check, n in ((measured, 6000), (warm, 2000)):
        assert (check["unique"], check["missing"], check["duplicated"]) == (n, 0, 0), check
    assert "progress t=" in log.getvalue()
    # nothing of ours left on the source: no generator, no trafgen, no configuration file
    procs = subprocess.run(nsx(s["netns"], "pgrep", "-af", "[/]tmp/xdplab-generator-"), stdout=subprocess.PIPE,
                           universal_newlines=True).stdout
    assert procs.strip() == ""
    assert [f for f in os.listdir("/tmp") if f.startswith("xdplab-generator-")] == []


def _wait_listening(ns, addr, port, proc, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        probe = sh(*nsx(ns, sys.executable, "-c", "import socket,sys; socket.create_connection((sys.argv[1], "
                        "int(sys.argv[2])), timeout=1).close()", addr, port), check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("sshd did not listen on %s:%d" % (addr, port))


def test_a_source_without_sftp_runs_the_generator_preflight_and_facts(embedded_testbed, tmp_path):
    """A source host whose sshd offers no SFTP subsystem (no `Subsystem` line, as on
    hardened hosts and minimal images): a second sshd in the embedded source namespace,
    on another port, with the testbed's keys.  The controller's own code paths upload
    dist/xdplab-source.pyz over the command channel and run the generator (a trial's
    launch), the pre-flight check and the host facts; SFTP itself is refused there."""
    import io

    import paramiko

    from xdplab import hostenv, source

    tb, desc = embedded_testbed
    s = desc["sources"][0]
    link_ = desc["test_link"]
    state = pathlib.Path(s["key_file"]).parent
    port = 2222
    config = tmp_path / "sshd_config-nosftp"
    lines = [line for line in (state / "sshd_config").read_text().splitlines()
             if not line.startswith(("Subsystem", "Port ", "PidFile "))]
    config.write_text("\n".join(lines + ["Port %d" % port, "PidFile %s" % (tmp_path / "sshd.pid"), ""]))
    assert "Subsystem" not in config.read_text()
    host_pub = (state / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[%s]:%d %s %s\n" % (s["host"], port, host_pub[0], host_pub[1]))
    src = {k: s[k] for k in ("host", "user", "key_file", "python", "iface")}
    src.update(port=port, known_hosts=str(known_hosts), name="src-nosftp", address=link_["src_addr"])
    sshd = subprocess.Popen(nsx(s["netns"], "/usr/sbin/sshd", "-D", "-e", "-f", config),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        _wait_listening(s["netns"], s["host"], port, sshd)
        with source.connect(src) as c:   # the premise: this server has no SFTP
            with pytest.raises(paramiko.SSHException):
                c.sftp()
        found = source.preflight(src, link_["dut_addr"])
        assert found["exists"] and found["ping"]["ok"], found
        facts = hostenv.source(src)
        assert "error" not in facts, facts
        assert facts["host"]["interfaces"][s["iface"]]["mtu"] > 0
        args = {"dst": link_["dut_addr"], "port": 12345, "pps": 2000, "size": 64, "duration": 0.5, "threads": 1,
                "run_id": 310, "src": link_["src_addr"], "iface": link_["src_iface"], "progress_s": 0.25}
        log = io.StringIO()
        [out] = source.run_generators([(src, args)], timeout_s=30, err_stream=log)
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
    assert out["sent"] == out["scheduled"] == 1000 and out["interrupted"] is False, out
    assert "progress t=" in log.getvalue()
    # the uploaded files are gone: the generator's (removed in its own command) and the
    # pre-flight's and facts' temporary copies
    assert [f for f in os.listdir("/tmp") if f.startswith(("xdplab-generator-", "xdplab-source."))] == []
