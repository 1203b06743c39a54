"""BPF plumbing: compile and load the collector with BCC, attach it through a
bpf_link, turn on run-time statistics, read counters.

One `Program` is one compiled and verified instance with its own maps.  The
agent keeps instances across sessions (compiling is the expensive part, ~1-2 s
of LLVM) and gives each interface of a session its own instance, so counters
and ring buffer are per interface without any lookup in the hot path.
Attaching and detaching are per session; counters are read as differences.
"""

import atexit
import ctypes as ct
import errno
import logging
import os
import platform
import re
import time

log = logging.getLogger("xdplab-agent")

PROG_NAME = "xdplab_collect"
BPF_XDP_ATTACH_TYPE = 37          # enum bpf_attach_type: BPF_XDP
BPF_LINK_CREATE_CMD = 28          # enum bpf_cmd
BPF_ENABLE_STATS_CMD = 32         # enum bpf_cmd
BPF_STATS_RUN_TIME = 0            # enum bpf_stats_type
XDP_FLAGS = {"generic": 2, "native": 4}   # XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE
SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280}
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


def fdinfo(fd):
    """Key/value pairs of /proc/self/fdinfo/<fd> (prog_tag, prog_id, run_cnt...)."""
    out = {}
    with open("/proc/self/fdinfo/%d" % fd) as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                value = value.strip()
                out[key.strip()] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return out


class _LinkCreateOpts(ct.Structure):
    # struct bpf_link_create_opts prefix: size_t sz; __u32 flags; + padding.
    _fields_ = [("sz", ct.c_size_t), ("flags", ct.c_uint32), ("pad", ct.c_uint32)]


class _LinkCreateAttr(ct.Structure):
    # union bpf_attr, link_create member: prog_fd, target_ifindex, attach_type, flags.
    _fields_ = [("prog_fd", ct.c_uint32), ("target_ifindex", ct.c_uint32),
                ("attach_type", ct.c_uint32), ("flags", ct.c_uint32),
                ("pad", ct.c_uint64 * 4)]


def _sys_bpf(cmd, attr):
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, "bpf syscall number unknown for %s" % platform.machine())
    fd = _libc.syscall(ct.c_long(nr), ct.c_int(cmd), ct.byref(attr), ct.c_uint(ct.sizeof(attr)))
    if fd < 0:
        err = ct.get_errno() or errno.EINVAL
        raise OSError(err, os.strerror(err))
    return int(fd)


_libbpf = None


def _load_libbpf():
    global _libbpf
    if _libbpf is None:
        try:
            lib = ct.CDLL("libbpf.so.1", use_errno=True)
            lib.bpf_link_create.argtypes = [ct.c_int, ct.c_int, ct.c_int,
                                            ct.POINTER(_LinkCreateOpts)]
            lib.bpf_link_create.restype = ct.c_int
            _libbpf = lib
        except OSError:
            _libbpf = False
    return _libbpf


def xdp_link_create(prog_fd, ifindex, mode):
    """Attach an XDP program through a bpf_link; returns the link fd.

    The link goes away when its last fd is closed, including when the agent is
    killed, so nothing stays attached behind a dead agent; and nobody can
    replace a program attached by a link (EBUSY)."""
    flags = XDP_FLAGS[mode]
    lib = _load_libbpf()
    if lib:
        opts = _LinkCreateOpts(sz=ct.sizeof(_LinkCreateOpts), flags=flags, pad=0)
        fd = lib.bpf_link_create(prog_fd, ifindex, BPF_XDP_ATTACH_TYPE, ct.byref(opts))
        if fd < 0:
            err = -fd or ct.get_errno() or errno.EINVAL
            raise OSError(err, "bpf_link_create(XDP, %s): %s" % (mode, os.strerror(err)))
        return fd
    return _sys_bpf(BPF_LINK_CREATE_CMD, _LinkCreateAttr(   # libbpf.so.1 not installed
        prog_fd=prog_fd, target_ifindex=ifindex, attach_type=BPF_XDP_ATTACH_TYPE, flags=flags))


