"""Tests for the generator (workflow/xdplab/sourcehost/, `xdplab-source.pyz send`), run
from dist/xdplab-source.pyz as the source host runs it, as a real subprocess sending to 127.0.0.1.

Counts are compared exactly; speeds are not asserted (CI machines are shared and noisy).
"""

import ast
import json
import os
import pathlib
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "workflow" / "xdplab" / "sourcehost"
sys.path.insert(0, str(REPO / "workflow"))
from xdplab.source import source_pyz  # noqa: E402
from xdplab.sourcehost import cli, control, counters, sockets, wire  # noqa: E402
from xdplab.sourcehost import sender as sender_mod  # noqa: E402
from xdplab.sourcehost import stream as paced  # noqa: E402  (the hot loop; `stream` is a test's loop variable)

# The file the controller uploads (built with `make source` when older than the package).
SEND = [str(source_pyz()), "send"]
HEADER_FILE = REPO / "bpf" / "xdplab.h"


PYTHONS = [pytest.param(sys.executable, id="venv-python")]
if os.path.exists("/usr/bin/python3"):
    PYTHONS.append(pytest.param("/usr/bin/python3", id="system-python"))

JSON_KEYS = {
    "generator", "run_id", "dst", "port", "target_pps", "payload_bytes", "duration_s", "threads",
    "scheduled", "sent", "send_errors", "send_error_kinds", "failed_seqs", "elapsed_s",
    "achieved_pps", "start_monotonic_ns", "end_monotonic_ns", "start_unix_ns", "end_unix_ns",
    "max_lag_us", "interrupted", "boot_id", "hostname", "python", "per_thread",
    "window_s", "not_offered", "rate_sustained", "max_burst", "pattern", "burst_size", "seed",
    "send_path", "send_path_requested", "send_path_why", "send_call", "batch_max", "source_counters",
    "refused_retries", "sent_per_s", "warmup", "backend",
}
PROGRESS = re.compile(r"^progress t=\d+\.\ds sent=\d+ pps=\d+$")


class Receiver:
    """A UDP socket on 127.0.0.1 read by a thread, so a small default rmem_max cannot drop packets."""

    def __init__(self, addr="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((addr, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.packets = []  # (payload, source address, receiver monotonic_ns)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            try:
                data, src = self.sock.recvfrom(70000)
            except socket.timeout:
                if self._stop:
                    return
                continue
            self.packets.append((data, src, time.monotonic_ns()))

    def close(self):
        # Loopback delivers inside sendto(), so after the generator exits every
        # packet is already queued; the reader returns on the first idle timeout.
        self._stop = True
        self._thread.join()
        self.sock.close()
        return self.packets


def run_generator(python, rx, *extra, pps=2000, size=100, duration=1.0, threads=2, run_id=4242,
                  progress_s=None, timeout=60):
    cmd = [python, *SEND, "--dst", "127.0.0.1", "--port", str(rx.port), "--pps", str(pps),
           "--size", str(size), "--duration", str(duration), "--threads", str(threads),
           "--run-id", str(run_id)]
    if progress_s is not None:
        cmd += ["--progress-s", str(progress_s)]
    cmd += list(extra)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       universal_newlines=True)
    return p


def decode(packets):
    return [wire.HEADER.unpack_from(data, 0) + (len(data), data, src, rx_ns)
            for data, src, rx_ns in packets]


@pytest.mark.parametrize("python", PYTHONS)
def test_exact_run(python):
    rx = Receiver()
    p = run_generator(python, rx, pps=2000, size=100, duration=1.0, threads=2, run_id=4242,
                      progress_s=0.25)
    packets = rx.close()
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)

    # JSON: every field of PROTOCOL.md, and consistent with itself
    assert set(out) == JSON_KEYS
    assert out["generator"] == "xdplab-generator/1"
    assert (out["run_id"], out["dst"], out["port"]) == (4242, "127.0.0.1", rx.port)
    assert (out["target_pps"], out["payload_bytes"], out["duration_s"], out["threads"]) == (2000, 100, 1.0, 2)
    assert out["scheduled"] == 2000 and out["sent"] == 2000
    assert out["send_errors"] == 0 and out["send_error_kinds"] == {} and out["failed_seqs"] == []
    assert out["interrupted"] is False
    # Each sender's share is seq % threads; a sender may send some of its partner's share
    # (taken_over: the partner was late), so the sent add up over the senders, not each.
    assert [{k: t[k] for k in ("thread", "scheduled", "send_errors", "not_offered")}
            for t in out["per_thread"]] == [
        {"thread": 0, "scheduled": 1000, "send_errors": 0, "not_offered": 0},
        {"thread": 1, "scheduled": 1000, "send_errors": 0, "not_offered": 0},
    ]
    assert sum(t["sent"] for t in out["per_thread"]) == 2000
    assert 0 < out["elapsed_s"] <= 1.0 + paced.END_GRACE_S
    # sent / window, not sent / (time of the last send): 2000 packets in 1 s is 2000 pps.
    assert (out["window_s"], out["achieved_pps"], out["not_offered"]) == (1.0, 2000.0, 0)
    assert out["rate_sustained"] is True
    assert (out["pattern"], out["send_path"], out["burst_size"], out["seed"]) == ("constant", "udp", None, None)
    assert out["end_monotonic_ns"] > out["start_monotonic_ns"]
    assert out["end_unix_ns"] - out["start_unix_ns"] == pytest.approx(
        out["end_monotonic_ns"] - out["start_monotonic_ns"], abs=1000)
    assert out["max_lag_us"] >= 0
    # one whole second; a packet late into the 10 ms grace after it is not in it
    assert len(out["sent_per_s"]) == 1 and 1900 <= out["sent_per_s"][0] <= 2000 and out["warmup"] is None
    boot_id = pathlib.Path("/proc/sys/kernel/random/boot_id")
    assert out["boot_id"] == (boot_id.read_text().strip() if boot_id.exists() else None)
    assert out["hostname"] == socket.gethostname()
    assert re.match(r"^\d+\.\d+\.\d+", out["python"])

    # What arrived: exactly the scheduled packets, each seq once, headers intact
    assert len(packets) == out["sent"] == 2000
    rows = decode(packets)
    assert sorted(r[1] for r in rows) == list(range(2000))
    for magic, seq, send_ns, run_id, length, data, src, rx_ns in rows:
        assert magic == wire.MAGIC == 0x58444C42
        assert run_id == 4242
        assert length == 100
        assert data[18:] == bytes(82)
        # send_ns is CLOCK_MONOTONIC just before the send: inside the run's window
        # (1 ms slack for the perf_counter -> monotonic mapping) and before arrival.
        assert out["start_monotonic_ns"] - 1_000_000 <= send_ns <= out["end_monotonic_ns"] + 1_000_000
        assert send_ns <= rx_ns
    # Each sender sends through its own socket, in seq and send-time order; a share's
    # packets (seq % threads) may go through either (a late partner's are taken over).
    by_port = {}
    for r in rows:
        by_port.setdefault(r[6][1], []).append(r)
    assert len(by_port) == 2
    for mine in by_port.values():
        assert [r[1] for r in mine] == sorted(r[1] for r in mine)
        assert [r[2] for r in mine] == sorted(r[2] for r in mine)

    lines = p.stderr.splitlines()
    assert lines and all(PROGRESS.match(line) for line in lines), p.stderr
    assert max(int(re.search(r"sent=(\d+)", line).group(1)) for line in lines) <= 2000


