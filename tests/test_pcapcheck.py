"""Unit tests for workflow/xdplab/pcapcheck.py on pcap files built here, byte by byte."""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


sys.path.insert(0, str(REPO / "workflow"))
from xdplab import pcapcheck  # noqa: E402
from xdplab.source import source_pyz  # noqa: E402

verify_capture = pcapcheck.verify_capture

MAGIC = 0x58444C42
PORT = 12345
RUN = 4242


# ---------------------------------------------------------------- pcap writer

def frame(seq, *, run_id=RUN, port=PORT, magic=MAGIC, size=18, vlan=(), proto=17,
          ihl=5, frag=0, ethertype=0x0800, sport=40000):
    """An Ethernet frame carrying one generator packet (or a variation of it)."""
    payload = struct.pack("!IIQH", magic, seq, 123456789, run_id).ljust(size, b"\0")
    udp = struct.pack("!HHHH", sport, port, 8 + len(payload), 0) + payload
    if proto != 17:
        udp = b"\x08\x00\x00\x00" + udp  # anything that is not UDP
    opts = b"\x01" * (ihl * 4 - 20)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(udp), 1, frag, 64, proto, 0,
                     bytes([10, 201, 0, 1]), bytes([10, 201, 0, 2])) + opts
    eth = b"\x02" * 6 + b"\x04" * 6
    for tpid, tci in vlan:
        eth += struct.pack("!HH", tpid, tci)
    return eth + struct.pack("!H", ethertype) + ip + udp


def write_pcap(path, frames, *, endian="<", nsec=False, snaplen=262144, linktype=1, tail=b""):
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, fr in enumerate(frames):
        cap = fr[:snaplen]
        out.append(struct.pack(endian + "IIII", 1700000000 + i // 1000, (i % 1000) * 1000,
                               len(cap), len(fr)))
        out.append(cap)
    out.append(tail)
    pathlib.Path(path).write_bytes(b"".join(out))
    return path


def check(tmp_path, frames, *, scheduled, threads=1, name="c.pcap", pcap_kw=None, **kw):
    p = write_pcap(tmp_path / name, frames, **(pcap_kw or {}))
    return verify_capture(str(p), run_id=RUN, port=PORT, scheduled=scheduled, threads=threads, **kw)


KEYS = {"packets_in_file", "matched", "other_run", "not_ours", "unique", "duplicated", "missing",
        "missing_examples", "reordered", "out_of_range", "method"}


# ---------------------------------------------------------------- tests

def test_all_present(tmp_path):
    r = check(tmp_path, [frame(s) for s in range(100)], scheduled=100, threads=2)
    assert KEYS <= set(r)
    assert (r["packets_in_file"], r["matched"], r["unique"]) == (100, 100, 100)
    assert (r["missing"], r["duplicated"], r["reordered"], r["out_of_range"]) == (0, 0, 0, 0)
    assert (r["other_run"], r["not_ours"], r["missing_examples"]) == (0, 0, [])
    assert r["file_truncated"] is False
    assert isinstance(r["method"], str) and r["method"].endswith(".")


def test_missing(tmp_path):
    gone = {0, 7, 50, 99} | set(range(60, 80))
    r = check(tmp_path, [frame(s) for s in range(100) if s not in gone], scheduled=100)
    assert r["missing"] == len(gone) == 100 - r["unique"]
    assert r["missing_examples"] == sorted(gone)[:20]


def test_failed_seqs_are_not_missing(tmp_path):
    gone = {3, 4, 5, 90}
    r = check(tmp_path, [frame(s) for s in range(100) if s not in gone], scheduled=100,
              failed_seqs=[4, 90], send_errors=2)
    assert r["missing"] == 2
    assert r["missing_examples"] == [3, 5]
    assert r["send_errors_unlisted"] == 0


def test_unlisted_send_errors_reported(tmp_path):
    r = check(tmp_path, [frame(s) for s in range(10) if s != 9], scheduled=10,
              failed_seqs=[9], send_errors=5)
    assert r["missing"] == 0 and r["send_errors_unlisted"] == 4


def test_duplicates(tmp_path):
    seqs = list(range(50)) + [10, 10, 49]
    r = check(tmp_path, [frame(s) for s in seqs], scheduled=50)
    assert r["matched"] == 53 and r["unique"] == 50
    assert r["duplicated"] == 3
    assert r["missing"] == 0 and r["reordered"] == 0  # a late duplicate is not also "reordered"


def test_interleaving_across_streams_is_not_reordering(tmp_path):
    # Two threads: stream 0 = even seqs, stream 1 = odd seqs.  Each stream is in
    # order, but the streams interleave irregularly on the wire.
    seqs = [0, 2, 4, 6, 1, 8, 3, 5, 10, 7, 9, 11]
    r = check(tmp_path, [frame(s) for s in seqs], scheduled=12, threads=2)
    assert r["reordered"] == 0 and r["missing"] == 0 and r["unique"] == 12


