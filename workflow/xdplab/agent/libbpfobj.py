"""libbpf.so.1's object loader through ctypes, as bpfobject.py and btf.py use it: the
signatures of its calls, its errors turned into ObjectError and LoadError, its
messages kept (never printed) while it runs, and the checks made on a file before
libbpf reads it.
"""

import ctypes as ct
import errno
import os
import sys
import threading

from .bpf import _libc, _load_libbpf

EM_BPF = 247
# A BPF object with debug info is well under a megabyte; libbpf reads the whole
# file into the agent's memory, so a mistaken path to a big file is refused first.
MAX_OBJECT_BYTES = 64 << 20
LOG_TAIL_LINES = 15


class ObjectError(Exception):
    """Bad input (file, program, global, map): names the thing; safe to show a user."""


class LoadError(ObjectError):
    """The kernel (or libbpf on its behalf) refused to load the object: str() is one
    sentence and the verifier log's last lines, .log the whole libbpf/verifier text,
    .errno the kernel's error number (EACCES: the verifier; EPERM with no verifier
    log: the kernel does not allow this kind of program here)."""

    def __init__(self, message, log, errno=None):
        super().__init__(message)
        self.log, self.errno = log, errno


class _OpenOpts(ct.Structure):
    # struct bpf_object_open_opts, only sz set: libbpf accepts a shorter struct.
    _fields_ = [("sz", ct.c_size_t)]


class BtfType(ct.Structure):
    # struct btf_type: name_off, info (vlen:16, kind:5 at bit 24, kflag at bit 31), size|type.
    _fields_ = [("name_off", ct.c_uint32), ("info", ct.c_uint32), ("size", ct.c_uint32)]


