"""Tests for the generator's trafgen backend (workflow/xdplab/sourcehost/trafgen.py, `send --backend trafgen`)
that need neither root nor trafgen: its packet configuration, the parsing of trafgen's
summary, its arguments, and the run's control flow against a stand-in trafgen
(a script that answers like trafgen 0.6.8 and counts at --rate per second).

The real trafgen on a veth pair: tests/test_generator_net.py.
"""

import json
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab.source import source_pyz  # noqa: E402
from xdplab.sourcehost import trafgen  # noqa: E402
from xdplab.sourcehost.wire import MAGIC  # noqa: E402

PYZ = source_pyz()  # the file the controller uploads (built with `make source` when stale)
SEND = [str(PYZ), "send"]


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the trafgen backend is Linux only")

# What trafgen 0.6.8 printed here: at the end of --num packets, and after SIGINT
# (with --no-sock-mem absent, its socket-memory warnings went to stdout first).
FINISHED = """     1 packets to schedule
    60 bytes in total
Running! Hang up with ^C!


        2500 packets outgoing
      150000 bytes outgoing
           2 sec, 3857 usec on CPU0 (2500 packets)
"""
INTERRUPTED = ("Cannot set system socket memory in /proc/sys/net/core/rmem_max: Permission denied\n"
               "\n\n     937378 packets outgoing\n\n    56242680 bytes outgoing\n\n"
               "           3 sec, 993745 usec on CPU0 (937378 packets)\n")


def _fields(cfg):
    """The inner IPv4 header's fields from the configuration text."""
    m = re.search(r"ipv4\(ver=(\d+), ihl=(\d+), tos=(\d+), len=(\d+), id=(\d+), frag=0, ttl=(\d+), "
                  r"proto=(\d+), csum=(\d+),", cfg)
    return [int(x) for x in m.groups()]


@pytest.mark.parametrize("sport, dport, size", [(40000, 12345, 18), (0x8040, 9, 100), (65535, 65535, 1458)])
def test_config_lays_the_udp_header_and_magic_over_the_inner_ipv4_fields(sport, dport, size):
    cfg = trafgen.trafgen_config(bytes.fromhex("020000000002"), bytes.fromhex("020000000001"), "10.0.0.1",
                             "10.0.0.2", sport, dport, size, 4242)
    ver, ihl, tos, length, ident, ttl, proto, csum = _fields(cfg)
    # The inner header's first 12 bytes, as they go on the wire
    wire = bytes([ver << 4 | ihl, tos]) + struct.pack("!HHH", length, ident, 0) + bytes([ttl, proto]) \
        + struct.pack("!H", csum)
    assert wire == struct.pack("!HHHH", sport, dport, 8 + size, 0) + struct.pack("!I", MAGIC)
    assert "eth(da=02:00:00:00:00:02, sa=02:00:00:00:00:01)" in cfg
    assert "ipv4(sa=10.0.0.1, da=10.0.0.2, ttl=64, df, id=0, proto=17)" in cfg
    # seq: the inner saddr, from 0, +1 per packet; send_ns: inner daddr and c32, zero; then run_id
    assert "sa=0.0.0.0, sa=dinc(), da=0.0.0.0)" in cfg
    assert "c32(0), c16(4242)" in cfg
    if size > 18:
        assert "fill(0x00, %d)" % (size - 18) in cfg
    else:
        assert "fill" not in cfg
    assert cfg.count("{") == cfg.count("}") == 1


def test_parse_trafgen_stats():
    assert trafgen.parse_trafgen_stats(FINISHED) == {
        "packets": 2500, "bytes": 150000, "per_cpu": [{"cpu": 0, "packets": 2500, "s": 2.003857}]}
    assert trafgen.parse_trafgen_stats(INTERRUPTED)["packets"] == 937378
    assert trafgen.parse_trafgen_stats("Running! Hang up with ^C!\n") == {"packets": None, "bytes": None,
                                                                      "per_cpu": []}


def test_argv_paces_one_process_and_leaves_the_host_alone():
    argv = trafgen.trafgen_argv("/usr/sbin/trafgen", "eth1", "/tmp/x.cfg", 1000, 500)
    assert argv == ["/usr/sbin/trafgen", "--dev", "eth1", "--conf", "/tmp/x.cfg", "--num", "1000",
                    "--rate", "500pps", "--cpus", "1", "--no-sock-mem", "--notouch-irq"]