@pytest.mark.parametrize("size", [18, 1458, 8972])
def test_payload_sizes(size):
    rx = Receiver()
    p = run_generator(sys.executable, rx, pps=1000, size=size, duration=0.2, threads=1, run_id=7,
                      progress_s=0)
    packets = rx.close()
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # --progress-s 0: no progress lines
    out = json.loads(p.stdout)
    assert out["scheduled"] == out["sent"] == len(packets) == 200
    assert {len(d) for d, _, _ in packets} == {size}
    assert sorted(wire.HEADER.unpack_from(d, 0)[1] for d, _, _ in packets) == list(range(200))


def test_streams_when_threads_do_not_divide_the_count():
    rx = Receiver()
    p = run_generator(sys.executable, rx, pps=1000, size=18, duration=0.0071, threads=3, run_id=0)
    packets = rx.close()
    out = json.loads(p.stdout)
    assert out["scheduled"] == 8  # seqs i with i/pps < duration: 0..7
    assert [t["scheduled"] for t in out["per_thread"]] == [3, 3, 2]
    assert sorted(wire.HEADER.unpack_from(d, 0)[1] for d, _, _ in packets) == list(range(8))


def test_src_binds_the_source_address():
    rx = Receiver()
    p = run_generator(sys.executable, rx, "--src", "127.0.0.2", pps=1000, duration=0.05, threads=1)
    packets = rx.close()
    assert p.returncode == 0, p.stderr
    assert len(packets) == 50
    assert {src[0] for _, src, _ in packets} == {"127.0.0.2"}


def test_send_errors_are_counted_not_fatal():
    # 255.255.255.255 without SO_BROADCAST: every sendto fails with EACCES.
    cmd = [sys.executable, *SEND, "--dst", "255.255.255.255", "--port", "9", "--pps", "1000",
           "--size", "18", "--duration", "0.05", "--threads", "2", "--run-id", "1", "--progress-s", "0"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       universal_newlines=True)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["scheduled"] == 50 and out["sent"] == 0 and out["send_errors"] == 50
    assert out["send_error_kinds"] == {"EACCES": 50}
    assert out["failed_seqs"] == list(range(50))
    assert sum(t["send_errors"] for t in out["per_thread"]) == 50


def test_port_unreachable_does_not_stop_sends():
    # Nobody listens: the kernel answers with ICMP port-unreachable.  A connected
    # UDP socket would fail every send after one with ECONNREFUSED; ours must not.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cmd = [sys.executable, *SEND, "--dst", "127.0.0.1", "--port", str(port), "--pps", "2000",
           "--size", "18", "--duration", "0.2", "--threads", "2", "--run-id", "1", "--progress-s", "0"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       universal_newlines=True)
    out = json.loads(p.stdout)
    assert (out["scheduled"], out["sent"], out["send_errors"]) == (400, 400, 0)
    assert out["refused_retries"] > 0  # the ICMP errors came, and cost no packet


@pytest.mark.parametrize("args, name", [
    (["--size", "17"], "--size"),
    (["--size", "65508"], "--size"),
    (["--size", "big"], "--size"),
    (["--port", "0"], "--port"),
    (["--port", "65536"], "--port"),
    (["--pps", "0"], "--pps"),
    (["--pps", "1e4"], "--pps"),
    (["--duration", "0"], "--duration"),
    (["--duration", "nan"], "--duration"),
    (["--threads", "0"], "--threads"),
    (["--run-id", "65536"], "--run-id"),
    (["--run-id", "-1"], "--run-id"),
    (["--dst", "example.invalid"], "--dst"),
    (["--dst", "10.0.0.300"], "--dst"),
    (["--src", "nowhere"], "--src"),
    (["--progress-s", "-1"], "--progress-s"),
    (["--progress-s", "2"], "--progress-s"),   # at most 1 s: a broken SSH session shows quickly
    (["--pps", "1000000000", "--duration", "10"], "seq is a u32"),
])
def test_bad_arguments_exit_2_naming_the_argument(args, name):
    base = {"--dst": "127.0.0.1", "--port": "9", "--pps": "10", "--size": "18", "--duration": "0.1",
            "--run-id": "1"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    cmd = [sys.executable, *SEND] + [x for kv in base.items() for x in kv]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       universal_newlines=True)
    assert p.returncode == 2
    assert p.stdout == ""
    assert len(p.stderr.splitlines()) == 1, p.stderr
    assert name in p.stderr