def test_streams_are_per_sender_when_senders_take_over(tmp_path):
    # Two senders (source ports 40000 and 40001) on one shared schedule: each claims the
    # packets due when it runs, so a share (seq % threads) is sent by both.  Each
    # sender's packets arrive in the order it sent them: nothing is reordered, even
    # though seq 2 (share 0) arrives after seq 4 (share 0, the other sender's).
    sent = [(0, 40000), (1, 40001), (3, 40000), (4, 40000), (2, 40001), (5, 40001), (6, 40000)]
    r = check(tmp_path, [frame(s, sport=p) for s, p in sent], scheduled=7, threads=2)
    assert r["reordered"] == 0 and r["missing"] == 0 and r["unique"] == 7
    # One sender's packets of one share out of order: reordered.
    sent = [(0, 40000), (2, 40000), (1, 40001), (4, 40000), (3, 40001), (6, 40000), (5, 40001)]
    sent[3], sent[5] = sent[5], sent[3]  # 6 before 4, both from 40000
    r = check(tmp_path, [frame(s, sport=p) for s, p in sent], scheduled=7, threads=2, name="b.pcap")
    assert r["reordered"] == 1


def test_reordering_within_a_stream(tmp_path):
    seqs = [0, 1, 4, 3, 2, 5, 6, 7]  # stream 0: 0 4 2 6 -> 2 is late; stream 1: 1 3 5 7 in order
    r = check(tmp_path, [frame(s) for s in seqs], scheduled=8, threads=2)
    assert r["reordered"] == 1
    r1 = check(tmp_path, [frame(s) for s in seqs], scheduled=8, threads=1, name="one.pcap")
    assert r1["reordered"] == 2  # with one stream, 3 and 2 both arrive after 4


def test_other_run_and_out_of_range(tmp_path):
    frames = [frame(s) for s in range(10)]
    frames += [frame(3, run_id=RUN + 1), frame(0, run_id=0), frame(10), frame(2 ** 32 - 1)]
    r = check(tmp_path, frames, scheduled=10)
    assert r["packets_in_file"] == 14
    assert r["other_run"] == 2
    assert r["matched"] == 12 and r["out_of_range"] == 2 and r["unique"] == 10


def test_not_ours(tmp_path):
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28
    frames = [
        frame(0),
        frame(1, port=PORT + 1),        # other UDP port
        frame(2, proto=6),              # not UDP
        frame(3, magic=0xDEADBEEF),     # UDP to our port, not our payload
        frame(4, ethertype=0x86DD),     # not IPv4
        frame(5, frag=0x0010),          # a later fragment: no UDP header there
        arp,                            # 42 bytes, shorter than the fast path
        b"\x01\x02\x03",                # runt
    ]
    r = check(tmp_path, frames, scheduled=6)
    assert r["packets_in_file"] == 8
    assert r["matched"] == 1 and r["not_ours"] == 7 and r["unique"] == 1


def test_ip_options_are_skipped_by_ihl(tmp_path):
    r = check(tmp_path, [frame(0, ihl=6), frame(1, ihl=15), frame(2)], scheduled=3)
    assert r["matched"] == 3 and r["missing"] == 0


@pytest.mark.parametrize("tags", [[(0x8100, 7)], [(0x88A8, 100), (0x8100, 7)]])
def test_vlan_tagged(tmp_path, tags):
    frames = [frame(0), frame(1, vlan=tags), frame(2, vlan=tags, port=PORT + 1)]
    r = check(tmp_path, frames, scheduled=2)
    assert r["matched"] == 2 and r["not_ours"] == 1 and r["missing"] == 0


@pytest.mark.parametrize("snaplen", [60, 64, 96])
def test_truncated_to_snaplen(tmp_path, snaplen):
    frames = [frame(s, size=1458) for s in range(20)] + [frame(20, vlan=[(0x8100, 1)], size=1458)]
    r = check(tmp_path, frames, scheduled=21, pcap_kw={"snaplen": snaplen})
    assert r["packets_in_file"] == 21
    assert r["matched"] == (21 if snaplen >= 64 else 20)  # the tagged one needs 64 bytes
    assert r["not_ours"] == (0 if snaplen >= 64 else 1)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nsec", [False, True])
def test_byte_orders_and_resolutions(tmp_path, endian, nsec):
    frames = [frame(s) for s in range(30) if s != 17]
    r = check(tmp_path, frames, scheduled=30, pcap_kw={"endian": endian, "nsec": nsec})
    assert r["matched"] == 29 and r["missing"] == 1 and r["missing_examples"] == [17]


