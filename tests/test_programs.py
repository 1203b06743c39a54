"""The shipped example XDP programs (programs/*.bpf.c) on the real kernel: each builds with the
workflow's clang command, loads through the verifier, and returns the verdict it promises on
frames built here (BPF_PROG_TEST_RUN through `bpftool prog run`; no testbed, no mocks).

The rules of drop_rule are set the way a loader sets `const volatile` globals: their values
live in the object's .rodata section, which libbpf copies into the program's read-only map.
The tests write the values into .rodata of a copy of the object (found through the ELF symbol
table) before `bpftool prog load`, and, where this tree has it, set them again through the
agent's own libbpf loader (workflow/xdplab/agent/bpfobject.py) as a trial does.
"""

import json
import os
import platform
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = ["pass_all", "drop_rule", "tx_back", "busy_pass"]
BPFFS = Path("/sys/fs/bpf")
PIN_PREFIX = "xlt_h3_"   # test-only pins, removed by the test that makes them

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3
MAGIC = 0x58444C42  # XDPLAB_MAGIC in bpf/xdplab.h

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("clang") or not shutil.which("bpftool"),
    reason="needs root, clang and bpftool")


def build_command(name: str, out: Path) -> list[str]:
    """The command the workflow builds a user's C source with."""
    return ["clang", "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I", "bpf",
            "-I", f"/usr/include/{platform.machine()}-linux-gnu",
            "-c", f"programs/{name}.bpf.c", "-o", str(out)]


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    out = tmp_path_factory.mktemp("programs")
    built = {}
    for name in PROGRAMS:
        obj = out / f"{name}.bpf.o"
        r = subprocess.run(build_command(name, obj), cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, f"{name}: {r.stderr}"
        built[name] = obj
    return built


def _bpffs_mounted() -> bool:
    return any(line.split()[1:3] == [str(BPFFS), "bpf"]
               for line in Path("/proc/mounts").read_text().splitlines())


@pytest.fixture(scope="module")
def bpffs():
    # Left mounted afterwards: it is where a system normally has it, and others may pin there.
    if not _bpffs_mounted():
        subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)
    return BPFFS


class Loaded:
    """A program loaded through the verifier and pinned; run() is one BPF_PROG_TEST_RUN."""

    def __init__(self, obj: Path, pin: Path, workdir: Path):
        self.pin, self.workdir = pin, workdir
        r = subprocess.run(["bpftool", "prog", "load", str(obj), str(pin), "type", "xdp"],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"verifier or loader refused {obj.name}:\n{r.stderr[-3000:]}"

    def run(self, frame: bytes) -> tuple[int, bytes]:
        fin, fout = self.workdir / "in.bin", self.workdir / "out.bin"
        fin.write_bytes(frame)
        fout.unlink(missing_ok=True)
        r = subprocess.run(["bpftool", "-j", "prog", "run", "pinned", str(self.pin), "data_in", str(fin),
                            "data_out", str(fout), "repeat", "1"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["retval"], fout.read_bytes()

    def close(self):
        self.pin.unlink(missing_ok=True)


@pytest.fixture
def load(bpffs, tmp_path):
    opened = []

    def _load(obj: Path, tag: str) -> Loaded:
        prog = Loaded(obj, bpffs / f"{PIN_PREFIX}{tag}", tmp_path)
        opened.append(prog)
        return prog
    yield _load
    for prog in opened:
        prog.close()


# -- frames, built here with the standard library ---------------------------------------

SRC_MAC, DST_MAC = bytes.fromhex("02000000aa01"), bytes.fromhex("02000000bb02")
SRC_IP, DST_IP = bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2])


def ipv4_checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(dport=9999, sport=40000, payload=b"", options=b"") -> bytes:
    """Ethernet + IPv4 (valid checksum, `options` padded to 32-bit words) + UDP (checksum 0)."""
    options += bytes(-len(options) % 4)
    ihl = 5 + len(options) // 4
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(udp), 1, 0x4000, 64, 17, 0,
                               SRC_IP, DST_IP) + options)
    struct.pack_into("!H", ip, 10, ipv4_checksum(bytes(ip)))
    return DST_MAC + SRC_MAC + b"\x08\x00" + bytes(ip) + udp


def xdplab_payload(seq: int, run_id=1, size=18) -> bytes:
    """The xdplab payload header (struct xdplab_payload_hdr, network order), padded to size."""
    hdr = struct.pack("!IIQH", MAGIC, seq, 123_456_789, run_id)
    return hdr + bytes(max(0, size - len(hdr)))


def xdplab_frame(seq: int, dport=9999, **kw) -> bytes:
    return udp_frame(dport=dport, payload=xdplab_payload(seq), **kw)


def arp_frame() -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, SRC_MAC, SRC_IP, bytes(6), DST_IP)
    return b"\xff" * 6 + SRC_MAC + b"\x08\x06" + arp + bytes(18)


