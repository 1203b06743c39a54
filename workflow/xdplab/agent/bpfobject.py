"""Load a user's BPF ELF object (clang -target bpf, libbpf style: SEC("xdp"),
BTF-defined maps, `const volatile` globals) into the DUT's kernel, and the
tracing programs (fentry/fexit) that observe it.

ctypes on libbpf.so.1, like bpf.py's map and link calls: the agent must not
import BCC (it maps LLVM and clang, ~60 MiB resident, see bpf.MapCalls), and a
prebuilt object needs no compiler, only libbpf's loader (ELF, BTF, CO-RE
relocations, maps).  The agent runs under Debian's /usr/bin/python3 with the
standard library and libbpf1 (1.1.2) only.

    describe(path) -> {"programs": [{"name", "section", "type", "attach_type"}],
                       "globals": {name: {"section", "offset", "size", "type",
                                          "signed", ["enumerators"]}},
                       "maps": [names of the object's own maps]}
    BpfObject(path, *, load=None, globals=None, attach_targets=None, max_entries=None)
        .prog_fd(name), .map_fd(name), .program_names(), .loaded_names(),
        .attach_tracing(name) -> link fd, .log (libbpf's warnings), .close()
    prog_info(fd) -> dict;  prog_fd_by_id(id) -> fd;  main_func_name(prog_fd) -> str
    test_run(prog_fd, data, repeat=1) -> (retval, duration_ns, data_out)

A global's "type" is "u8".."u64", "s8".."s64", "bool", "char" or "enum" (the
settable ones), else "array", "struct", "union", "pointer", "float" or "other".
ObjectError is bad input and names the thing; LoadError (a kind of ObjectError)
is the kernel's refusal, with the verifier log (on a kernel without BPF
trampolines, fentry/fexit are refused with EPERM before any verifying: measured
on the 6.18 development VM, where tp_btf and iter programs load; LoadError then
says so).  prog_info, prog_fd_by_id and test_run let the syscall's OSError through.
libbpf's messages never reach the agent's stderr while this module calls it:
they are kept in the returned log.
"""

import ctypes as ct
import errno
import os
import sys
import threading

from .bpf import _libc, _load_libbpf, _sys_bpf

EM_BPF = 247
# A BPF object with debug info is well under a megabyte; libbpf reads the whole
# file into the agent's memory, so a mistaken path to a big file is refused first.
MAX_OBJECT_BYTES = 64 << 20
LOG_TAIL_LINES = 15

BPF_PROG_TEST_RUN_CMD = 10
BPF_PROG_GET_FD_BY_ID_CMD = 13
BPF_OBJ_GET_INFO_BY_FD_CMD = 15
BPF_RAW_TRACEPOINT_OPEN_CMD = 17
BPF_PROG_TYPE_TRACING = 26
# enum bpf_attach_type: the tracing attach types a bpf_link can hold by itself.
TRACING_ATTACH = {23: "tp_btf", 24: "fentry", 25: "fexit", 26: "fmod_ret"}

# BTF kinds and encodings (include/uapi/linux/btf.h).
BTF_INT, BTF_PTR, BTF_ARRAY, BTF_STRUCT, BTF_UNION, BTF_ENUM = 1, 2, 3, 4, 5, 6
BTF_TYPEDEF, BTF_VOLATILE, BTF_CONST, BTF_RESTRICT = 8, 9, 10, 11
BTF_FUNC, BTF_VAR, BTF_DATASEC, BTF_FLOAT, BTF_TYPE_TAG, BTF_ENUM64 = 12, 14, 15, 16, 18, 19
BTF_INT_SIGNED, BTF_INT_CHAR, BTF_INT_BOOL = 1, 2, 4
BTF_VAR_STATIC = 0
SETTABLE = {"bool", "char", "enum"}
_OTHER_KINDS = {BTF_PTR: "pointer", BTF_ARRAY: "array", BTF_STRUCT: "struct",
                BTF_UNION: "union", BTF_FLOAT: "float"}