BASE = ["--dst", "127.0.0.1", "--port", "9", "--pps", "10", "--size", "18", "--duration", "0.1", "--run-id", "1"]


@linux_only
@pytest.mark.parametrize("args, name", [
    (["--backend", "trafgen", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--pattern", "burst"],
     "--pattern"),
    (["--backend", "trafgen", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--threads", "2"], "--threads"),
    (["--backend", "trafgen", "--dst-mac", "02:00:00:00:00:01"], "--iface"),
    (["--backend", "trafgen", "--iface", "lo"], "--dst-mac"),
    (["--trafgen", "/bin/true"], "--trafgen"),
    (["--backend", "trafgen", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--trafgen",
      "/nonexistent/trafgen"], "trafgen"),
    (["--backend", "nope"], "--backend"),
])
def test_bad_trafgen_arguments_exit_2(args, name):
    p = subprocess.run([sys.executable, *SEND] + BASE + args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60, universal_newlines=True)
    assert p.returncode == 2, p.stderr
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1, p.stderr
    assert name in p.stderr


# A stand-in for trafgen: reads --num, --rate and --conf, records its command line and
# configuration, says "Running!", "sends" each second's packets at the start of that
# second (as trafgen 0.6.8 does), and prints trafgen's summary at the end or on SIGINT.
FAKE = r'''#!PYTHON
import json, os, signal, sys, time
if sys.argv[1:] == ["--version"]:
    print("trafgen 0.6.8 (fake), Git id: (none)"); sys.exit(0)
a = sys.argv[1:]
num = int(a[a.index("--num") + 1]); rate = int(a[a.index("--rate") + 1][:-3])
conf = open(a[a.index("--conf") + 1]).read()
with open(os.environ["FAKE_TRAFGEN_LOG"], "a") as f:
    f.write(json.dumps({"argv": a, "conf": conf, "pgid": os.getpgid(0) == os.getpid()}) + "\n")
sent = [0]
def summary(*_):
    print("\n\n%12d packets outgoing\n%12d bytes outgoing\n%12d sec, %d usec on CPU0 (%d packets)"
          % (sent[0], sent[0] * 60, 0, 1, sent[0]), flush=True)
    os._exit(0)
signal.signal(signal.SIGINT, summary)
if os.environ.get("FAKE_TRAFGEN_FAIL") == "before":
    sys.stderr.write("Cannot find device!\n"); sys.exit(1)
print("     1 packets to schedule\n    60 bytes in total\nRunning! Hang up with ^C!", flush=True)
t0 = time.monotonic(); s = 0
if os.environ.get("FAKE_TRAFGEN_FAIL") == "after":
    time.sleep(0.2); sys.stderr.write("sendto failed!\n"); sys.exit(1)
while sent[0] < num:
    sent[0] = min(num, sent[0] + min(rate, int(os.environ.get("FAKE_TRAFGEN_CAP", rate))))
    s += 1
    if sent[0] < num:
        time.sleep(max(0, t0 + s - time.monotonic()))
summary()
'''


@pytest.fixture
def fake_trafgen(tmp_path):
    path = tmp_path / "trafgen"
    path.write_text(FAKE.replace("PYTHON", sys.executable))
    path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    def run(*args, timeout=60):
        env = dict(os.environ, FAKE_TRAFGEN_LOG=str(log))
        cmd = [sys.executable, *SEND, "--dst", "127.0.0.1", "--port", "12345", "--run-id", "10",
               "--backend", "trafgen", "--trafgen", str(path), "--iface", "lo", "--dst-mac", "02:00:00:00:00:02",
               "--progress-s", "0", "--size", "18"] + [str(a) for a in args]
        t0 = time.monotonic()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           universal_newlines=True, env=env)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return p, calls, time.monotonic() - t0

    return run


@linux_only
def test_warmup_then_measured_runs_and_report_shape(fake_trafgen):
    p, calls, _ = fake_trafgen("--pps", 500, "--duration", 1.5, "--warmup-s", 0.5, "--warmup-run-id", 12)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    # Two trafgen runs: the warm-up's (its run id, its packets) then the measured one.
    assert [c["argv"][c["argv"].index("--num") + 1] for c in calls] == ["250", "750"]
    assert ["c16(12)" in calls[0]["conf"], "c16(10)" in calls[1]["conf"]] == [True, True]
    assert all(c["pgid"] for c in calls)  # its own process group: SIGINT reaches its sender too
    assert out["backend"] == "trafgen" and out["send_call"] == "trafgen" and out["send_path"] == "packet"
    assert (out["scheduled"], out["sent"], out["not_offered"], out["window_s"]) == (750, 750, 0, 1.5)
    assert out["achieved_pps"] == 500.0 and out["rate_sustained"] is True and out["interrupted"] is False
    w = out["warmup"]
    assert (w["run_id"], w["scheduled"], w["sent"], w["not_offered"]) == (12, 250, 250, 0)
    assert 0 <= w["gap_to_measured_s"] < 0.5
    assert w["trafgen"]["exit_status"] == 0 and w["trafgen"]["stats"]["packets"] == 250
    assert out["start_monotonic_ns"] - w["start_monotonic_ns"] >= 500_000_000
    assert len(out["sent_per_s"]) == 1  # one whole second in 1.5 s (from lo's tx counter here)
    assert out["send_ns"].startswith("0 in every packet")
    # every key of the Python generator's report is there
    py = set(json.loads(subprocess.run(
        [sys.executable, *SEND, "--dst", "127.0.0.1", "--port", "9", "--pps", "100", "--size", "18",
         "--duration", "0.05", "--run-id", "1", "--progress-s", "0"],
        stdout=subprocess.PIPE, timeout=60, universal_newlines=True).stdout))
    assert py <= set(out)
    assert not [c for c in os.listdir("/tmp") if c.startswith(PYZ.name + ".trafgen-")]  # configs removed


@linux_only
def test_a_rate_trafgen_cannot_reach_is_cut_at_the_duration(fake_trafgen, monkeypatch):
    # The stand-in sends at most 600 packets a second: asked for 1000 pps it falls
    # behind, and is stopped at the window's end (1.5 s), not when its --num is done.
    monkeypatch.setenv("FAKE_TRAFGEN_CAP", "600")
    p, calls, wall = fake_trafgen("--pps", 1000, "--duration", 1.5)
    out = json.loads(p.stdout)
    assert p.returncode == 0, p.stderr
    assert (out["scheduled"], out["sent"], out["not_offered"]) == (1500, 1200, 300)
    assert out["rate_sustained"] is False and out["interrupted"] is False and out["window_s"] == 1.5
    assert out["achieved_pps"] == 800.0
    assert out["trafgen"]["measured"]["stopped_by_sigint"] is True
    assert 1.5 <= out["elapsed_s"] < 1.5 + 0.2
    assert wall < 1.5 + 2.0


@linux_only
def test_sigterm_stops_trafgen_and_still_reports(fake_trafgen, tmp_path):
    path = tmp_path / "trafgen"
    path.write_text(FAKE.replace("PYTHON", sys.executable))
    path.chmod(0o755)
    env = dict(os.environ, FAKE_TRAFGEN_LOG=str(tmp_path / "log"))
    cmd = [sys.executable, *SEND, "--dst", "127.0.0.1", "--port", "12345", "--run-id", "10", "--backend",
           "trafgen", "--trafgen", str(path), "--iface", "lo", "--dst-mac", "02:00:00:00:00:02", "--progress-s",
           "0", "--size", "18", "--pps", "100", "--duration", "30"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
    time.sleep(1.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert time.monotonic() - t0 < 3
    assert p.returncode == 128 + signal.SIGTERM, err
    r = json.loads(out)
    assert r["interrupted"] is True and r["sent"] in (100, 200) and 0.5 < r["window_s"] < 2.5
    assert r["trafgen"]["measured"]["stopped_by_sigint"] is True


@linux_only
@pytest.mark.parametrize("when, said", [("before", "before sending: Cannot find device!"),
                                        ("after", "while sending: sendto failed!")])
def test_trafgen_failing_fails_the_run_with_its_words(fake_trafgen, monkeypatch, when, said):
    monkeypatch.setenv("FAKE_TRAFGEN_FAIL", when)
    p, calls, _ = fake_trafgen("--pps", 100, "--duration", 1, "--warmup-s", 0.5, "--warmup-run-id", 12)
    assert p.returncode == 1
    assert "xdplab-source send: error: trafgen exited with 1 %s" % said in p.stderr
    out = json.loads(p.stdout)  # the report still comes
    assert out["interrupted"] is True and out["sent"] == 0 and len(calls) == 1  # no measured run after it