# -- `const volatile` globals, set in a copy of the object ------------------------------

def with_globals(obj: Path, out: Path, values: dict) -> Path:
    """A copy of the ELF object whose .rodata holds these values for the named globals
    (little-endian, the symbol's own size): what a loader does before load."""
    data = bytearray(obj.read_bytes())
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "ELF64 little-endian expected"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    symtab = next(s for s in sections if s[1] == 2)             # SHT_SYMTAB
    strtab = sections[symtab[6]]                                # sh_link: its string table
    found = {}
    for off in range(symtab[4], symtab[4] + symtab[5], 24):     # Elf64_Sym
        st_name, _info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", data, off)
        name_at = strtab[4] + st_name
        name = bytes(data[name_at:data.index(0, name_at)]).decode()
        if name in values:
            found[name] = (sections[shndx][4] + value, size)      # file offset, bytes
    assert set(found) == set(values), f"globals not in {obj.name}: {set(values) - set(found)}"
    for name, (at, size) in found.items():
        data[at:at + size] = int(values[name]).to_bytes(size, "little")
    out.write_bytes(data)
    return out


# -- the tests --------------------------------------------------------------------------

def test_every_example_builds_and_says_what_it_is(objects):
    for name in PROGRAMS:
        src = (REPO / "programs" / f"{name}.bpf.c").read_text()
        assert src.startswith(f"/* {name}.bpf.c - ")
        assert 'SEC("xdp")' in src and 'char LICENSE[] SEC("license") = "GPL";' in src
        r = subprocess.run(["bpftool", "btf", "dump", "file", str(objects[name])], capture_output=True, text=True)
        assert r.returncode == 0 and "FUNC " in r.stdout, f"{name}: no BTF (built without -g?)"


def test_pass_all_passes_everything(objects, load):
    prog = load(objects["pass_all"], "pass_all")
    for frame in (xdplab_frame(1), xdplab_frame(2), arp_frame(), udp_frame(dport=53)):
        assert prog.run(frame)[0] == XDP_PASS


def test_drop_rule_with_default_globals_passes(objects, load):
    prog = load(objects["drop_rule"], "drop_rule")
    for frame in (xdplab_frame(7), xdplab_frame(8), udp_frame(dport=12345), arp_frame()):
        assert prog.run(frame) == (XDP_PASS, frame)


def test_drop_rule_drops_odd_sequence_numbers(objects, load, tmp_path):
    obj = with_globals(objects["drop_rule"], tmp_path / "odd.bpf.o", {"drop_odd_seq": 1})
    prog = load(obj, "drop_rule_odd")
    for seq in (0, 2, 4096, 0xFFFFFFFE):
        assert prog.run(xdplab_frame(seq))[0] == XDP_PASS, seq
    for seq in (1, 3, 4097, 0xFFFFFFFF):
        assert prog.run(xdplab_frame(seq))[0] == XDP_DROP, seq
    # IPv4 options move the UDP header: the rule still finds the sequence number.
    assert prog.run(xdplab_frame(5, options=b"\x01" * 8))[0] == XDP_DROP
    assert prog.run(xdplab_frame(6, options=b"\x01" * 8))[0] == XDP_PASS
    # Not an xdplab packet (no magic, or a payload too short for the header): passed.
    assert prog.run(udp_frame(payload=struct.pack("!II", 0x12345678, 1) + bytes(10)))[0] == XDP_PASS
    assert prog.run(udp_frame(payload=xdplab_payload(1)[:17]))[0] == XDP_PASS
    assert prog.run(arp_frame())[0] == XDP_PASS


def test_drop_rule_aborts_instead_when_asked(objects, load, tmp_path):
    obj = with_globals(objects["drop_rule"], tmp_path / "abort.bpf.o",
                       {"drop_odd_seq": 1, "abort_instead": 1})
    prog = load(obj, "drop_rule_abort")
    assert prog.run(xdplab_frame(3))[0] == XDP_ABORTED
    assert prog.run(xdplab_frame(4))[0] == XDP_PASS


def test_drop_rule_drops_one_port(objects, load, tmp_path):
    obj = with_globals(objects["drop_rule"], tmp_path / "port.bpf.o", {"drop_port": 12345})
    prog = load(obj, "drop_rule_port")
    assert prog.run(udp_frame(dport=12345))[0] == XDP_DROP
    assert prog.run(xdplab_frame(1, dport=12345))[0] == XDP_DROP
    assert prog.run(udp_frame(dport=12345, options=b"\x01" * 4))[0] == XDP_DROP
    assert prog.run(udp_frame(dport=12346))[0] == XDP_PASS
    assert prog.run(xdplab_frame(1, dport=9999))[0] == XDP_PASS    # the odd-seq rule is off
    assert prog.run(arp_frame())[0] == XDP_PASS
    # A frame cut inside the UDP header it claims: passed, never read past its end.
    assert prog.run(udp_frame(dport=12345)[:14 + 20 + 4])[0] == XDP_PASS