# The sections libbpf turns into maps with an initial value (not .maps, license,
# nor the externs .kconfig/.ksyms that libbpf fills itself).
_DATA_SECTIONS = (".data", ".rodata", ".bss")


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


class _BpfProgInfo(ct.Structure):
    # struct bpf_prog_info up to attach_btf_id (232 bytes; checked against linux/bpf.h).
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8),
                ("jited_prog_len", ct.c_uint32), ("xlated_prog_len", ct.c_uint32),
                ("jited_prog_insns", ct.c_uint64), ("xlated_prog_insns", ct.c_uint64),
                ("load_time", ct.c_uint64), ("created_by_uid", ct.c_uint32),
                ("nr_map_ids", ct.c_uint32), ("map_ids", ct.c_uint64),
                ("name", ct.c_char * 16), ("ifindex", ct.c_uint32), ("gpl_compatible", ct.c_uint32),
                ("netns_dev", ct.c_uint64), ("netns_ino", ct.c_uint64),
                ("nr_jited_ksyms", ct.c_uint32), ("nr_jited_func_lens", ct.c_uint32),
                ("jited_ksyms", ct.c_uint64), ("jited_func_lens", ct.c_uint64),
                ("btf_id", ct.c_uint32), ("func_info_rec_size", ct.c_uint32),
                ("func_info", ct.c_uint64), ("nr_func_info", ct.c_uint32),
                ("nr_line_info", ct.c_uint32), ("line_info", ct.c_uint64),
                ("jited_line_info", ct.c_uint64), ("nr_jited_line_info", ct.c_uint32),
                ("line_info_rec_size", ct.c_uint32), ("jited_line_info_rec_size", ct.c_uint32),
                ("nr_prog_tags", ct.c_uint32), ("prog_tags", ct.c_uint64),
                ("run_time_ns", ct.c_uint64), ("run_cnt", ct.c_uint64),
                ("recursion_misses", ct.c_uint64), ("verified_insns", ct.c_uint32),
                ("attach_btf_obj_id", ct.c_uint32), ("attach_btf_id", ct.c_uint32),
                ("pad", ct.c_uint32)]


class _InfoAttr(ct.Structure):
    # union bpf_attr, info member (BPF_OBJ_GET_INFO_BY_FD).
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class _TestRunAttr(ct.Structure):
    # union bpf_attr, test member (BPF_PROG_TEST_RUN), 80 bytes.
    _fields_ = [("prog_fd", ct.c_uint32), ("retval", ct.c_uint32),
                ("data_size_in", ct.c_uint32), ("data_size_out", ct.c_uint32),
                ("data_in", ct.c_uint64), ("data_out", ct.c_uint64),
                ("repeat", ct.c_uint32), ("duration", ct.c_uint32),
                ("ctx_size_in", ct.c_uint32), ("ctx_size_out", ct.c_uint32),
                ("ctx_in", ct.c_uint64), ("ctx_out", ct.c_uint64),
                ("flags", ct.c_uint32), ("cpu", ct.c_uint32), ("batch_size", ct.c_uint32),
                ("pad", ct.c_uint32)]


class _GetIdAttr(ct.Structure):
    # union bpf_attr, BPF_*_GET_FD_BY_ID member: id, next_id, open_flags.
    _fields_ = [("id", ct.c_uint32), ("next_id", ct.c_uint32), ("open_flags", ct.c_uint32)]


class _RawTpAttr(ct.Structure):
    # union bpf_attr, raw_tracepoint member: name (NULL: the program's BTF target), prog_fd.
    _fields_ = [("name", ct.c_uint64), ("prog_fd", ct.c_uint32), ("pad", ct.c_uint32),
                ("cookie", ct.c_uint64)]


class _OpenOpts(ct.Structure):
    # struct bpf_object_open_opts, only sz set: libbpf accepts a shorter struct.
    _fields_ = [("sz", ct.c_size_t)]