def release_freed_memory():
    """Give the heap LLVM freed after a compile back to the system (glibc keeps it
    otherwise): measured here, the agent's resident size went from ~235 MB to ~135 MB
    after building two programs.  The peak during the compile itself stays."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def enable_run_time_stats():
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): stats are on while the fd is held.
    They cost ~20 ns per program run, only while a session is armed."""
    return _sys_bpf(BPF_ENABLE_STATS_CMD, (ct.c_uint32 * 2)(BPF_STATS_RUN_TIME, 0))


class Program:
    """One compiled, verified, unattached instance of the collector."""

    def __init__(self, sources, port, collector, ring_pages=None):
        from bcc import BPF, libbcc   # imported late: --help and the tests work without bcc
        self.port, self.collector, self.ring_pages_requested = port, collector, ring_pages
        self.cflags = ["-DXDPLAB_PORT=%d" % port]
        if ring_pages is not None:
            self.cflags.append("-DXDPLAB_RING_PAGES=%d" % ring_pages)
        if collector == "counters":
            self.cflags.append("-DXDPLAB_COUNT_ONLY")
        self.counter_index = sources.counters
        self.max_run_ids = sources.max_run_ids
        t0 = time.monotonic()
        self.bpf = BPF(text=sources.text.encode(), cflags=self.cflags)
        try:
            self.fn = self.bpf.load_func(PROG_NAME, BPF.XDP)
            self.compile_s = time.monotonic() - t0
            try:
                self.insn_count = libbcc.lib.bpf_function_size(
                    self.bpf.module, PROG_NAME.encode()) // 8
            except Exception:
                self.insn_count = len(self.bpf.dump_func(PROG_NAME)) // 8
            self.info = fdinfo(self.fn.fd)
            self.counters = self.bpf["counters"]
            self.by_run = self.bpf["matched_by_run"]
            self.run_range = self.bpf["run_range"]
            self.ring_bytes = self.ring_pages = None
            self.on_record = None            # set per session; the ring's callback calls it
            if collector == "features":
                events = self.bpf["events"]
                self.ring_bytes = fdinfo(events.map_fd).get("max_entries")
                self.ring_pages = self.ring_bytes // PAGE_SIZE
                events.open_ring_buffer(self._callback)
        except BaseException:
            self.close()
            raise
        release_freed_memory()

    def _callback(self, ctx, data, size):
        fn = self.on_record
        if fn is not None:
            fn(data, size)
        return 0

    @property
    def prog_fd(self):
        return self.fn.fd

    @property
    def tag(self):
        return self.info.get("prog_tag")

    def consume(self):
        """Hand every record in the ring to on_record (no waiting)."""
        if self.collector == "features":
            self.bpf.ring_buffer_consume()

    def set_run_range(self, first, count):
        self.run_range[ct.c_int(0)] = ct.c_uint64(first | (count << 32))

    def snapshot(self):
        """Counters (summed over CPUs), per-run matches and run-time stats, now."""
        c = {name: int(self.counters.sum(idx).value) for name, idx in self.counter_index.items()}
        runs = [int(self.by_run.sum(i).value) for i in range(self.max_run_ids)]
        info = fdinfo(self.prog_fd)
        return {"counters": c, "matched_by_run": runs,
                "run_time_ns": info.get("run_time_ns", 0), "run_cnt": info.get("run_cnt", 0)}

    def sample(self, slots):
        """(seen, matched over the given run-id slots, ringbuf_full), now: the few
        counters the time series needs, ten times a second."""
        c, idx = self.counters, self.counter_index
        return (int(c.sum(idx["seen"]).value),
                sum(int(self.by_run.sum(k).value) for k in slots),
                int(c.sum(idx["ringbuf_full"]).value))

    def manifest(self):
        return {"prog_name": PROG_NAME, "prog_tag": self.tag, "insn_count": self.insn_count,
                "verified_insns": self.info.get("verified_insns"), "cflags": list(self.cflags),
                "compile_s": round(self.compile_s, 3), "ringbuf_pages": self.ring_pages,
                "ringbuf_bytes": self.ring_bytes, "collector": self.collector}

    def close(self):
        try:
            self.bpf.cleanup()
        except Exception as e:   # cleanup must not hide the caller's error
            log.warning("BPF cleanup failed: %s", e)
        # BCC registers an atexit cleanup per BPF object, which would keep every
        # object alive until exit.
        atexit.unregister(self.bpf.cleanup)
