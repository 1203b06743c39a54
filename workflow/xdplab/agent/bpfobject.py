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

libbpfobj.py holds libbpf's calls, the errors and the message capture; btf.py reads
the globals from the object's BTF.
"""

import ctypes as ct
import errno
import os

from .bpf import _sys_bpf
from .btf import BTF_FUNC, btf_type, encode_global, globals_of, public
from .libbpfobj import (Capture, LoadError, ObjectError, cstr, libbpf, open_object, own_maps,
                        programs_of, tail, type_str, verifier_tail)

BPF_PROG_TEST_RUN_CMD = 10
BPF_PROG_GET_FD_BY_ID_CMD = 13
BPF_OBJ_GET_INFO_BY_FD_CMD = 15
BPF_RAW_TRACEPOINT_OPEN_CMD = 17
BPF_PROG_TYPE_TRACING = 26
# enum bpf_attach_type: the tracing attach types a bpf_link can hold by itself.
TRACING_ATTACH = {23: "tp_btf", 24: "fentry", 25: "fexit", 26: "fmod_ret"}


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


def describe(path):
    """What the object holds, without loading it: programs, settable globals, maps."""
    lib = libbpf()
    obj, _ = open_object(lib, path)
    try:
        programs = [{"name": name, "section": cstr(lib.bpf_program__section_name(p)),
                     "type": type_str(lib.libbpf_bpf_prog_type_str, lib.bpf_program__type(p)),
                     "attach_type": type_str(lib.libbpf_bpf_attach_type_str,
                                              lib.bpf_program__expected_attach_type(p))}
                    for name, p in programs_of(lib, obj).items()]
        return {"programs": programs,
                "globals": {k: public(v) for k, v in globals_of(lib, obj).items()},
                "maps": own_maps(lib, obj)}
    finally:
        with Capture(lib):
            lib.bpf_object__close(obj)


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
        self._lib = lib = libbpf()
        self.path = os.fspath(path)
        self._obj, self.log = open_object(lib, path)
        try:
            self._progs = programs_of(lib, self._obj)
            self._configure(load, globals or {}, attach_targets or {}, max_entries or {})
            for name in tail_call_target:
                lib.bpf_program__set_expected_attach_type(self._program(name), 0)
            with Capture(lib) as cap:
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
            with Capture(lib) as cap:
                err = lib.bpf_program__set_attach_target(p, int(target_fd), func.encode())
            self.log += cap.text
            if err < 0:
                raise ObjectError("program %r cannot attach to function %r of program fd %d "
                                  "(%s)%s" % (name, func, target_fd, os.strerror(-err),
                                              ":\n" + tail(cap.text) if cap.text else ""))
        for name, n in max_entries.items():
            m = lib.bpf_object__find_map_by_name(self._obj, name.encode())
            if not m:
                raise ObjectError("no map %r in %s; its maps: %s" % (
                    name, self.path, ", ".join(own_maps(lib, self._obj)) or "none"))
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
        known = globals_of(lib, self._obj)
        if not known and not lib.bpf_object__btf(self._obj):
            raise ObjectError("%s has no BTF (build it with clang -g), so its globals cannot "
                              "be typed or set" % self.path)
        for name, value in values.items():
            desc = known.get(name)
            if desc is None:
                raise ObjectError("no global %r in %s; its globals: %s"
                                  % (name, self.path, ", ".join(sorted(known)) or "none"))
            raw = encode_global(name, desc, value)
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
            kind = type_str(self._lib.libbpf_bpf_attach_type_str,
                             self._lib.bpf_program__expected_attach_type(self._progs[prog]))
            raise LoadError("the kernel refused to load %s (Operation not permitted) before "
                            "verifying it: this kernel does not allow %s programs here"
                            % (what, kind), log, err)
        last = verifier_tail(log)
        raise LoadError("the kernel refused to load %s (%s)%s" % (
            what, os.strerror(err), "; the log ends:\n" + last if last else ""), log, err)

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
                name, self.path, ", ".join(own_maps(self._lib, self._obj)) if self._obj else "closed"))
        return fd

    def attach_tracing(self, name):
        """Attach a loaded fentry/fexit/fmod_ret/tp_btf program to the target it was
        loaded for; returns the link fd, which the caller owns: closing it detaches."""
        p = self._program(name)
        fd = self.prog_fd(name)
        kind = self._lib.bpf_program__expected_attach_type(p)
        if self._lib.bpf_program__type(p) != BPF_PROG_TYPE_TRACING or kind not in TRACING_ATTACH:
            raise ObjectError("program %r is not an fentry/fexit/fmod_ret/tp_btf program "
                              "(section %s)" % (name, cstr(self._lib.bpf_program__section_name(p))))
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
            with Capture(self._lib):
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
        ptype = type_str(libbpf().libbpf_bpf_prog_type_str, i.type)
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
    lib = libbpf()
    with Capture(lib) as cap:
        btf = lib.btf__load_from_kernel_by_id(i.btf_id)
    if not btf:
        raise ObjectError("BTF %d of program id %d cannot be read: %s"
                          % (i.btf_id, i.id, tail(cap.text, 3) or "no message"))
    try:
        t, kind, _, _ = btf_type(lib, btf, finfo[1])
        if kind != BTF_FUNC:
            raise ObjectError("program id %d: func_info points at BTF kind %d, not a function"
                              % (i.id, kind))
        return cstr(lib.btf__name_by_offset(btf, t.name_off))
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