class _BtfType(ct.Structure):
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
    "btf__type_by_id": (ct.POINTER(_BtfType), [_P, ct.c_uint32]),
    "btf__name_by_offset": (ct.c_char_p, [_P, ct.c_uint32]),
    "btf__load_from_kernel_by_id": (_P, [ct.c_uint32]),
    "btf__free": (None, [_P]),
    "libbpf_bpf_prog_type_str": (ct.c_char_p, [ct.c_int]),
    "libbpf_bpf_attach_type_str": (ct.c_char_p, [ct.c_int]),
}
_lib = None


def _libbpf():
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


class _Capture:
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


def _tail(text, n=LOG_TAIL_LINES):
    lines = [l for l in text.splitlines() if l.strip()]
    return "\n".join(lines[-n:])


def _verifier_tail(log):
    """The last lines of the verifier's own log when libbpf printed one (between its
    BEGIN/END PROG LOAD LOG marks), else of libbpf's messages."""
    begin = log.rfind("-- BEGIN PROG LOAD LOG --")
    if begin >= 0:
        end = log.find("-- END PROG LOAD LOG --", begin)
        body = log[log.find("\n", begin) + 1: end if end >= 0 else len(log)]
        if body.strip():
            return _tail(body)
    return _tail(log)


def _check_elf(path):
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


def _open(lib, path):
    """(bpf_object pointer, libbpf's messages); ObjectError when libbpf refuses the file."""
    path = _check_elf(path)
    opts = _OpenOpts(sz=ct.sizeof(_OpenOpts))
    with _Capture(lib) as cap:
        obj = lib.bpf_object__open_file(os.fsencode(path), ct.byref(opts))
        err = ct.get_errno()
    if not obj:
        raise ObjectError("libbpf could not open %s (%s):\n%s" % (
            path, os.strerror(err or errno.EINVAL), _tail(cap.text) or "no message"))
    return obj, cap.text


def _iter(lib, fn, obj):
    pos = fn(obj, None)
    while pos:
        yield pos
        pos = fn(obj, pos)


def _name(s):
    return s.decode(errors="replace") if s else None


def _type_str(fn, value):
    s = fn(value)
    return s.decode() if s else value


def _programs(lib, obj):
    """{name: bpf_program pointer}, in the object's order."""
    return {lib.bpf_program__name(p).decode(): p
            for p in _iter(lib, lib.bpf_object__next_program, obj)}


def _own_maps(lib, obj):
    return [lib.bpf_map__name(m).decode() for m in _iter(lib, lib.bpf_object__next_map, obj)
            if not lib.bpf_map__is_internal(m)]


def _btf_type(lib, btf, tid):
    t = lib.btf__type_by_id(btf, tid)
    if not t:
        raise ObjectError("BTF type %d missing" % tid)
    t0 = t.contents
    kind, vlen = (t0.info >> 24) & 0x1f, t0.info & 0xffff
    return t0, kind, vlen, ct.addressof(t0) + ct.sizeof(_BtfType)


def _u32s(addr, n):
    return list((ct.c_uint32 * n).from_address(addr)) if n else []


