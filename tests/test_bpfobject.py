"""bpfobject.py against the real kernel: tiny BPF objects built with clang, opened
and loaded through libbpf.so.1, run with BPF_PROG_TEST_RUN.  Needs root, clang and
libbpf-dev's headers; no namespaces, no testbed."""

import ctypes as ct
import errno
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xdplab.agent import bpfobject as bo, libbpfobj
from xdplab.agent.bpf import enable_run_time_stats, fdinfo, map_calls

REPO = Path(__file__).resolve().parents[1]
ARCH_INCLUDE = "/usr/include/%s-linux-gnu" % platform.machine()

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root"),
    pytest.mark.skipif(shutil.which("clang") is None or not Path("/usr/include/bpf/bpf_helpers.h").exists(),
                       reason="needs clang and libbpf-dev's headers"),
]

XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3

GLOBALS_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <stdbool.h>

enum mode { MODE_A, MODE_B = 7 };
const volatile __u8 g_u8 = 1;
const volatile __u16 g_u16 = 2;
const volatile __s32 g_s32 = -3;
const volatile __u64 g_u64 = 4;
const volatile bool g_bool = false;
const volatile enum mode g_mode = MODE_A;
const volatile __u32 g_verdict = XDP_PASS;
const volatile char g_name[8] = "x";
__u64 g_data = 5;
__u32 g_bss;
static __u32 private_count;

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 8);
         __type(key, __u32); __type(value, __u64); } seen SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } events SEC(".maps");

static __always_inline void put(__u32 k, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&seen, &k);
	if (p)
		*p = v;
}

/* longer than the kernel's 15-character program names */
SEC("xdp") int xdp_report_globals(struct xdp_md *ctx)
{
	put(0, g_u8); put(1, g_u16); put(2, (__u64)(__s64)g_s32); put(3, g_u64);
	put(4, g_bool); put(5, g_data); put(6, g_mode); put(7, g_bss);
	private_count++;
	return g_verdict;
}

/* reads the packet without checking data_end: the verifier refuses it */
SEC("xdp") int unchecked(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	return *(__u8 *)data;
}
char LICENSE[] SEC("license") = "GPL";
"""

FEXIT_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct xdp_buff { void *data; void *data_end; } __attribute__((preserve_access_index));
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 8);
         __type(key, __u32); __type(value, __u64); } verdicts SEC(".maps");

SEC("fexit/placeholder") int BPF_PROG(count_verdict, struct xdp_buff *xdp, int ret)
{
	__u32 k = ret > 7 ? 7 : ret;
	__u64 *p = bpf_map_lookup_elem(&verdicts, &k);
	if (p)
		__sync_fetch_and_add(p, 1);
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""

TP_BTF_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
__u64 switches;
SEC("tp_btf/sched_switch") int BPF_PROG(count_switches) { __sync_fetch_and_add(&switches, 1); return 0; }
char LICENSE[] SEC("license") = "GPL";
"""

