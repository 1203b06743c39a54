"""BPF plumbing: compile and load the collector with BCC (in a child process, so
that LLVM's memory peak never lands in the long-lived agent), attach it through
a bpf_link, turn on run-time statistics, read counters.

One `Program` is one compiled and verified instance with its own maps.  The
agent keeps instances across sessions (compiling is the expensive part, ~1-2 s
of LLVM) and gives each interface of a session its own instance, so counters
and ring buffer are per interface without any lookup in the hot path.
Attaching and detaching are per session; counters are read as differences.
"""

import ctypes as ct
import errno
import logging
import os
import platform
import re
import sys
import time

from . import children

log = logging.getLogger("xdplab-agent")

PROG_NAME = "xdplab_collect"
BPF_XDP_ATTACH_TYPE = 37          # enum bpf_attach_type: BPF_XDP
BPF_LINK_CREATE_CMD = 28          # enum bpf_cmd
BPF_ENABLE_STATS_CMD = 32         # enum bpf_cmd
BPF_STATS_RUN_TIME = 0            # enum bpf_stats_type
BPF_MAP_LOOKUP_ELEM_CMD = 1       # enum bpf_cmd
BPF_MAP_UPDATE_ELEM_CMD = 2
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


class _MapElemAttr(ct.Structure):
    # union bpf_attr, map element member: map_fd, key, value, flags.
    _fields_ = [("map_fd", ct.c_uint32), ("pad", ct.c_uint32), ("key", ct.c_uint64),
                ("value", ct.c_uint64), ("flags", ct.c_uint64)]


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


_SAMPLE_FN = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_size_t)


class MapCalls:
    """Map lookups and updates and the ring buffer, on descriptors: libbpf.so.1 when
    it is there (BCC's own libbcc links it on Debian: package libbpf1), else libbcc's
    wrappers.  This is the one place the agent's own process imports bcc, and only
    without libbpf.so.1 (compiling and BCC's version are asked of child processes).
    libbpf keeps the agent small: loading libbcc maps LLVM and clang, ~60 MiB of
    the agent's resident size (measured: 85 MiB at start with bcc, 25 without)."""

    def __init__(self):
        lib = _load_libbpf()
        if lib and all(hasattr(lib, f) for f in ("ring_buffer__new", "ring_buffer__consume",
                                                   "ring_buffer__free", "bpf_map_lookup_elem",
                                                   "bpf_map_update_elem")):
            self.name = "libbpf"
            self.cb_type = _SAMPLE_FN
            lib.ring_buffer__new.restype = ct.c_void_p
            lib.ring_buffer__new.argtypes = [ct.c_int, _SAMPLE_FN, ct.c_void_p, ct.c_void_p]
            lib.ring_buffer__consume.argtypes = [ct.c_void_p]
            lib.ring_buffer__free.argtypes = [ct.c_void_p]
            lib.ring_buffer__free.restype = None
            lib.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
            lib.bpf_map_update_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64]
            lib.bpf_map_delete_elem.argtypes = [ct.c_int, ct.c_void_p]
            self.lookup, self.update = lib.bpf_map_lookup_elem, lib.bpf_map_update_elem
            self.delete = lib.bpf_map_delete_elem
            self.ring_new = lambda fd, cb: lib.ring_buffer__new(fd, cb, None, None)
            self.ring_consume, self.ring_free = lib.ring_buffer__consume, lib.ring_buffer__free
        else:
            log.warning("libbpf.so.1 not found (Debian package libbpf1): reading maps and the "
                        "ring buffer through BCC's libbcc instead, which maps LLVM into the "
                        "agent (~60 MiB more resident)")
            from bcc import libbcc
            bl = libbcc.lib
            self.name = "libbcc"
            self.cb_type = libbcc._RINGBUF_CB_TYPE
            self.lookup, self.update = bl.bpf_lookup_elem, bl.bpf_update_elem
            self.delete = bl.bpf_delete_elem
            self.ring_new = lambda fd, cb: bl.bpf_new_ringbuf(fd, cb, None)
            self.ring_consume, self.ring_free = bl.bpf_consume_ringbuf, bl.bpf_free_ringbuf


_map_calls = None


def map_calls():
    global _map_calls
    if _map_calls is None:
        _map_calls = MapCalls()
    return _map_calls


def possible_cpus():
    """The number of possible CPUs (the per-CPU value count of a map)."""
    n = 0
    with open("/sys/devices/system/cpu/possible") as f:
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            n = max(n, int(hi or lo) + 1)
    return n