def _var_type(lib, btf, tid):
    """The description of a variable's type: {"type", "size", "signed"[, "enumerators"]}."""
    for _ in range(64):   # typedef/const/volatile chains are short; a loop is a bad BTF
        t, kind, vlen, extra = _btf_type(lib, btf, tid)
        if kind in (BTF_TYPEDEF, BTF_VOLATILE, BTF_CONST, BTF_RESTRICT, BTF_TYPE_TAG):
            tid = t.size
            continue
        if kind == BTF_INT:
            enc = _u32s(extra, 1)[0]
            bits, encoding = enc & 0xff, (enc >> 24) & 0xf
            signed = bool(encoding & BTF_INT_SIGNED)
            name = ("bool" if encoding & BTF_INT_BOOL else "char" if encoding & BTF_INT_CHAR
                    else "%s%d" % ("s" if signed else "u", bits))
            return {"type": name, "size": t.size, "signed": signed, "bits": bits}
        if kind in (BTF_ENUM, BTF_ENUM64):
            per = 2 if kind == BTF_ENUM else 3
            raw = _u32s(extra, vlen * per)
            values = {}
            for i in range(vlen):
                rec = raw[i * per:(i + 1) * per]
                v = rec[1] if kind == BTF_ENUM else rec[1] | (rec[2] << 32)
                values[_name(lib.btf__name_by_offset(btf, rec[0]))] = v
            nbits = t.size * 8
            # Before kflag marked signed enums (clang < 15), values were stored as s32.
            signed = bool(t.info >> 31) or (kind == BTF_ENUM and any(v >> 31 for v in values.values()))
            if signed:
                values = {k: v - (1 << nbits) if v >> (nbits - 1) else v for k, v in values.items()}
            return {"type": "enum", "size": t.size, "signed": signed, "bits": nbits,
                    "enumerators": values}
        return {"type": _OTHER_KINDS.get(kind, "other"), "size": None, "signed": False}
    raise ObjectError("BTF type %d: qualifier chain too long" % tid)


def _globals(lib, obj):
    """{name: description} of the object's global variables, from its BTF DATASECs."""
    btf = lib.bpf_object__btf(obj)
    if not btf:
        return {}
    out = {}
    for tid in range(1, lib.btf__type_cnt(btf)):
        t, kind, vlen, extra = _btf_type(lib, btf, tid)
        if kind != BTF_DATASEC:
            continue
        section = _name(lib.btf__name_by_offset(btf, t.name_off))
        if not any(section == p or section.startswith(p + ".") for p in _DATA_SECTIONS):
            continue
        secinfo = _u32s(extra, vlen * 3)
        for i in range(vlen):
            var_id, offset, size = secinfo[i * 3:(i + 1) * 3]
            v, vkind, _, vextra = _btf_type(lib, btf, var_id)
            if vkind != BTF_VAR or _u32s(vextra, 1)[0] == BTF_VAR_STATIC:
                continue      # static variables are private to their file (as in skeletons)
            desc = _var_type(lib, btf, v.size)
            desc.update(section=section, offset=offset, size=size)
            out[_name(lib.btf__name_by_offset(btf, v.name_off))] = desc
    return out


def _public(desc):
    d = {k: desc[k] for k in ("section", "offset", "size", "type", "signed")}
    if "enumerators" in desc:
        d["enumerators"] = dict(desc["enumerators"])
    return d


def describe(path):
    """What the object holds, without loading it: programs, settable globals, maps."""
    lib = _libbpf()
    obj, _ = _open(lib, path)
    try:
        programs = [{"name": name, "section": _name(lib.bpf_program__section_name(p)),
                     "type": _type_str(lib.libbpf_bpf_prog_type_str, lib.bpf_program__type(p)),
                     "attach_type": _type_str(lib.libbpf_bpf_attach_type_str,
                                              lib.bpf_program__expected_attach_type(p))}
                    for name, p in _programs(lib, obj).items()]
        return {"programs": programs,
                "globals": {k: _public(v) for k, v in _globals(lib, obj).items()},
                "maps": _own_maps(lib, obj)}
    finally:
        with _Capture(lib):
            lib.bpf_object__close(obj)


def _encode_global(name, desc, value):
    """The bytes of `value` for global `name`, or ObjectError saying why not."""
    kind = desc["type"]
    if not (kind in SETTABLE or kind[:1] in "us" and kind[1:].isdigit()):
        raise ObjectError("global %r is of type %s: only integer, bool and enum globals "
                          "can be set" % (name, kind))
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int):
        raise ObjectError("global %r (%s) needs an integer, not %s %r"
                          % (name, kind, type(value).__name__, value))
    if kind == "bool":
        lo, hi = 0, 1
    elif desc["signed"]:
        lo, hi = -(1 << (desc["bits"] - 1)), (1 << (desc["bits"] - 1)) - 1
    else:
        lo, hi = 0, (1 << desc["bits"]) - 1
    if not lo <= value <= hi:
        raise ObjectError("global %r (%s) takes %d..%d, not %d" % (name, kind, lo, hi, value))
    return value.to_bytes(desc["size"], sys.byteorder, signed=desc["signed"])