def test_truncated_last_record(tmp_path):
    partial = struct.pack("<IIII", 0, 0, 60, 60) + frame(99)[:20]
    r = check(tmp_path, [frame(s) for s in range(5)], scheduled=5, pcap_kw={"tail": partial})
    assert r["matched"] == 5 and r["file_truncated"] is True


def test_records_spanning_read_chunks(tmp_path, monkeypatch):
    seqs = [s for s in range(3000) if s % 97] + [5, 5]
    frames = [frame(s, size=18 + s % 50) for s in seqs]
    whole = check(tmp_path, frames, scheduled=3000, threads=3)
    monkeypatch.setattr(pcapcheck, "CHUNK_BYTES", 101)  # far smaller than one record
    chunked = check(tmp_path, frames, scheduled=3000, threads=3, name="again.pcap")
    assert chunked == whole
    assert whole["missing"] == len([s for s in range(3000) if s % 97 == 0])
    assert whole["duplicated"] == 2


def test_empty_capture(tmp_path):
    r = check(tmp_path, [], scheduled=4)
    assert r["packets_in_file"] == 0 and r["missing"] == 4 and r["missing_examples"] == [0, 1, 2, 3]


@pytest.mark.parametrize("data, words", [
    (b"\x0a\x0d\x0d\x0a" + b"\0" * 40, "pcapng"),
    (b"hello world, this is not a pcap file", "not a pcap"),
    (b"\xd4\xc3\xb2\xa1", "not a pcap"),
])
def test_rejects_other_files(tmp_path, data, words):
    p = tmp_path / "x.pcap"
    p.write_bytes(data)
    with pytest.raises(ValueError, match=words):
        verify_capture(str(p), run_id=RUN, port=PORT, scheduled=1, threads=1)


def test_rejects_other_link_types(tmp_path):
    p = write_pcap(tmp_path / "sll.pcap", [frame(0)], linktype=113)
    with pytest.raises(ValueError, match="link type 113"):
        verify_capture(str(p), run_id=RUN, port=PORT, scheduled=1, threads=1)


def test_rejects_absurd_record_length(tmp_path):
    p = write_pcap(tmp_path / "bad.pcap", [frame(0)], tail=struct.pack("<IIII", 0, 0, 1 << 30, 60))
    with pytest.raises(ValueError, match="corrupt"):
        verify_capture(str(p), run_id=RUN, port=PORT, scheduled=1, threads=1)


def test_magic_matches_header_file():
    text = (REPO / "bpf" / "xdplab.h").read_text()
    magic = re.search(r"^#define\s+XDPLAB_MAGIC\s+(0x[0-9a-fA-F]+)\b", text, re.M)
    hdr_len = re.search(r"^#define\s+XDPLAB_HDR_LEN\s+(\d+)\b", text, re.M)
    assert magic and hdr_len, "bpf/xdplab.h no longer defines XDPLAB_MAGIC and XDPLAB_HDR_LEN"
    assert int(magic.group(1), 16) == pcapcheck.MAGIC
    assert int(hdr_len.group(1)) == pcapcheck.HDR_LEN


@pytest.mark.skipif(not shutil.which("tcpdump") or os.geteuid() != 0,
                    reason="needs tcpdump and root to capture on lo")
def test_real_capture_of_the_generator_on_loopback(tmp_path):
    """The generator's packets as tcpdump writes them (lo is link type EN10MB on Linux)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # so the stack does not answer with ICMP
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    pcap = tmp_path / "lo.pcap"
    # --immediate-mode: without it, packets still in libpcap's current ring block
    # (up to ~1 s of traffic) are lost when tcpdump is stopped right after the run.
    td = subprocess.Popen(["tcpdump", "-p", "-n", "-i", "lo", "-s", "64", "-B", "8192", "--immediate-mode",
                           "-w", str(pcap), "udp dst port %d" % port],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        assert "listening on" in td.stderr.readline()
        g = subprocess.run([sys.executable, str(source_pyz()), "send",
                            "--dst", "127.0.0.1", "--port", str(port), "--pps", "2000", "--size", "1458",
                            "--duration", "1", "--threads", "2", "--run-id", str(RUN), "--progress-s", "0"],
                           stdout=subprocess.PIPE, timeout=60, universal_newlines=True)
        time.sleep(0.5)
    finally:
        td.send_signal(signal.SIGINT)
        err = td.communicate(timeout=30)[1]
        rx.close()
    out = json.loads(g.stdout)
    assert out["sent"] == 2000
    r = verify_capture(str(pcap), run_id=RUN, port=port, scheduled=out["scheduled"], threads=2,
                       failed_seqs=out["failed_seqs"], send_errors=out["send_errors"])
    assert "0 packets dropped by kernel" in err, err
    assert (r["matched"], r["unique"], r["missing"], r["duplicated"]) == (2000, 2000, 0, 0), r
    assert r["packets_in_file"] == 2000 and r["out_of_range"] == 0 and r["other_run"] == 0