def bcc_facts():
    """{"bcc": version, "maps": [the libLLVM path BCC loads]}, asked of a child:
    importing bcc here would map LLVM into the agent (factschild.py)."""
    import json
    import subprocess
    r = subprocess.run(children.argv("factschild"), stdin=subprocess.DEVNULL, env=children.env(),
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("%s cannot import bcc: %s" % (
            sys.executable, (r.stderr.strip().splitlines() or ["no output"])[-1]))
    return json.loads(r.stdout)


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


COMPILE_TIMEOUT_S = 300


def compile_in_child(text, cflags, maps, prog=PROG_NAME, prog_type="XDP", tracepoint=None):
    """Compile and load in a child process (compilechild.py); returns (prog_fd, {map: fd},
    meta).
    tracepoint ("category/name"): its id goes in meta["tracepoint_id"].

    LLVM's peak (~140 MiB more per compile, measured here: the agent's VmHWM went
    from 71 to 210 MiB on the first compile and 242 on the second) stays in a
    process that exits; the program and maps live on through the descriptors the
    agent receives.  Nothing is pinned."""
    import json
    import socket
    import subprocess
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with parent:
        with child:
            proc = subprocess.Popen(children.argv("compilechild", str(child.fileno())),
                                    env=children.env(), stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    pass_fds=[child.fileno()])
        try:
            _, err = proc.communicate(json.dumps({"text": text, "cflags": cflags, "prog": prog,
                                                  "prog_type": prog_type, "maps": maps,
                                                  "tracepoint": tracepoint}).encode(),
                                      timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError("the compile did not finish within %d s" % COMPILE_TIMEOUT_S)
        parent.setblocking(False)
        try:
            msg, fds, _, _ = socket.recv_fds(parent, 1 << 16, len(maps) + 1)
        except BlockingIOError:
            msg, fds = b"", []
    if proc.returncode != 0 or len(fds) != len(maps) + 1:
        for fd in fds:
            os.close(fd)
        lines = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError("the compile exited %s: %s" % (proc.returncode,
                                                          " | ".join(lines[-12:]) or "no output"))
    return fds[0], dict(zip(maps, fds[1:])), json.loads(msg)


def collector_cflags(port, collector, ring_pages=None, chain=False):
    """The collector's load-time constants: built from validated integers only."""
    out = ["-DXDPLAB_PORT=%d" % port]
    if ring_pages is not None:
        out.append("-DXDPLAB_RING_PAGES=%d" % ring_pages)
    if collector == "counters":
        out.append("-DXDPLAB_COUNT_ONLY")
    if chain:
        out.append("-DXDPLAB_CHAIN")
    return out


class Program:
    """One compiled, verified, unattached instance of the collector, held as file
    descriptors (program, counters, matched_by_run, run_range, events): BCC compiles
    in a child process (compile_in_child); the agent reads the maps and polls the
    ring buffer through libbpf (MapCalls)."""

    def __init__(self, sources, port, collector, ring_pages=None, chain=False):
        self._lib = map_calls()
        self.port, self.collector, self.ring_pages_requested = port, collector, ring_pages
        self.chain = chain
        self.cflags = collector_cflags(port, collector, ring_pages, chain)
        self.counter_index = sources.counters
        self.max_run_ids = sources.max_run_ids
        self.ncpus = possible_cpus()
        maps = ["counters", "matched_by_run", "run_range"]
        if collector == "features":
            maps += ["events", "stage"]
        if chain:
            maps.append("chain")
        t0 = time.monotonic()
        self._prog_fd, self.map_fds, meta = compile_in_child(sources.text, self.cflags, maps)
        self._rb = None
        try:
            self.compile_s = time.monotonic() - t0
            self.compile_vm_hwm_kib = meta.get("vm_hwm_kib")
            self.insn_count = meta["insn_count"]
            self.info = fdinfo(self._prog_fd)
            self.ring_bytes = self.ring_pages = None
            self.on_record = None            # set per session; the ring's callback calls it
            if collector == "features":
                self.batch, self.record_size = sources.batch, sources.record_size
                self.stage_fd = self.map_fds["stage"]
                # A per-CPU value is padded to 8 bytes per CPU in the syscall's buffer.
                self.stage_stride = (8 + self.batch * sources.record_size + 7) // 8 * 8
                self.ring_bytes = fdinfo(self.map_fds["events"]).get("max_entries")
                self.ring_pages = self.ring_bytes // PAGE_SIZE
                self._cb = self._lib.cb_type(self._callback)   # kept: the library holds it
        except BaseException:
            self.close()
            raise

    def _callback(self, ctx, data, size):
        fn = self.on_record
        if fn is not None:
            fn(data, size)
        return 0

    @property
    def prog_fd(self):
        return self._prog_fd

    @property
    def tag(self):
        return self.info.get("prog_tag")

    def open_ring(self):
        """Map the ring buffer into the agent (a session's arm).  The mapping counts in
        the agent's resident size (ringbuf_pages x 4 KiB, populated at once), so only
        armed instances hold one; the records and positions live in the kernel's map
        and survive a close and reopen."""
        if self.collector == "features" and not self._rb:
            self._rb = self._lib.ring_new(self.map_fds["events"], self._cb)
            if not self._rb:
                raise OSError("opening the ring buffer of the events map failed (%s)"
                              % self._lib.name)

    def close_ring(self):
        if self._rb:
            self._lib.ring_free(self._rb)
            self._rb = None

    def consume(self):
        """Hand every record in the ring to on_record (no waiting)."""
        if self._rb:
            self._lib.ring_consume(self._rb)

    def _percpu_sum(self, name, idx):
        key, vals = ct.c_uint32(idx), (ct.c_uint64 * self.ncpus)()
        if self._lib.lookup(self.map_fds[name], ct.byref(key), ct.byref(vals)) < 0:
            err = ct.get_errno() or errno.EINVAL
            raise OSError(err, "reading %s[%d]: %s" % (name, idx, os.strerror(err)))
        return sum(vals)

    def drain_staged(self):
        """Hand the records still staged per CPU (fewer than a batch each) to
        on_record, then empty the staging.  Only while the program is detached
        (at disarm, after the ring is consumed; at arm, to discard leftovers):
        the program writes the staging without any lock."""
        if self.collector != "features":
            return 0
        size = self.ncpus * self.stage_stride
        buf = ct.create_string_buffer(size)
        key = ct.c_uint32(0)
        _sys_bpf(BPF_MAP_LOOKUP_ELEM_CMD, _MapElemAttr(
            map_fd=self.stage_fd, key=ct.addressof(key), value=ct.addressof(buf)))
        base, rs, records = ct.addressof(buf), self.record_size, 0
        raw = buf.raw
        for cpu in range(self.ncpus):
            off = cpu * self.stage_stride
            n = int.from_bytes(raw[off:off + 4], sys.byteorder)
            if 0 < n <= self.batch:
                self._callback(None, base + off + 8, n * rs)
                records += n
        ct.memset(buf, 0, size)
        _sys_bpf(BPF_MAP_UPDATE_ELEM_CMD, _MapElemAttr(
            map_fd=self.stage_fd, key=ct.addressof(key), value=ct.addressof(buf)))
        return records

    def set_chain(self, prog_fd):
        """Chain mode: the program the collector hands every frame to (a tail call), or
        None to empty the slot (the program array holds a reference to the program: a
        program taken out of the slot is freed once its other descriptors are closed)."""
        key = ct.c_uint32(0)
        if prog_fd is None:
            self._lib.delete(self.map_fds["chain"], ct.byref(key))
            return
        val = ct.c_uint32(prog_fd)
        if self._lib.update(self.map_fds["chain"], ct.byref(key), ct.byref(val), 0) < 0:
            err = ct.get_errno() or errno.EINVAL
            raise OSError(err, "putting the program under test in the collector's chain slot: "
                               "%s" % os.strerror(err))

    def set_run_range(self, first, count):
        key, val = ct.c_uint32(0), ct.c_uint64(first | (count << 32))
        if self._lib.update(self.map_fds["run_range"], ct.byref(key), ct.byref(val), 0) < 0:
            err = ct.get_errno() or errno.EINVAL
            raise OSError(err, "writing run_range: %s" % os.strerror(err))

    def snapshot(self):
        """Counters (summed over CPUs), per-run matches and run-time stats, now."""
        c = {name: self._percpu_sum("counters", idx) for name, idx in self.counter_index.items()}
        runs = [self._percpu_sum("matched_by_run", i) for i in range(self.max_run_ids)]
        info = fdinfo(self.prog_fd)
        return {"counters": c, "matched_by_run": runs,
                "run_time_ns": info.get("run_time_ns", 0), "run_cnt": info.get("run_cnt", 0)}

    def sample(self, slots):
        """(seen, matched over the given run-id slots, ringbuf_full), now: the few
        counters the time series needs, ten times a second."""
        idx = self.counter_index
        return (self._percpu_sum("counters", idx["seen"]),
                sum(self._percpu_sum("matched_by_run", k) for k in slots),
                self._percpu_sum("counters", idx["ringbuf_full"]))

    def manifest(self):
        return {"prog_name": PROG_NAME, "prog_tag": self.tag, "insn_count": self.insn_count,
                "verified_insns": self.info.get("verified_insns"), "cflags": list(self.cflags),
                "compile_s": round(self.compile_s, 3), "ringbuf_pages": self.ring_pages,
                "ringbuf_bytes": self.ring_bytes, "collector": self.collector,
                "chain": self.chain,
                "compile_vm_hwm_bytes": (self.compile_vm_hwm_kib * 1024
                                         if self.compile_vm_hwm_kib else None)}

    def close(self):
        """Free the ring buffer and close every descriptor: the kernel frees the
        program and maps once no descriptor (and no bpf_link) holds them."""
        try:
            self.close_ring()
        except Exception as e:   # cleanup must not hide the caller's error
            log.warning("freeing the ring buffer failed: %s", e)
        for fd in [self._prog_fd] + list(self.map_fds.values()):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._prog_fd, self.map_fds = None, {}
