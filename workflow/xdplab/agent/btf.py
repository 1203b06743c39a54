"""The BTF of a user's BPF object, read through libbpf: its global variables (the
`const volatile` ones a trial sets) and their types, and the bytes a value takes in one.
Nothing here loads anything.
"""

import ctypes as ct
import sys

from .libbpfobj import BtfType, ObjectError, cstr

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


def btf_type(lib, btf, tid):
    t = lib.btf__type_by_id(btf, tid)
    if not t:
        raise ObjectError("BTF type %d missing" % tid)
    t0 = t.contents
    kind, vlen = (t0.info >> 24) & 0x1f, t0.info & 0xffff
    return t0, kind, vlen, ct.addressof(t0) + ct.sizeof(BtfType)


def u32s(addr, n):
    return list((ct.c_uint32 * n).from_address(addr)) if n else []


def var_type(lib, btf, tid):
    """The description of a variable's type: {"type", "size", "signed"[, "enumerators"]}."""
    for _ in range(64):   # typedef/const/volatile chains are short; a loop is a bad BTF
        t, kind, vlen, extra = btf_type(lib, btf, tid)
        if kind in (BTF_TYPEDEF, BTF_VOLATILE, BTF_CONST, BTF_RESTRICT, BTF_TYPE_TAG):
            tid = t.size
            continue
        if kind == BTF_INT:
            enc = u32s(extra, 1)[0]
            bits, encoding = enc & 0xff, (enc >> 24) & 0xf
            signed = bool(encoding & BTF_INT_SIGNED)
            name = ("bool" if encoding & BTF_INT_BOOL else "char" if encoding & BTF_INT_CHAR
                    else "%s%d" % ("s" if signed else "u", bits))
            return {"type": name, "size": t.size, "signed": signed, "bits": bits}
        if kind in (BTF_ENUM, BTF_ENUM64):
            per = 2 if kind == BTF_ENUM else 3
            raw = u32s(extra, vlen * per)
            values = {}
            for i in range(vlen):
                rec = raw[i * per:(i + 1) * per]
                v = rec[1] if kind == BTF_ENUM else rec[1] | (rec[2] << 32)
                values[cstr(lib.btf__name_by_offset(btf, rec[0]))] = v
            nbits = t.size * 8
            # Before kflag marked signed enums (clang < 15), values were stored as s32.
            signed = bool(t.info >> 31) or (kind == BTF_ENUM and any(v >> 31 for v in values.values()))
            if signed:
                values = {k: v - (1 << nbits) if v >> (nbits - 1) else v for k, v in values.items()}
            return {"type": "enum", "size": t.size, "signed": signed, "bits": nbits,
                    "enumerators": values}
        return {"type": _OTHER_KINDS.get(kind, "other"), "size": None, "signed": False}
    raise ObjectError("BTF type %d: qualifier chain too long" % tid)


def globals_of(lib, obj):
    """{name: description} of the object's global variables, from its BTF DATASECs."""
    btf = lib.bpf_object__btf(obj)
    if not btf:
        return {}
    out = {}
    for tid in range(1, lib.btf__type_cnt(btf)):
        t, kind, vlen, extra = btf_type(lib, btf, tid)
        if kind != BTF_DATASEC:
            continue
        section = cstr(lib.btf__name_by_offset(btf, t.name_off))
        if not any(section == p or section.startswith(p + ".") for p in _DATA_SECTIONS):
            continue
        secinfo = u32s(extra, vlen * 3)
        for i in range(vlen):
            var_id, offset, size = secinfo[i * 3:(i + 1) * 3]
            v, vkind, _, vextra = btf_type(lib, btf, var_id)
            if vkind != BTF_VAR or u32s(vextra, 1)[0] == BTF_VAR_STATIC:
                continue      # static variables are private to their file (as in skeletons)
            desc = var_type(lib, btf, v.size)
            desc.update(section=section, offset=offset, size=size)
            out[cstr(lib.btf__name_by_offset(btf, v.name_off))] = desc
    return out


def public(desc):
    d = {k: desc[k] for k in ("section", "offset", "size", "type", "signed")}
    if "enumerators" in desc:
        d["enumerators"] = dict(desc["enumerators"])
    return d


def encode_global(name, desc, value):
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