class BpfObject:
    """One opened and loaded BPF object; holds the program and map descriptors
    until close() (also a context manager).

    load: names of the programs to load (None: all); the others are not loaded.
    globals: {name: int|bool} written into the initial value of .rodata/.data/.bss
      before loading, checked against the variable's BTF type.
    attach_targets: {program: (target_prog_fd, target_func_name)} for fentry/fexit.
    max_entries: {map: n}, e.g. a ring buffer's size in bytes.
    tail_call_target: names of XDP programs loaded to be reached by a tail call from a
      program loaded by BCC (the collector): loaded without an expected attach type, as BCC
      loads, since a program array takes only programs that agree on it with its owner.
    .log: libbpf's warnings while opening and loading.
    """

    def __init__(self, path, *, load=None, globals=None, attach_targets=None, max_entries=None,
                 tail_call_target=()):
        self._lib = lib = _libbpf()
        self.path = os.fspath(path)
        self._obj, self.log = _open(lib, path)
        try:
            self._progs = _programs(lib, self._obj)
            self._configure(load, globals or {}, attach_targets or {}, max_entries or {})
            for name in tail_call_target:
                lib.bpf_program__set_expected_attach_type(self._program(name), 0)
            with _Capture(lib) as cap:
                err = lib.bpf_object__load(self._obj)
            self.log += cap.text
            if err < 0:
                self._load_failed(-err, self.log)
        except BaseException:
            self.close()
            raise

    def _program(self, name):
        p = self._progs.get(name)
        if p is None:
            raise ObjectError("no program %r in %s; its programs: %s"
                              % (name, self.path, ", ".join(self._progs) or "none"))
        return p

    def _configure(self, load, values, attach_targets, max_entries):
        lib = self._lib
        if isinstance(load, str):
            load = [load]
        if load is not None:
            wanted = {n: self._program(n) for n in load}
            for name, p in self._progs.items():
                if name not in wanted:
                    lib.bpf_program__set_autoload(p, False)
        for name, target in attach_targets.items():
            p = self._program(name)
            try:
                target_fd, func = int(target[0]), str(target[1])
            except (TypeError, ValueError, IndexError):
                raise ObjectError("attach target of program %r must be (target program fd, "
                                  "function name), not %r" % (name, target)) from None
            with _Capture(lib) as cap:
                err = lib.bpf_program__set_attach_target(p, int(target_fd), func.encode())
            self.log += cap.text
            if err < 0:
                raise ObjectError("program %r cannot attach to function %r of program fd %d "
                                  "(%s)%s" % (name, func, target_fd, os.strerror(-err),
                                              ":\n" + _tail(cap.text) if cap.text else ""))
        for name, n in max_entries.items():
            m = lib.bpf_object__find_map_by_name(self._obj, name.encode())
            if not m:
                raise ObjectError("no map %r in %s; its maps: %s" % (
                    name, self.path, ", ".join(_own_maps(lib, self._obj)) or "none"))
            if isinstance(n, bool) or not isinstance(n, int) or not 0 < n < 1 << 32:
                raise ObjectError("max_entries of map %r must be an integer 1..%d, not %r"
                                  % (name, (1 << 32) - 1, n))
            err = lib.bpf_map__set_max_entries(m, n)
            if err < 0:
                raise ObjectError("max_entries %d of map %r refused (%s)"
                                  % (n, name, os.strerror(-err)))
        if values:
            self._set_globals(values)

    def _set_globals(self, values):
        lib = self._lib
        known = _globals(lib, self._obj)
        if not known and not lib.bpf_object__btf(self._obj):
            raise ObjectError("%s has no BTF (build it with clang -g), so its globals cannot "
                              "be typed or set" % self.path)
        for name, value in values.items():
            desc = known.get(name)
            if desc is None:
                raise ObjectError("no global %r in %s; its globals: %s"
                                  % (name, self.path, ", ".join(sorted(known)) or "none"))
            raw = _encode_global(name, desc, value)
            m = lib.bpf_object__find_map_by_name(self._obj, desc["section"].encode())
            size = ct.c_size_t()
            data = lib.bpf_map__initial_value(m, ct.byref(size)) if m else None
            if not data or desc["offset"] + len(raw) > size.value:
                raise ObjectError("global %r: section %s has no initial value to write"
                                  % (name, desc["section"]))
            # Written in place, as a libbpf skeleton does: libbpf copies this
            # memory into the map when it creates it at load.
            ct.memmove(data + desc["offset"], raw, len(raw))

    def _load_failed(self, err, log):
        prog = None
        for line in log.splitlines():
            if "BPF program load failed" in line or "failed to load program" in line:
                prog = line.split("'")[1] if line.count("'") >= 2 else None
                break
        what = "program %r of %s" % (prog, self.path) if prog else self.path
        if err == errno.EPERM and prog in self._progs and "BEGIN PROG LOAD LOG" not in log:
            # As root, EPERM with no verifier log is the kernel refusing this kind of
            # program as a whole (libbpf's own hint, RLIMIT_MEMLOCK, is long obsolete):
            # seen with fentry/fexit/fmod_ret/lsm, where BPF trampolines are unavailable.
            kind = _type_str(self._lib.libbpf_bpf_attach_type_str,
                             self._lib.bpf_program__expected_attach_type(self._progs[prog]))
            raise LoadError("the kernel refused to load %s (Operation not permitted) before "
                            "verifying it: this kernel does not allow %s programs here"
                            % (what, kind), log, err)
        tail = _verifier_tail(log)
        raise LoadError("the kernel refused to load %s (%s)%s" % (
            what, os.strerror(err), "; the log ends:\n" + tail if tail else ""), log, err)

    def program_names(self):
        return list(self._progs)

    def loaded_names(self):
        """The programs that were loaded (those of `load`, or all)."""
        return [n for n, p in self._progs.items() if self._lib.bpf_program__fd(p) >= 0]

    def prog_fd(self, name):
        fd = self._lib.bpf_program__fd(self._program(name))
        if fd < 0:
            raise ObjectError("program %r of %s was not loaded (loaded: %s)"
                              % (name, self.path, ", ".join(self.loaded_names()) or "none"))
        return fd

    def map_fd(self, name):
        """A map's fd, by its name in the source, or by section (".rodata") for globals."""
        m = self._lib.bpf_object__find_map_by_name(self._obj, name.encode()) if self._obj else None
        fd = self._lib.bpf_map__fd(m) if m else -1
        if fd < 0:
            raise ObjectError("no map %r in %s; its maps: %s" % (
                name, self.path, ", ".join(_own_maps(self._lib, self._obj)) if self._obj else "closed"))
        return fd

    def attach_tracing(self, name):
        """Attach a loaded fentry/fexit/fmod_ret/tp_btf program to the target it was
        loaded for; returns the link fd, which the caller owns: closing it detaches."""
        p = self._program(name)
        fd = self.prog_fd(name)
        kind = self._lib.bpf_program__expected_attach_type(p)
        if self._lib.bpf_program__type(p) != BPF_PROG_TYPE_TRACING or kind not in TRACING_ATTACH:
            raise ObjectError("program %r is not an fentry/fexit/fmod_ret/tp_btf program "
                              "(section %s)" % (name, _name(self._lib.bpf_program__section_name(p))))
        link = self._lib.bpf_link_create(fd, 0, kind, None)
        if link < 0 and -link == errno.EINVAL:
            # Kernels before 5.19 attach tracing programs only through raw_tracepoint_open.
            try:
                return _sys_bpf(BPF_RAW_TRACEPOINT_OPEN_CMD, _RawTpAttr(name=0, prog_fd=fd))
            except OSError as e:
                link = -e.errno
        if link < 0:
            raise ObjectError("attaching %s program %r failed (%s)"
                              % (TRACING_ATTACH[kind], name, os.strerror(-link)))
        return link

    def close(self):
        """bpf_object__close: the program and map descriptors (not the links handed out)."""
        obj, self._obj = getattr(self, "_obj", None), None
        self._progs = {}
        if obj:
            with _Capture(self._lib):
                self._lib.bpf_object__close(obj)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _info(fd, info):
    try:
        kind = os.readlink("/proc/self/fd/%d" % fd)
    except OSError as e:
        raise ObjectError("fd %d: %s" % (fd, e.strerror)) from None
    if kind != "anon_inode:bpf-prog":     # maps, links and BTF answer with other structs
        raise ObjectError("fd %d is not a BPF program (%s)" % (fd, kind))
    _sys_bpf(BPF_OBJ_GET_INFO_BY_FD_CMD, _InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info),
                                                  info=ct.addressof(info)))
    return info