WARNS_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
int odd_place __attribute__((section("mydata"), used)) = 1;   /* libbpf skips it, saying so */
SEC("xdp") int plain(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""

PLAIN_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int plain(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def objs(tmp_path_factory):
    """name -> path of the built objects (plain has no BTF: built without -g)."""
    d = tmp_path_factory.mktemp("bpfobj")
    out = {}
    for name, src, debug in [("globals", GLOBALS_C, True), ("fexit", FEXIT_C, True),
                             ("tp_btf", TP_BTF_C, True), ("warns", WARNS_C, True),
                             ("plain", PLAIN_C, False)]:
        c, o = d / (name + ".bpf.c"), d / (name + ".o")
        c.write_text(src)
        cmd = ["clang", "-O2", "-target", "bpf", "-I" + ARCH_INCLUDE, "-c", str(c), "-o", str(o)]
        if debug:
            cmd.insert(2, "-g")
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        out[name] = o
    return out


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def lookup_u64(map_fd, key):
    k, v = ct.c_uint32(key), ct.c_uint64()
    assert map_calls().lookup(map_fd, ct.byref(k), ct.byref(v)) == 0
    return v.value


PACKET = bytes(range(64))


def test_describe(objs):
    d = bo.describe(objs["globals"])
    assert [(p["name"], p["section"], p["type"]) for p in d["programs"]] == [
        ("xdp_report_globals", "xdp", "xdp"), ("unchecked", "xdp", "xdp")]
    g = d["globals"]
    assert {k: (v["type"], v["signed"], v["size"], v["section"]) for k, v in g.items()} == {
        "g_u8": ("u8", False, 1, ".rodata"), "g_u16": ("u16", False, 2, ".rodata"),
        "g_s32": ("s32", True, 4, ".rodata"), "g_u64": ("u64", False, 8, ".rodata"),
        "g_bool": ("bool", False, 1, ".rodata"), "g_mode": ("enum", False, 4, ".rodata"),
        "g_verdict": ("u32", False, 4, ".rodata"), "g_name": ("array", False, 8, ".rodata"),
        "g_data": ("u64", False, 8, ".data"), "g_bss": ("u32", False, 4, ".bss")}
    assert g["g_mode"]["enumerators"] == {"MODE_A": 0, "MODE_B": 7}
    assert (g["g_u8"]["offset"], g["g_u16"]["offset"], g["g_s32"]["offset"]) == (0, 2, 4)
    assert d["maps"] == ["seen", "events"]
    f = bo.describe(objs["fexit"])
    assert f["programs"] == [{"name": "count_verdict", "section": "fexit/placeholder",
                              "type": "tracing", "attach_type": "trace_fexit"}]
    assert f["globals"] == {} and f["maps"] == ["verdicts"]
    assert bo.describe(objs["plain"])["globals"] == {}     # no BTF: nothing typed


def test_globals_defaults_and_set_values_read_back_by_the_program(objs):
    with bo.BpfObject(objs["globals"], load=["xdp_report_globals"]) as o:
        assert bo.test_run(o.prog_fd("xdp_report_globals"), PACKET)[0] == XDP_PASS
        assert [lookup_u64(o.map_fd("seen"), k) for k in range(8)] == [1, 2, 2**64 - 3, 4, 0, 5, 0, 0]
    values = {"g_u8": 255, "g_u16": 65535, "g_s32": -2**31, "g_u64": 2**64 - 1, "g_bool": True,
              "g_data": 9, "g_mode": 7, "g_bss": 11, "g_verdict": XDP_TX}
    with bo.BpfObject(objs["globals"], load=["xdp_report_globals"], globals=values) as o:
        fd = o.prog_fd("xdp_report_globals")
        retval, duration_ns, data_out = bo.test_run(fd, PACKET, repeat=3)
        assert retval == XDP_TX and data_out == PACKET and duration_ns >= 0
        assert [lookup_u64(o.map_fd("seen"), k) for k in range(8)] == [
            255, 65535, 2**64 - 2**31, 2**64 - 1, 1, 9, 7, 11]
        assert o.program_names() == ["xdp_report_globals", "unchecked"]
        assert o.loaded_names() == ["xdp_report_globals"]
        assert o.log == ""          # nothing to warn about


def test_max_entries(objs):
    with bo.BpfObject(objs["globals"], load=["xdp_report_globals"],
                      max_entries={"events": 16384}) as o:
        assert fdinfo(o.map_fd("events"))["max_entries"] == 16384
        assert fdinfo(o.map_fd("seen"))["max_entries"] == 8


@pytest.mark.parametrize("kwargs, words", [
    ({"globals": {"g_nope": 1}}, ["'g_nope'", "g_u8, g_verdict"]),
    ({"globals": {"g_u8": 256}}, ["'g_u8'", "u8", "0..255", "256"]),
    ({"globals": {"g_u16": -1}}, ["'g_u16'", "u16", "0..65535"]),
    ({"globals": {"g_s32": 2**31}}, ["'g_s32'", "s32", "-2147483648..2147483647"]),
    ({"globals": {"g_u64": 2**64}}, ["'g_u64'", "u64", "0..18446744073709551615"]),
    ({"globals": {"g_bool": 2}}, ["'g_bool'", "bool", "0..1"]),
    ({"globals": {"g_u8": 1.5}}, ["'g_u8'", "integer", "float"]),
    ({"globals": {"g_u8": "3"}}, ["'g_u8'", "integer", "str"]),
    ({"globals": {"g_name": 1}}, ["'g_name'", "array", "only integer, bool and enum"]),
    ({"load": ["nope"]}, ["'nope'", "xdp_report_globals, unchecked"]),
    ({"max_entries": {"nomap": 4}}, ["'nomap'", "seen, events"]),
    ({"attach_targets": {"nope": (0, "f")}}, ["'nope'", "xdp_report_globals, unchecked"]),
    ({"attach_targets": {"unchecked": 5}}, ["'unchecked'", "(target program fd, function name)"]),
])
def test_bad_input_is_refused_naming_it(objs, kwargs, words):
    kwargs.setdefault("load", ["xdp_report_globals"])
    before = open_fds()
    with pytest.raises(bo.ObjectError) as e:
        bo.BpfObject(objs["globals"], **kwargs)
    assert not isinstance(e.value, bo.LoadError)
    for w in words:
        assert w in str(e.value)
    assert open_fds() == before


def test_globals_of_an_object_without_btf_are_refused(objs):
    with pytest.raises(bo.ObjectError, match="no BTF"):
        bo.BpfObject(objs["plain"], globals={"x": 1})


def test_files_that_are_not_bpf_objects_are_refused(objs, tmp_path):
    text = tmp_path / "notes.o"
    text.write_text("not an object\n" * 10)
    with pytest.raises(bo.ObjectError, match="not an ELF file"):
        bo.describe(text)
    with pytest.raises(bo.ObjectError, match="machine 62, not BPF"):   # EM_X86_64
        bo.BpfObject(sys.executable if platform.machine() == "x86_64" else "/bin/true")
    with pytest.raises(bo.ObjectError, match="No such file"):
        bo.describe(tmp_path / "missing.o")
    with pytest.raises(bo.ObjectError, match="not a regular file"):
        bo.describe(tmp_path)


def test_verifier_refusal_carries_the_log_and_prints_nothing(objs, capfd):
    before = open_fds()
    with pytest.raises(bo.LoadError) as e:
        bo.BpfObject(objs["globals"], load=["unchecked"])
    msg = str(e.value)
    assert msg.startswith("the kernel refused to load program 'unchecked' of ")
    assert "invalid access to packet" in msg
    assert len(msg.splitlines()) <= 1 + libbpfobj.LOG_TAIL_LINES
    assert "-- BEGIN PROG LOAD LOG --" in e.value.log and "invalid access to packet" in e.value.log
    assert e.value.errno == errno.EACCES
    assert open_fds() == before
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_libbpf_messages_are_kept_in_the_log_not_printed(objs, capfd):
    with bo.BpfObject(objs["warns"]) as o:
        assert "skipping unrecognized data section" in o.log and "mydata" in o.log
        assert bo.test_run(o.prog_fd("plain"), PACKET)[0] == XDP_PASS
    assert capfd.readouterr() == ("", "")


def test_libbpf_print_function_is_put_back(objs):
    lib = libbpfobj.libbpf()
    previous = lib.libbpf_set_print(None)
    lib.libbpf_set_print(previous)
    bo.describe(objs["globals"])
    with pytest.raises(bo.LoadError):
        bo.BpfObject(objs["globals"], load=["unchecked"])
    now = lib.libbpf_set_print(None)
    lib.libbpf_set_print(now)
    assert now == previous


def test_prog_info_main_func_name_and_fd_by_id(objs):
    with bo.BpfObject(objs["globals"], load=["xdp_report_globals"]) as o:
        fd = o.prog_fd("xdp_report_globals")
        stats = enable_run_time_stats()
        try:
            bo.test_run(fd, PACKET, repeat=5)
        finally:
            os.close(stats)
        info = bo.prog_info(fd)
        assert info["name"] == "xdp_report_glob"       # cut at 15 characters by the kernel
        assert info["tag"] == fdinfo(fd)["prog_tag"] and len(info["tag"]) == 16
        assert info["id"] == fdinfo(fd)["prog_id"]
        assert info["type"] == "xdp"
        assert info["xlated_insns"] > 10 and info["jited_bytes"] > 0
        assert info["verified_insns"] > 0 and info["btf_id"] > 0
        assert info["nr_map_ids"] >= 4      # seen, .rodata, .data, .bss
        assert info["run_cnt"] == 5 and info["run_time_ns"] > 0
        assert bo.main_func_name(fd) == "xdp_report_globals"
        other = bo.prog_fd_by_id(info["id"])
        try:
            assert bo.prog_info(other)["tag"] == info["tag"]
        finally:
            os.close(other)
    with bo.BpfObject(objs["plain"]) as o:
        with pytest.raises(bo.ObjectError, match="without BTF.*cannot observe it"):
            bo.main_func_name(o.prog_fd("plain"))


def test_prog_fd_and_map_fd_refusals(objs):
    with bo.BpfObject(objs["globals"], load=["xdp_report_globals"]) as o:
        with pytest.raises(bo.ObjectError, match="'unchecked' .* was not loaded"):
            o.prog_fd("unchecked")
        with pytest.raises(bo.ObjectError, match="no program 'nope'"):
            o.prog_fd("nope")
        with pytest.raises(bo.ObjectError, match="no map 'nomap'.*seen, events"):
            o.map_fd("nomap")
        assert o.map_fd(".rodata") >= 0
        with pytest.raises(bo.ObjectError, match="not an fentry/fexit"):
            o.attach_tracing("xdp_report_globals")
        with pytest.raises(bo.ObjectError, match="is not a BPF program .*bpf-map"):
            bo.prog_info(o.map_fd("seen"))


def test_attach_target_function_must_exist_in_the_target(objs):
    with bo.BpfObject(objs["globals"], load=["xdp_report_globals"]) as x:
        with pytest.raises(bo.ObjectError, match="'count_verdict' cannot attach to function 'nope'"):
            bo.BpfObject(objs["fexit"], attach_targets={
                "count_verdict": (x.prog_fd("xdp_report_globals"), "nope")})


def test_attach_tracing_tp_btf_link(objs):
    """attach_tracing's bpf_link on a BTF tracepoint (the same link as fentry/fexit)."""
    with bo.BpfObject(objs["tp_btf"]) as o:
        link = o.attach_tracing("count_switches")
        try:
            deadline = time.monotonic() + 5
            while lookup_u64(o.map_fd(".bss"), 0) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            os.close(link)
        assert lookup_u64(o.map_fd(".bss"), 0) > 0


def test_fexit_sees_the_xdp_verdict(objs):
    before = open_fds()
    with bo.BpfObject(objs["globals"], load=["xdp_report_globals"],
                      globals={"g_verdict": XDP_DROP}) as x:
        xdp_fd = x.prog_fd("xdp_report_globals")
        target = (xdp_fd, bo.main_func_name(xdp_fd))
        try:
            f = bo.BpfObject(objs["fexit"], attach_targets={"count_verdict": target})
        except bo.LoadError as e:
            if e.errno == errno.EPERM and "BEGIN PROG LOAD LOG" not in e.log:
                assert str(e).endswith("this kernel does not allow trace_fexit programs here")
                pytest.skip("this kernel refuses every fentry/fexit program: %s" % e)
            raise
        with f:
            bo.test_run(xdp_fd, PACKET, repeat=2)     # not attached yet: not counted
            link = f.attach_tracing("count_verdict")
            try:
                assert bo.test_run(xdp_fd, PACKET, repeat=7)[0] == XDP_DROP
            finally:
                os.close(link)
            bo.test_run(xdp_fd, PACKET, repeat=3)     # detached
            assert [lookup_u64(f.map_fd("verdicts"), k) for k in range(4)] == [0, 7, 0, 0]
            assert bo.prog_info(f.prog_fd("count_verdict"))["type"] == "tracing"
    assert open_fds() == before


def test_close_leaves_no_descriptor_open(objs):
    before = open_fds()
    o = bo.BpfObject(objs["globals"], load=["xdp_report_globals"], globals={"g_u8": 3},
                     max_entries={"events": 8192})
    assert len(open_fds()) > len(before)
    o.close()
    o.close()                       # idempotent
    assert open_fds() == before
    for _ in range(3):
        bo.describe(objs["globals"])
    assert open_fds() == before


def test_imports_under_the_agents_python():
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs /usr/bin/python3")
    r = subprocess.run(["/usr/bin/python3", "-c", "import xdplab.agent.bpfobject"],
                       env=dict(os.environ, PYTHONPATH=str(REPO / "workflow")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