def _swapped(frame: bytes, ihl_bytes=20) -> bytes:
    eth, ip, udp = frame[:14], frame[14:14 + ihl_bytes], frame[14 + ihl_bytes:]
    ip = ip[:12] + ip[16:20] + ip[12:16] + ip[20:]
    return eth[6:12] + eth[0:6] + eth[12:14] + ip + udp[2:4] + udp[0:2] + udp[4:]


def test_tx_back_swaps_and_transmits_udp(objects, load):
    prog = load(objects["tx_back"], "tx_back")
    frame = xdplab_frame(3, dport=9999)
    verdict, out = prog.run(frame)
    assert verdict == XDP_TX
    assert out == _swapped(frame)
    assert out[0:6] == SRC_MAC and out[6:12] == DST_MAC
    assert out[26:30] == DST_IP and out[30:34] == SRC_IP
    assert struct.unpack("!HH", out[34:38]) == (9999, 40000)
    assert ipv4_checksum(out[14:34]) == 0          # still a valid IPv4 header
    framed = udp_frame(dport=53, options=b"\x01" * 4)
    verdict, out = prog.run(framed)
    assert verdict == XDP_TX and out == _swapped(framed, ihl_bytes=24)
    assert prog.run(arp_frame()) == (XDP_PASS, arp_frame())


def test_tx_back_only_to_its_port(objects, load, tmp_path):
    obj = with_globals(objects["tx_back"], tmp_path / "port.bpf.o", {"tx_port": 9999})
    prog = load(obj, "tx_back_port")
    assert prog.run(xdplab_frame(1, dport=9999))[0] == XDP_TX
    frame = udp_frame(dport=53)
    assert prog.run(frame) == (XDP_PASS, frame)


def test_busy_pass_passes_and_costs_more_than_pass_all(objects, load, tmp_path):
    busy, base = load(objects["busy_pass"], "busy_pass"), load(objects["pass_all"], "busy_base")
    frame = xdplab_frame(1)
    assert busy.run(frame) == (XDP_PASS, frame)
    fin = tmp_path / "many.bin"
    fin.write_bytes(frame)

    def ns_per_run(prog):
        r = subprocess.run(["bpftool", "-j", "prog", "run", "pinned", str(prog.pin), "data_in", str(fin),
                            "repeat", "20000"], capture_output=True, text=True, check=True)
        return json.loads(r.stdout)["duration"]
    # 256 dependent multiply rounds cost hundreds of ns; passing costs tens.
    assert ns_per_run(busy) > 5 * max(ns_per_run(base), 1)
    more = load(with_globals(objects["busy_pass"], tmp_path / "more.bpf.o", {"work_rounds": 4096}),
                "busy_more")
    assert more.run(frame)[0] == XDP_PASS
    assert ns_per_run(more) > 2 * ns_per_run(busy)


# -- the same rules set through the agent's loader (libbpf), as a trial sets them ---------

def _loader():
    """The agent's libbpf loader, where this tree has it."""
    try:
        from xdplab.agent import bpfobject
    except ImportError as e:
        pytest.skip(f"no agent loader to set globals with ({e})")
    return bpfobject


def test_globals_are_what_the_headers_say(objects):
    bpfobject = _loader()
    expect = {"pass_all": {}, "drop_rule": {"drop_port": "u16", "drop_odd_seq": "u8", "abort_instead": "u8"},
              "tx_back": {"tx_port": "u16"}, "busy_pass": {"work_rounds": "u32"}}
    for name, types in expect.items():
        d = bpfobject.describe(objects[name])
        assert {k: v["type"] for k, v in d["globals"].items()} == types, name
        assert [p["type"] for p in d["programs"]] == ["xdp"], name


def test_drop_rule_through_the_loader(objects):
    bpfobject = _loader()
    with bpfobject.BpfObject(objects["drop_rule"], globals={"drop_odd_seq": 1}) as obj:
        fd = obj.prog_fd("xdp_drop_rule")
        assert [bpfobject.test_run(fd, xdplab_frame(seq))[0] for seq in range(6)] == \
            [XDP_PASS, XDP_DROP] * 3
        assert bpfobject.test_run(fd, udp_frame(dport=12345))[0] == XDP_PASS
    with bpfobject.BpfObject(objects["drop_rule"], globals={"drop_port": 12345}) as obj:
        fd = obj.prog_fd("xdp_drop_rule")
        assert bpfobject.test_run(fd, udp_frame(dport=12345))[0] == XDP_DROP
        assert bpfobject.test_run(fd, xdplab_frame(1, dport=12345))[0] == XDP_DROP
        assert bpfobject.test_run(fd, xdplab_frame(1, dport=9999))[0] == XDP_PASS
        assert bpfobject.test_run(fd, arp_frame())[0] == XDP_PASS