def prog_info(fd):
    """The kernel's facts about a loaded program (BPF_OBJ_GET_INFO_BY_FD)."""
    i = _info(fd, _BpfProgInfo())
    try:
        ptype = _type_str(_libbpf().libbpf_bpf_prog_type_str, i.type)
    except ObjectError:
        ptype = i.type
    return {"id": i.id, "name": i.name.decode(errors="replace"), "tag": bytes(i.tag).hex(),
            "type": ptype, "xlated_insns": i.xlated_prog_len // 8,
            "jited_bytes": i.jited_prog_len, "nr_map_ids": i.nr_map_ids, "btf_id": i.btf_id,
            "run_time_ns": i.run_time_ns, "run_cnt": i.run_cnt,
            "verified_insns": i.verified_insns}


def prog_fd_by_id(prog_id):
    """A new fd on the loaded program with this id (the caller closes it)."""
    return _sys_bpf(BPF_PROG_GET_FD_BY_ID_CMD, _GetIdAttr(id=prog_id))


def main_func_name(prog_fd):
    """The BTF name of the program's entry function: what an fentry/fexit on this
    program names as its target (the program's own name is cut at 15 characters)."""
    finfo = (ct.c_uint32 * 2)()      # struct bpf_func_info: insn_off, type_id
    i = _BpfProgInfo(nr_func_info=1, func_info_rec_size=8, func_info=ct.addressof(finfo))
    _info(prog_fd, i)
    if not i.btf_id or not i.nr_func_info:
        raise ObjectError("program %r (id %d) was loaded without BTF (clang -g), so fentry/"
                          "fexit cannot observe it" % (i.name.decode(errors="replace"), i.id))
    lib = _libbpf()
    with _Capture(lib) as cap:
        btf = lib.btf__load_from_kernel_by_id(i.btf_id)
    if not btf:
        raise ObjectError("BTF %d of program id %d cannot be read: %s"
                          % (i.btf_id, i.id, _tail(cap.text, 3) or "no message"))
    try:
        t, kind, _, _ = _btf_type(lib, btf, finfo[1])
        if kind != BTF_FUNC:
            raise ObjectError("program id %d: func_info points at BTF kind %d, not a function"
                              % (i.id, kind))
        return _name(lib.btf__name_by_offset(btf, t.name_off))
    finally:
        lib.btf__free(btf)


def test_run(prog_fd, data, repeat=1):
    """Run the program on `data` in the kernel (BPF_PROG_TEST_RUN): (return value,
    mean duration per run in ns, the packet as the program left it)."""
    data = bytes(data)
    inp = ct.create_string_buffer(data, len(data))
    out = ct.create_string_buffer(len(data) + 4096)   # room for bpf_xdp_adjust_head/tail
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(data), data_in=ct.addressof(inp),
                        data_size_out=len(out), data_out=ct.addressof(out), repeat=repeat)
    _sys_bpf(BPF_PROG_TEST_RUN_CMD, attr)
    return attr.retval, attr.duration, out.raw[:attr.data_size_out]


test_run.__test__ = False   # not a pytest test when imported into a test module
