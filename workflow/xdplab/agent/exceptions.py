"""XDP exceptions of the program under test: XDP_ABORTED, an action XDP does not know,
an XDP_TX or XDP_REDIRECT the driver could not carry out.

Drivers count an aborted frame among their XDP drops (veth does), so the driver's
statistics alone cannot tell a program that dropped a frame from one that failed on it.
The kernel raises the xdp:xdp_exception tracepoint for each of these, with the attached
program's id and the action; bpf/exceptions.bpf.c counts them per (program id, action)
while a user's program is under test.  Nothing runs on the per-packet path: the
tracepoint fires on exceptions only.

The program is compiled by BCC in a child (bpf.compile_in_child, as the collector is)
and attached here with perf_event_open and PERF_EVENT_IOC_SET_BPF: closing the perf
event's descriptor detaches it.
"""

import ctypes as ct
import errno
import fcntl
import os

from .bpf import compile_in_child, map_calls
from .bpfsrc import inline_header, parse_define, read_bpf_file

SOURCE_NAME = "exceptions.bpf.c"
TRACEPOINT = "xdp/xdp_exception"
PROG_NAME = "tracepoint__xdp__xdp_exception"
# The actions as the key's act: XDP_ABORTED .. XDP_REDIRECT, then XDPLAB_ACT_INVALID.
ACTIONS = ("aborted", "drop", "pass", "tx", "redirect", "invalid")

PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_ATTR_SIZE = 112                    # PERF_ATTR_SIZE_VER5
SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319,
                       "s390x": 331, "armv7l": 364, "i686": 336}


class _PerfEventAttr(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("size", ct.c_uint32), ("config", ct.c_uint64),
                ("sample_period", ct.c_uint64), ("sample_type", ct.c_uint64),
                ("read_format", ct.c_uint64), ("flags", ct.c_uint64),
                ("wakeup_events", ct.c_uint32), ("rest", ct.c_uint8 * (PERF_ATTR_SIZE - 52))]


class _Key(ct.Structure):
    _fields_ = [("prog_id", ct.c_uint32), ("act", ct.c_uint32)]   # struct xdplab_exception_key


def _perf_event_open_tracepoint(tracepoint_id):
    nr = SYS_PERF_EVENT_OPEN.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, "perf_event_open: unknown system call number on %s"
                      % os.uname().machine)
    attr = _PerfEventAttr(type=PERF_TYPE_TRACEPOINT, size=PERF_ATTR_SIZE, config=tracepoint_id,
                          sample_period=1, wakeup_events=1)
    libc = ct.CDLL(None, use_errno=True)
    libc.syscall.restype = ct.c_long
    # pid -1, cpu 0: a tracepoint's BPF program runs on every CPU whatever the event's CPU.
    fd = libc.syscall(ct.c_long(nr), ct.byref(attr), ct.c_int(-1), ct.c_int(0), ct.c_int(-1),
                      ct.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        err = ct.get_errno()
        raise OSError(err, "perf_event_open(%s): %s" % (TRACEPOINT, os.strerror(err)))
    return int(fd)


class XdpExceptions:
    """The exception counter, compiled, attached, and read per program id."""

    def __init__(self):
        src, _ = read_bpf_file(SOURCE_NAME)
        header, _ = read_bpf_file("xdplab.h")
        header = header.decode()
        if parse_define(header, "XDPLAB_ACT_INVALID") != ACTIONS.index("invalid"):
            raise RuntimeError("XDPLAB_ACT_INVALID in xdplab.h is not %d" % ACTIONS.index("invalid"))
        text = inline_header(src.decode(), header, SOURCE_NAME)
        self._lib = map_calls()
        self._prog_fd, maps, meta = compile_in_child(text, [], ["exceptions"], prog=PROG_NAME,
                                                     prog_type="TRACEPOINT", tracepoint=TRACEPOINT)
        self._map_fd = maps["exceptions"]
        self._perf_fd = None
        try:
            self._perf_fd = _perf_event_open_tracepoint(meta["tracepoint_id"])
            fcntl.ioctl(self._perf_fd, PERF_EVENT_IOC_SET_BPF, self._prog_fd)
            fcntl.ioctl(self._perf_fd, PERF_EVENT_IOC_ENABLE, 0)
        except BaseException:
            self.close()
            raise

    def counts(self, prog_id):
        """{action: exceptions so far} of the program attached with this id."""
        out = {}
        for act, name in enumerate(ACTIONS):
            key, val = _Key(prog_id=prog_id, act=act), ct.c_uint64(0)
            found = self._lib.lookup(self._map_fd, ct.byref(key), ct.byref(val)) == 0
            out[name] = val.value if found else 0
        return out

    def close(self):
        for attr in ("_perf_fd", "_prog_fd", "_map_fd"):   # the event first: detached
            fd = getattr(self, attr, None)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