def test_missing_required_argument():
    p = subprocess.run([sys.executable, *SEND, "--dst", "127.0.0.1"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60, universal_newlines=True)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "--port" in p.stderr


def test_unbindable_src_exits_2():
    p = subprocess.run([sys.executable, *SEND, "--dst", "127.0.0.1", "--port", "9", "--pps", "10",
                        "--size", "18", "--duration", "0.1", "--run-id", "1", "--src", "192.0.2.77"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, universal_newlines=True)
    assert p.returncode == 2 and "--src" in p.stderr and p.stdout == ""


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("signame, pps", [("SIGTERM", 1000), ("SIGINT", 1000), ("SIGHUP", 1000),
                                          ("SIGTERM", 1)])
def test_signal_stops_and_still_reports(python, signame, pps):
    rx = Receiver()
    cmd = [python, *SEND, "--dst", "127.0.0.1", "--port", str(rx.port), "--pps", str(pps),
           "--size", "64", "--duration", "60", "--threads", "2", "--run-id", "9", "--progress-s", "0.1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        while True:  # wait until sending has begun
            line = proc.stderr.readline()
            assert PROGRESS.match(line.strip()), line
            if int(re.search(r"sent=(\d+)", line).group(1)) > 0:
                break
        sig = getattr(signal, signame)
        proc.send_signal(sig)
        # "Promptly": a generous bound for a loaded machine; the run itself would take 60 s.
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    packets = rx.close()
    assert proc.returncode == 128 + sig, err
    res = json.loads(out)
    assert set(res) == JSON_KEYS
    assert res["interrupted"] is True
    assert res["scheduled"] == pps * 60
    assert 0 < res["sent"] < res["scheduled"]
    assert res["sent"] == sum(t["sent"] for t in res["per_thread"])
    assert len(packets) == res["sent"]
    assert len({wire.HEADER.unpack_from(d, 0)[1] for d, _, _ in packets}) == res["sent"]


def _start_and_wait_for_traffic(python, rx, progress_s):
    """The generator on pipes, sending for (at most) 60 s; returns once packets arrive."""
    cmd = [python, *SEND, "--dst", "127.0.0.1", "--port", str(rx.port), "--pps", "1000",
           "--size", "64", "--duration", "60", "--threads", "2", "--run-id", "9",
           "--progress-s", str(progress_s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    deadline = time.monotonic() + 30
    while not rx.packets:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no packet within 30 s"
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("progress_s", [0.1, 0])   # 0: no progress writes, only the poll check
def test_controller_gone_stops_sending(python, progress_s):
    # What a broken SSH session looks like to the generator: stdout and stderr
    # lose their reader; no signal comes.  It must stop and exit 3.
    rx = Receiver()
    proc = _start_and_wait_for_traffic(python, rx, progress_s)
    try:
        proc.stdout.close()
        proc.stderr.close()
        # Generous: the run itself would last 60 s.
        assert proc.wait(timeout=15) == control.EXIT_CONTROLLER_GONE == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Loopback delivers inside sendto(): what the generator sent is queued by
    # now.  Nothing more may come: no thread of it is left sending.
    at_exit = len(rx.packets)
    time.sleep(0.5)
    packets = rx.close()
    assert len(packets) == at_exit
    assert 0 < at_exit < 60000


def test_stderr_gone_still_reports_on_stdout():
    rx = Receiver()
    proc = _start_and_wait_for_traffic(sys.executable, rx, 0.1)
    try:
        proc.stderr.close()
        out = proc.stdout.read()
        assert proc.wait(timeout=15) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    packets = rx.close()
    res = json.loads(out)
    assert res["interrupted"] is True
    assert 0 < res["sent"] < res["scheduled"] == 60000
    assert len(packets) == res["sent"]


def test_no_client_value_reaches_a_shell():
    # The agent takes values from REST clients, the generator from the command
    # line the controller builds: neither may hand anything to a shell.
    agent = REPO / "workflow" / "xdplab" / "agent"
    for path in (*sorted(PACKAGE.glob("*.py")), *sorted(agent.glob("*.py"))):
        text = path.read_text()
        for needle in ("shell=True", "os.system", "os.popen", "subprocess.getoutput",
                       "subprocess.getstatusoutput", "commands.getoutput"):
            assert needle not in text, "%s uses %s" % (path.name, needle)
        # Also spelled with spaces: shell = True
        assert not re.search(r"shell\s*=\s*True", text), path.name


def _header_defines():
    text = HEADER_FILE.read_text()
    magic = re.search(r"^#define\s+XDPLAB_MAGIC\s+(0x[0-9a-fA-F]+)\b", text, re.M)
    hdr_len = re.search(r"^#define\s+XDPLAB_HDR_LEN\s+(\d+)\b", text, re.M)
    assert magic and hdr_len, "bpf/xdplab.h no longer defines XDPLAB_MAGIC and XDPLAB_HDR_LEN"
    body = re.search(r"struct\s+xdplab_payload_hdr\s*\{(.*?)\}", text, re.S)
    assert body, "bpf/xdplab.h no longer defines struct xdplab_payload_hdr"
    fields = re.findall(r"__(be|u)(\d+)\s+(\w+)\s*;", body.group(1))
    return int(magic.group(1), 16), int(hdr_len.group(1)), fields


def test_header_agrees_with_bpf_header():
    magic, hdr_len, fields = _header_defines()
    assert wire.MAGIC == magic
    assert wire.HEADER.size == wire.HEADER_LEN == hdr_len
    # Field order, widths and byte order of struct xdplab_payload_hdr.
    assert [name for _, _, name in fields] == ["magic", "seq", "send_ns", "run_id"]
    assert all(kind == "be" for kind, _, _ in fields)
    codes = {8: "B", 16: "H", 32: "I", 64: "Q"}
    assert wire.HEADER.format in ("!" + "".join(codes[int(bits)] for _, bits, _ in fields),
                                 b"!" + "".join(codes[int(bits)] for _, bits, _ in fields).encode())
    assert wire.HEADER.pack(wire.MAGIC, 1, 2, 3)[:4] == b"XDLB"


@pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names needs Python 3.10")
def test_imports_only_the_standard_library():
    names = set()
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                # beside the standard library, only its own modules (`from . import ...`)
                assert node.level in (0, 1), "%s must not import from outside sourcehost/" % path.name
                if node.level == 0:
                    names.add(node.module.split(".")[0])
        assert "__import__" not in path.read_text(), path.name
    assert names, "no imports found: the test is not looking at the right files"
    assert names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)
    assert "importlib" not in names


def test_parses_the_protocol_example():
    a = cli.parse_args(["--dst", "10.201.0.2", "--port", "12345", "--pps", "10000", "--size", "1458",
                        "--duration", "5", "--threads", "2", "--run-id", "4242", "--src", "10.201.0.1",
                        "--progress-s", "1"])
    assert (a.dst, a.port, a.pps, a.size, a.duration, a.threads, a.run_id, a.src, a.progress_s,
            a.scheduled) == ("10.201.0.2", 12345, 10000, 1458, 5.0, 2, 4242, "10.201.0.1", 1.0, 50000)
    assert cli.parse_args(["--dst", "10.0.0.1", "--port", "1", "--pps", "10000", "--size", "18",
                           "--duration", "0.3", "--run-id", "0"]).scheduled == 3000


# ---------------------------------------------------------------- pacing, no stretching, patterns

def _sink():
    """A UDP socket nobody reads: the kernel drops what overflows, the generator is not slowed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def _run_json(*args, timeout=60):
    cmd = [sys.executable, *SEND, "--dst", "127.0.0.1", "--run-id", "3", "--progress-s", "0"]
    cmd += [str(a) for a in args]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       universal_newlines=True)
    wall = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), wall


@pytest.mark.parametrize("pps, duration", [(1000, 2), (10000, 2), (100000, 1)])
def test_achieved_rate_has_no_off_by_one(pps, duration):
    sink = _sink()
    try:
        out, _ = _run_json("--port", sink.getsockname()[1], "--pps", pps, "--size", 18,
                           "--duration", duration, "--threads", 1)
    finally:
        sink.close()
    assert out["window_s"] == duration
    assert out["scheduled"] == pps * duration
    assert out["not_offered"] == out["scheduled"] - out["sent"] - out["send_errors"]
    assert out["achieved_pps"] == pytest.approx(out["sent"] / out["window_s"], rel=1e-9)
    assert out["rate_sustained"] == (out["achieved_pps"] >= pps * 0.999)
    if pps <= 10000:
        assert out["rate_sustained"], out  # a busy shared machine may not hold 100k; 10k it must
    if out["rate_sustained"]:
        assert abs(out["achieved_pps"] - pps) / pps <= 1e-4, out


def test_too_high_a_rate_does_not_stretch_the_trial():
    sink = _sink()
    try:
        out, wall = _run_json("--port", sink.getsockname()[1], "--pps", 3000000, "--size", 18,
                              "--duration", 3, "--threads", 2)
    finally:
        sink.close()
    assert out["scheduled"] == 9000000
    assert out["rate_sustained"] is False and out["interrupted"] is False
    assert out["window_s"] == 3.0
    assert out["not_offered"] == out["scheduled"] - out["sent"] - out["send_errors"] > 0
    assert out["achieved_pps"] == pytest.approx(out["sent"] / 3.0, abs=0.0005)  # rounded to 3 decimals
    # The issue's own bound: the sending ends within a second of its duration.
    assert (out["end_monotonic_ns"] - out["start_monotonic_ns"]) / 1e9 < 3.0 + 1.0
    assert wall < 3.0 + 1.0 + 2.0  # plus interpreter start and counter reads, generously
    assert out["max_burst"] > 1000  # it never caught up


def _send_times(packets):
    rows = sorted(wire.HEADER.unpack_from(d, 0)[1:3] for d, _, _ in packets)  # (seq, send_ns)
    return [seq for seq, _ in rows], [ns for _, ns in rows]


def test_burst_pattern_keeps_the_mean_rate():
    rx = Receiver()
    p = run_generator(sys.executable, rx, "--pattern", "burst", "--burst-size", "10", pps=5000, size=18,
                      duration=1.0, threads=1, progress_s=0)
    packets = rx.close()
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["pattern"], out["burst_size"], out["seed"]) == ("burst", 10, None)
    assert out["sent"] == out["scheduled"] == len(packets) == 5000
    assert out["achieved_pps"] == 5000.0 and out["rate_sustained"] is True
    assert out["max_burst"] >= 10
    seqs, ns = _send_times(packets)
    assert seqs == list(range(5000))
    # Bursts of 10 every 2 ms: inside a burst the packets go back to back, between bursts 2 ms pass.
    starts = [ns[i] for i in range(0, 5000, 10)]
    between = sorted(b - a for a, b in zip(starts, starts[1:]))
    assert between[len(between) // 2] == pytest.approx(2e6, rel=0.1)
    spread = sorted(ns[i + 9] - ns[i] for i in range(0, 5000, 10))
    assert spread[len(spread) // 2] < 0.5e6


def test_poisson_pattern_keeps_the_mean_rate_and_records_the_seed():
    rx = Receiver()
    p = run_generator(sys.executable, rx, "--pattern", "poisson", "--seed", "7", pps=5000, size=18,
                      duration=1.0, threads=2, progress_s=0)
    packets = rx.close()
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["pattern"], out["seed"], out["burst_size"]) == ("poisson", 7, None)
    assert out["scheduled"] == 5000
    assert out["sent"] == len(packets) and out["not_offered"] == 5000 - out["sent"]
    assert out["rate_sustained"] is True and abs(out["achieved_pps"] - 5000) <= 5
    # Exponential gaps, by their quantiles (a descheduled sender's one long stall would
    # throw a standard deviation off, not these): an exponential distribution of mean m has
    # its median at m ln 2 and its 90th percentile at m ln 10; a constant pattern's are m.
    _, ns = _send_times(packets)
    gaps = sorted(b - a for a, b in zip(sorted(ns), sorted(ns)[1:]))
    ideal = 200e3
    assert 0.55 < gaps[len(gaps) // 2] / ideal < 0.85, gaps[len(gaps) // 2]
    assert 1.8 < gaps[len(gaps) * 9 // 10] / ideal < 2.9, gaps[len(gaps) * 9 // 10]


def test_poisson_without_seed_draws_and_records_one():
    sink = _sink()
    try:
        out, _ = _run_json("--port", sink.getsockname()[1], "--pps", 1000, "--size", 18, "--duration", 0.1,
                           "--pattern", "poisson")
    finally:
        sink.close()
    assert isinstance(out["seed"], int) and out["sent"] + out["not_offered"] == 100


def test_constant_pattern_is_smooth():
    rx = Receiver()
    p = run_generator(sys.executable, rx, pps=2000, size=18, duration=0.5, threads=1, progress_s=0)
    packets = rx.close()
    assert p.returncode == 0
    out = json.loads(p.stdout)
    assert out["pattern"] == "constant" and out["burst_size"] is None and out["seed"] is None
    _, ns = _send_times(packets)
    gaps = sorted(b - a for a, b in zip(ns, ns[1:]))
    assert gaps[len(gaps) // 2] == pytest.approx(500e3, rel=0.05)


def test_senders_die_with_the_main_process():
    # SIGKILL leaves no handler to run: the sender processes must still stop (PDEATHSIG).
    rx = Receiver()
    proc = _start_and_wait_for_traffic(sys.executable, rx, 0.1)
    try:
        proc.kill()
        proc.wait(timeout=15)
        time.sleep(0.5)  # PDEATHSIG is delivered at once; a sleeping sender wakes within 0.1 s
        at = len(rx.packets)
        time.sleep(0.5)
        assert len(rx.packets) == at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rx.close()


# ---------------------------------------------------------------- source counters (parsing, shape)

def test_source_counters_shape():
    sink = _sink()
    try:
        out, _ = _run_json("--port", sink.getsockname()[1], "--pps", 1000, "--size", 18, "--duration", 0.2,
                           "--threads", 2)
    finally:
        sink.close()
    sc = out["source_counters"]
    assert set(sc) == {"iface", "before", "at_window_start", "after", "delta", "warmup_delta", "window_delta",
                       "window_start", "method", "names"}
    assert sc["iface"] is None
    # Without a warm-up the window's counts are the run's.
    assert sc["window_delta"] == sc["delta"] and sc["warmup_delta"] is None and sc["at_window_start"] is None
    assert set(sc["delta"]) == set(sc["before"]) == set(sc["after"]) == set(sc["names"]) == set(counters.COUNTER_KEYS)
    assert sc["names"]["udp_sndbuf_errors"] == "/proc/net/snmp Udp SndbufErrors"
    if sys.platform.startswith("linux"):
        # Namespace-wide: other programs' datagrams count too, ours at least.
        assert sc["delta"]["udp_out_datagrams"] >= out["sent"] == 200
        assert all(sc["delta"][k] is None for k in counters.COUNTER_KEYS if k.startswith(("nic_", "qdisc_")))


def test_source_counters_are_split_at_the_windows_start():
    """With a warm-up the counters are read at the window's start too: each phase's delta
    is its own, and the two add up to the whole run's."""
    sink = _sink()
    try:
        out, _ = _run_json("--port", sink.getsockname()[1], "--pps", 2000, "--size", 18, "--duration", 0.3,
                           "--threads", 2, "--warmup-s", 0.2, "--warmup-run-id", 9)
    finally:
        sink.close()
    sc = out["source_counters"]
    assert set(sc["at_window_start"]) == set(counters.COUNTER_KEYS)
    assert set(sc["window_start"]) == {"read_late_s", "qdisc_backlog_packets", "sent_by_then"}
    assert 400 <= sc["window_start"]["sent_by_then"] <= 1000
    for k in counters.COUNTER_KEYS:
        parts = (sc["warmup_delta"][k], sc["window_delta"][k])
        assert (None in parts and sc["delta"][k] is None) or sum(parts) == sc["delta"][k], k
    if sys.platform.startswith("linux"):
        # Namespace-wide, so at least ours: the warm-up's 400 before, the window's 600 after,
        # but for the window's packets sent while the counters were being read (read_late_s).
        late = sc["window_start"]["read_late_s"]
        assert 0 <= late < 0.1
        assert sc["warmup_delta"]["udp_out_datagrams"] >= out["warmup"]["sent"] == 400
        assert sc["window_delta"]["udp_out_datagrams"] >= out["sent"] - (2000 * late + 2) and out["sent"] == 600
        assert "measured window's start" in sc["method"]


def test_parse_snmp_and_arp_cache_and_tc():
    snmp = ("Ip: Forwarding DefaultTTL OutDiscards OutNoRoutes\nIp: 1 64 7 2\n"
            "Udp: InDatagrams OutDatagrams SndbufErrors\nUdp: 5 900 3\n")
    parsed = counters.parse_snmp(snmp)
    assert parsed[("Ip", "OutDiscards")] == 7 and parsed[("Udp", "SndbufErrors")] == 3
    arp = ("entries  allocs unresolved_discards table_fulls\n00000002 0000000a 0000000f 00000000\n"
           "00000002 0000000a 00000001 00000000\n")
    assert counters.parse_arp_cache(arp) == 16
    tc = json.dumps([{"kind": "mq", "root": True, "drops": 10, "requeues": 1, "qlen": 2},
                     {"kind": "fq_codel", "parent": "1:1", "drops": 6, "requeues": 1, "qlen": 1},
                     {"kind": "fq_codel", "parent": "1:2", "drops": 4, "requeues": 0, "qlen": 1},
                     {"kind": "clsact", "parent": "ffff:fff1", "drops": 0}])
    assert counters.parse_tc_qdiscs(tc) == (10, 1, 2)  # the root's, which already includes its children's


def test_frame_checksum_and_layout():
    frame = wire.build_frame(b"\x02" * 6, b"\x04" * 6, "10.203.0.1", "10.203.0.2", 40000, 12345, 18)
    assert len(frame) == 60 and frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    words = struct.unpack("!10H", ip)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF  # a correct header sums to all ones
    assert struct.unpack("!HHHH", frame[34:42]) == (40000, 12345, 26, 0)
    assert struct.unpack("!H", ip[2:4])[0] == 46


@pytest.mark.parametrize("args, name", [
    (["--burst-size", "4"], "--burst-size"),
    (["--pattern", "burst", "--burst-size", "0"], "--burst-size"),
    (["--seed", "1"], "--seed"),
    (["--pattern", "zigzag"], "--pattern"),
    (["--send-path", "packet", "--dst-mac", "02:00:00:00:00:01"], "--iface"),
    (["--send-path", "packet", "--iface", "lo"], "--dst-mac"),
    (["--send-path", "packet", "--iface", "lo", "--dst-mac", "02:00:00:00:01"], "--dst-mac"),
    (["--dst-mac", "02:00:00:00:00:01"], "--dst-mac"),
    (["--send-path", "tcp"], "--send-path"),
    (["--iface", "a/b"], "--iface"),
    (["--warmup-s", "1"], "--warmup-run-id"),
    (["--warmup-s", "1", "--warmup-run-id", "1"], "--warmup-run-id"),   # the measured run's own
    (["--warmup-s", "1", "--warmup-run-id", "65536"], "--warmup-run-id"),
    (["--warmup-s", "-1", "--warmup-run-id", "2"], "--warmup-s"),
    (["--warmup-run-id", "2"], "--warmup-run-id"),
    (["--send-path", "packet", "--iface", "xlt-gen-nonexistent", "--dst-mac", "02:00:00:00:00:01"], "--iface"),
])
def test_new_bad_arguments_exit_2(args, name):
    cmd = [sys.executable, *SEND, "--dst", "127.0.0.1", "--port", "9", "--pps", "10", "--size", "18",
           "--duration", "0.1", "--run-id", "1"] + args
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, universal_newlines=True)
    assert p.returncode == 2, p.stderr
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1, p.stderr
    assert name in p.stderr


def test_sendto_fallback_sends_the_same_stream():
    # What macOS (or a libc without sendmmsg) runs: send_stream with no libc.
    import mmap
    rx = Receiver()
    sender = paced.Sender(1, 2, 100)
    sender.sock = sockets.open_udp(None)
    try:
        cfg = {"threads": 2, "pps": 2000, "start": time.perf_counter() + 0.01, "duration": 0.05, "run_id": 77,
               "ppid": os.getppid(), "send_path": "udp", "size": 40, "dst": "127.0.0.1", "port": rx.port,
               "pattern": "constant", "burst_size": None, "seed": None, "libc": None}
        shm = mmap.mmap(-1, 8 + 16 * 2)
        report = paced.send_stream(sender, cfg, shm, [False])
    finally:
        sender.sock.close()
    packets = rx.close()
    assert report["send_call"] == "sendto"
    assert (report["scheduled"], report["attempted"], report["send_errors"]) == (50, 50, 0)
    assert sorted(wire.HEADER.unpack_from(d, 0)[1] for d, _, _ in packets) == list(range(1, 100, 2))
    assert {len(d) for d, _, _ in packets} == {40}
    assert struct.unpack_from("=QQ", shm, 8 + 16) == (50, 0)


def test_source_is_python38_syntax():
    for path in sorted(PACKAGE.glob("*.py")):
        ast.parse(path.read_text(), feature_version=(3, 8))


def _by_run(packets):
    runs = {}
    for d, _, _ in packets:
        magic, seq, send_ns, run_id = wire.HEADER.unpack_from(d, 0)
        runs.setdefault(run_id, []).append((send_ns, seq))
    return {k: sorted(v) for k, v in runs.items()}


@pytest.mark.parametrize("pattern", [[], ["--pattern", "burst", "--burst-size", "8"],
                                     ["--pattern", "poisson", "--seed", "3"]])
def test_warmup_then_measured_on_one_schedule(pattern):
    rx = Receiver()
    p = run_generator(sys.executable, rx, "--warmup-s", "0.5", "--warmup-run-id", "9", *pattern, pps=2000,
                      size=18, duration=1.5, threads=2, run_id=8, progress_s=0)
    packets = rx.close()
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    w = out["warmup"]
    # The measured window's fields are the measured run's only.
    assert out["scheduled"] == 3000 and out["window_s"] == 1.5 and out["run_id"] == 8
    assert (w["run_id"], w["scheduled"], w["duration_s"]) == (9, 1000, 0.5)
    runs = _by_run(packets)
    assert set(runs) == {8, 9}
    # Each run's sequence numbers start at 0; the counts are exact.
    assert sorted(seq for _, seq in runs[9]) == list(range(w["sent"])) and w["send_errors"] == 0
    assert sorted(seq for _, seq in runs[8]) == list(range(out["sent"]))
    assert w["sent"] + w["not_offered"] == 1000 and out["sent"] + out["not_offered"] == 3000
    if not pattern or pattern[1] == "burst":
        assert w["sent"] == 1000 and out["sent"] == 3000
    # One schedule: the warm-up ends where the measured window begins, every warm-up
    # packet before every measured one, and no gap between them beyond the pattern's.
    assert w["end_monotonic_ns"] == out["start_monotonic_ns"] == w["start_monotonic_ns"] + 500_000_000
    last_warm, first_measured = runs[9][-1][0], runs[8][0][0]
    assert last_warm <= first_measured
    assert first_measured - last_warm < 5_000_000
    assert out["start_monotonic_ns"] - 1_000_000 <= first_measured
    # sent_per_s: whole seconds of the measured window only (1.5 s: one), its packets by send time.
    assert len(out["sent_per_s"]) == 1
    edge = out["start_monotonic_ns"] + 1_000_000_000
    assert (sum(1 for ns, _ in runs[8] if ns < edge - 20_000) <= out["sent_per_s"][0]
            <= sum(1 for ns, _ in runs[8] if ns < edge + 20_000))


def test_sent_per_s_when_the_source_cannot_keep_up():
    sink = _sink()
    try:
        out, _ = _run_json("--port", sink.getsockname()[1], "--pps", 3000000, "--size", 18, "--duration", 2,
                           "--warmup-s", 0.3, "--warmup-run-id", 2)
    finally:
        sink.close()
    assert len(out["sent_per_s"]) == 2 and all(x > 0 for x in out["sent_per_s"])
    assert out["sent"] - 100000 < sum(out["sent_per_s"]) <= out["sent"]  # the grace's packets are left out
    assert out["warmup"]["not_offered"] > 0 and out["warmup"]["sent"] > 0
    assert out["rate_sustained"] is False


@pytest.mark.parametrize("platform, iface, mac, opens, path, why", [
    ("linux", "xl-src0", b"\x02" * 6, None, "packet", "AF_PACKET socket opens"),
    ("darwin", "en0", b"\x02" * 6, None, "udp", "not Linux"),
    ("linux", None, b"\x02" * 6, None, "udp", "no --iface"),
    ("linux", "xl-src0", None, None, "udp", "no --dst-mac"),
    ("linux", "xl-src0", b"\x02" * 6, "[Errno 1] Operation not permitted", "udp", "Operation not permitted"),
])
def test_send_path_auto_takes_the_packet_path_where_it_can(platform, iface, mac, opens, path, why):
    got, reason = cli.resolve_auto(platform, iface, mac, lambda: opens)
    assert got == path and why in reason


def test_send_path_auto_without_a_next_hop_sends_udp_and_says_why():
    rx = Receiver()
    p = subprocess.run([sys.executable, *SEND, "--dst", "127.0.0.1", "--port", str(rx.port), "--pps", "100",
                        "--size", "18", "--duration", "0.1", "--run-id", "1", "--send-path", "auto",
                        "--progress-s", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       universal_newlines=True)
    rx.close()
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["send_path"], out["send_path_requested"]) == ("udp", "auto") and "--iface" in out["send_path_why"]
    assert out["sent"] == 10


class _FakeClock:
    """perf_counter, sleep and monotonic_ns on a clock that moves 1 us per reading and by
    the whole of each sleep: send_stream's schedule without real time."""

    def __init__(self, t):
        self.t = t

    def perf_counter(self):
        self.t += 1e-6
        return self.t

    def sleep(self, s):
        self.t += s

    def monotonic_ns(self):
        return int(round(self.t * 1e9))


def test_senders_interleave_on_one_schedule(monkeypatch):
    # Sender t of T sends seqs t, t+T, ... each due at start + seq/pps: its own slots are
    # T/pps apart, offset by t/pps (its share of the interval) from sender 0's, so the
    # senders' packets alternate evenly on one schedule.
    import mmap
    rx = Receiver()
    T, pps, start = 2, 1000, 100.0
    sent = []
    try:
        for t in range(T):
            fake = _FakeClock(start - 0.001)
            monkeypatch.setattr(paced.time, "perf_counter", fake.perf_counter)
            monkeypatch.setattr(paced.time, "sleep", fake.sleep)
            monkeypatch.setattr(paced.time, "monotonic_ns", fake.monotonic_ns)
            sender = paced.Sender(t, T, 10)
            sender.sock = sockets.open_udp(None)
            cfg = {"threads": T, "pps": pps, "start": start, "duration": 0.01, "run_id": 9,
                   "ppid": os.getppid(), "send_path": "udp", "size": 40, "dst": "127.0.0.1", "port": rx.port,
                   "pattern": "constant", "burst_size": None, "seed": None, "libc": None}
            try:
                report = paced.send_stream(sender, cfg, mmap.mmap(-1, 8 + 16 * T), [False])
            finally:
                sender.sock.close()
            assert (report["scheduled"], report["attempted"]) == (5, 5)
    finally:
        packets = rx.close()
    for d, _, _ in packets:
        _, seq, send_ns, _ = wire.HEADER.unpack_from(d, 0)
        sent.append((send_ns, seq))
    sent.sort()
    assert [seq for _, seq in sent] == list(range(10))
    for send_ns, seq in sent:
        due_ns = (start + seq / pps) * 1e9
        assert due_ns <= send_ns <= due_ns + 10e3, (seq, send_ns - due_ns)  # within 10 clock readings


def test_a_stalled_senders_packets_are_taken_over(monkeypatch):
    # With a shared schedule (cfg["claim"]), the senders claim packets from one "next
    # packet" in shared memory.  Sender 0 runs alone first: its partner is stalled for the
    # whole run, so sender 0 sends every packet, its own at their due time and its
    # partner's TAKEOVER_GRACE of the interval after theirs.  Sender 1 then finds nothing
    # left to claim.  Each packet is sent once, and the counts add up.
    # (At 20,000 pps a sender's next own slot is always within SPIN_S, so it watches every
    # packet; at lower rates it watches the next unclaimed one only in the SPIN_S before its own.)
    import mmap
    rx = Receiver()
    T, pps, start, n = 2, 20000, 100.0, 10
    shm = mmap.mmap(-1, sender_mod.shm_layout(T)[2])
    claim = (threading.Lock(), sender_mod.claim_offset(T))
    reports = []
    try:
        for t in range(T):
            fake = _FakeClock(start - 0.001)
            monkeypatch.setattr(paced.time, "perf_counter", fake.perf_counter)
            monkeypatch.setattr(paced.time, "sleep", fake.sleep)
            monkeypatch.setattr(paced.time, "monotonic_ns", fake.monotonic_ns)
            sender = paced.Sender(t, T, n)
            sender.sock = sockets.open_udp(None)
            cfg = {"threads": T, "pps": pps, "start": start, "duration": n / pps, "run_id": 9,
                   "ppid": os.getppid(), "send_path": "udp", "size": 40, "dst": "127.0.0.1", "port": rx.port,
                   "pattern": "constant", "burst_size": None, "seed": None, "libc": None, "claim": claim}
            try:
                reports.append(paced.send_stream(sender, cfg, shm, [False]))
            finally:
                sender.sock.close()
    finally:
        packets = rx.close()
    assert [(r["scheduled"], r["attempted"], r["taken_over"]) for r in reports] == [(5, 10, 5), (5, 0, 0)]
    assert struct.unpack_from("=Q", shm, sender_mod.claim_offset(T))[0] == n  # every packet claimed
    sent = sorted((wire.HEADER.unpack_from(d, 0)[2], wire.HEADER.unpack_from(d, 0)[1]) for d, _, _ in packets)
    assert [seq for _, seq in sent] == list(range(n))
    for send_ns, seq in sent:
        due_ns = (start + seq / pps + (paced.TAKEOVER_GRACE / pps if seq % T else 0)) * 1e9
        assert due_ns <= send_ns <= due_ns + 10e3, (seq, send_ns - due_ns)  # within 10 clock readings


def test_claims_are_split_by_what_is_due(monkeypatch):
    # Two senders on one fake clock, their turns interleaved by hand: each claim takes
    # the packets due by then that nobody claimed (at most BATCH_MAX), never one twice.
    import mmap
    T, pps, start, n = 2, 20000, 100.0, 8
    shm = mmap.mmap(-1, sender_mod.shm_layout(T)[2])
    off = sender_mod.claim_offset(T)
    # Sender 1 was stalled until 3.5 intervals: seqs 0..3 are due; sender 0 had sent 0..2.
    struct.pack_into("=Q", shm, off, 3)
    rx = Receiver()
    fake = _FakeClock(start + 3.5 / pps)
    monkeypatch.setattr(paced.time, "perf_counter", fake.perf_counter)
    monkeypatch.setattr(paced.time, "sleep", fake.sleep)
    monkeypatch.setattr(paced.time, "monotonic_ns", fake.monotonic_ns)
    sender = paced.Sender(1, T, n)
    sender.sock = sockets.open_udp(None)
    cfg = {"threads": T, "pps": pps, "start": start, "duration": n / pps, "run_id": 9,
           "ppid": os.getppid(), "send_path": "udp", "size": 40, "dst": "127.0.0.1", "port": rx.port,
           "pattern": "constant", "burst_size": None, "seed": None, "libc": None,
           "claim": (threading.Lock(), off)}
    try:
        report = paced.send_stream(sender, cfg, shm, [False])
    finally:
        sender.sock.close()
        packets = rx.close()
    # It sends 3 (its own, late) at once, then 4..7: its own on time, its partner's (the
    # partner never came back) TAKEOVER_GRACE of the interval late.
    sent = sorted((wire.HEADER.unpack_from(d, 0)[2], wire.HEADER.unpack_from(d, 0)[1]) for d, _, _ in packets)
    assert [seq for _, seq in sent] == [3, 4, 5, 6, 7]
    for send_ns, seq in sent[1:]:
        due_ns = (start + seq / pps + (0 if seq % T else paced.TAKEOVER_GRACE / pps)) * 1e9
        assert due_ns <= send_ns <= due_ns + 10e3, (seq, send_ns - due_ns)
    assert (report["attempted"], report["taken_over"], report["scheduled"]) == (5, 2, 4)