_PRINT_FN = ct.CFUNCTYPE(ct.c_int, ct.c_int, ct.c_void_p, ct.c_void_p)
_P = ct.c_void_p
_SIGS = {   # name: (restype, argtypes); pointers to libbpf's opaque structs are c_void_p
    "libbpf_set_print": (_P, [_P]),
    "bpf_object__open_file": (_P, [ct.c_char_p, ct.POINTER(_OpenOpts)]),
    "bpf_object__load": (ct.c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__btf": (_P, [_P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_object__find_map_by_name": (_P, [_P, ct.c_char_p]),
    "bpf_program__name": (ct.c_char_p, [_P]),
    "bpf_program__section_name": (ct.c_char_p, [_P]),
    "bpf_program__type": (ct.c_int, [_P]),
    "bpf_program__expected_attach_type": (ct.c_int, [_P]),
    "bpf_program__set_autoload": (ct.c_int, [_P, ct.c_bool]),
    "bpf_program__set_attach_target": (ct.c_int, [_P, ct.c_int, ct.c_char_p]),
    "bpf_program__set_expected_attach_type": (ct.c_int, [_P, ct.c_int]),
    "bpf_program__fd": (ct.c_int, [_P]),
    "bpf_map__name": (ct.c_char_p, [_P]),
    "bpf_map__fd": (ct.c_int, [_P]),
    "bpf_map__is_internal": (ct.c_bool, [_P]),
    "bpf_map__initial_value": (_P, [_P, ct.POINTER(ct.c_size_t)]),
    "bpf_map__set_max_entries": (ct.c_int, [_P, ct.c_uint32]),
    "btf__type_cnt": (ct.c_uint32, [_P]),
    "btf__type_by_id": (ct.POINTER(BtfType), [_P, ct.c_uint32]),
    "btf__name_by_offset": (ct.c_char_p, [_P, ct.c_uint32]),
    "btf__load_from_kernel_by_id": (_P, [ct.c_uint32]),
    "btf__free": (None, [_P]),
    "libbpf_bpf_prog_type_str": (ct.c_char_p, [ct.c_int]),
    "libbpf_bpf_attach_type_str": (ct.c_char_p, [ct.c_int]),
}
_lib = None


def libbpf():
    global _lib
    if _lib is None:
        lib = _load_libbpf()
        if not lib:
            raise ObjectError("libbpf.so.1 is not installed (Debian package libbpf1)")
        for name, (res, args) in _SIGS.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _libc.vasprintf.argtypes = [ct.POINTER(ct.c_void_p), ct.c_void_p, ct.c_void_p]
        _libc.free.argtypes = [ct.c_void_p]
        _lib = lib
    return _lib


# libbpf's print function is process-wide: one capture at a time.
_print_lock = threading.RLock()


class Capture:
    """Route libbpf's warnings and info into a list while held (level DEBUG dropped:
    hundreds of lines per load), then put the previous print function back."""

    def __init__(self, lib):
        self.lib, self.lines, self._old = lib, [], None
        self._fn = _PRINT_FN(self._print)      # kept: libbpf holds the pointer

    def _print(self, level, fmt, ap):
        if level > 1:
            return 0
        # va_list arrives as a pointer on x86_64 and aarch64; vasprintf consumes it once.
        try:
            out = ct.c_void_p()
            n = _libc.vasprintf(ct.byref(out), fmt, ap)
            if n >= 0 and out.value:
                self.lines.append(ct.string_at(out.value, n).decode(errors="replace"))
                _libc.free(out)
        except Exception as e:   # ctypes would print it on stderr
            self.lines.append("(a libbpf message was lost: %s)\n" % e)
        return 0

    def __enter__(self):
        _print_lock.acquire()
        self._old = self.lib.libbpf_set_print(ct.cast(self._fn, ct.c_void_p))
        return self

    def __exit__(self, *exc):
        self.lib.libbpf_set_print(self._old)
        _print_lock.release()

    @property
    def text(self):
        return "".join(self.lines)


def tail(text, n=LOG_TAIL_LINES):
    lines = [l for l in text.splitlines() if l.strip()]
    return "\n".join(lines[-n:])


def verifier_tail(log):
    """The last lines of the verifier's own log when libbpf printed one (between its
    BEGIN/END PROG LOAD LOG marks), else of libbpf's messages."""
    begin = log.rfind("-- BEGIN PROG LOAD LOG --")
    if begin >= 0:
        end = log.find("-- END PROG LOAD LOG --", begin)
        body = log[log.find("\n", begin) + 1: end if end >= 0 else len(log)]
        if body.strip():
            return tail(body)
    return tail(log)


def check_elf(path):
    """Refuse, before libbpf sees it, a path that is not a BPF relocatable object."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise ObjectError("BPF object %s: %s" % (path, e.strerror)) from None
    if not os.path.isfile(path):
        raise ObjectError("BPF object %s is not a regular file" % path)
    if st.st_size > MAX_OBJECT_BYTES:
        raise ObjectError("BPF object %s is %d bytes, more than the %d a BPF object can "
                          "reasonably be" % (path, st.st_size, MAX_OBJECT_BYTES))
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF":
        raise ObjectError("%s is not an ELF file (build it with clang -target bpf -c)" % path)
    order = {1: "little", 2: "big"}.get(head[5])
    machine = int.from_bytes(head[18:20], order or "little")
    if head[4] != 2 or order is None or machine != EM_BPF:
        raise ObjectError("%s is an ELF file for machine %d, not BPF (%d): build it with "
                          "clang -target bpf -c" % (path, machine, EM_BPF))
    if order != sys.byteorder:
        raise ObjectError("%s is %s-endian BPF, this host is %s-endian: build it with "
                          "-target bpf" % (path, order, sys.byteorder))
    if int.from_bytes(head[16:18], order) != 1:
        raise ObjectError("%s is a linked BPF ELF, not a relocatable object (.o from "
                          "clang -c)" % path)
    return path


def open_object(lib, path):
    """(bpf_object pointer, libbpf's messages); ObjectError when libbpf refuses the file."""
    path = check_elf(path)
    opts = _OpenOpts(sz=ct.sizeof(_OpenOpts))
    with Capture(lib) as cap:
        obj = lib.bpf_object__open_file(os.fsencode(path), ct.byref(opts))
        err = ct.get_errno()
    if not obj:
        raise ObjectError("libbpf could not open %s (%s):\n%s" % (
            path, os.strerror(err or errno.EINVAL), tail(cap.text) or "no message"))
    return obj, cap.text


def iterate(lib, fn, obj):
    pos = fn(obj, None)
    while pos:
        yield pos
        pos = fn(obj, pos)


def cstr(s):
    return s.decode(errors="replace") if s else None


def type_str(fn, value):
    s = fn(value)
    return s.decode() if s else value


def programs_of(lib, obj):
    """{name: bpf_program pointer}, in the object's order."""
    return {lib.bpf_program__name(p).decode(): p
            for p in iterate(lib, lib.bpf_object__next_program, obj)}


def own_maps(lib, obj):
    return [lib.bpf_map__name(m).decode() for m in iterate(lib, lib.bpf_object__next_map, obj)
            if not lib.bpf_map__is_internal(m)]
