"""The collector's source and header: where they are read from, and what the
agent takes from the header (pure parsing, no BCC, no root).

In dist/xdplab-agent.pyz the two files travel inside the archive
(xdplab/agent/bpf/); run unzipped, they are read from the repository's bpf/.
BCC compiles from text and would look for "xdplab.h" on disk, so the header is
inlined in place of its #include line: nothing is extracted anywhere.
"""

import ctypes as ct
import hashlib
import os
import pkgutil
import re

SOURCE_NAME = "collector.bpf.c"
HEADER_NAME = "xdplab.h"
INCLUDE_RE = re.compile(r'^#include\s+"xdplab\.h"[ \t]*$', re.M)
REPO_BPF_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "..", "..", "..", "bpf"))


def read_bpf_file(name):
    """Bytes of a bpf file: the copy inside the package (pyz), else the repository's."""
    try:
        data = pkgutil.get_data(__package__ or "xdplab.agent", "bpf/" + name)
        if data is not None:
            return data, "package:xdplab/agent/bpf/" + name
    except OSError:
        pass
    path = os.path.join(REPO_BPF_DIR, name)
    with open(path, "rb") as f:
        return f.read(), path


class Sources:
    """collector.bpf.c and xdplab.h as read once at start, with their digests."""

    def __init__(self, source, header, source_origin="", header_origin=""):
        self.source = source
        self.header = header
        self.source_origin = source_origin
        self.header_origin = header_origin
        self.source_sha256 = hashlib.sha256(source).hexdigest()
        self.header_sha256 = hashlib.sha256(header).hexdigest()
        text = header.decode()
        self.counters = parse_counter_enum(text)
        self.feature_fields = parse_feature_fields(text)
        self.max_run_ids = parse_define(text, "XDPLAB_MAX_RUN_IDS")
        self.batch = parse_define(text, "XDPLAB_BATCH")
        self.record_size = ct.sizeof(self.feature_struct())
        self.text = inline_header(source.decode(), text)

    @classmethod
    def load(cls):
        src, so = read_bpf_file(SOURCE_NAME)
        hdr, ho = read_bpf_file(HEADER_NAME)
        return cls(src, hdr, so, ho)

    def feature_struct(self):
        return type("XdplabFeature", (ct.Structure,),
                    {"_fields_": [(n, _CTYPES[t]) for n, t in self.feature_fields]})


def inline_header(source_text, header_text, source_name=SOURCE_NAME):
    if len(INCLUDE_RE.findall(source_text)) != 1:
        raise RuntimeError('%s must #include "xdplab.h" exactly once' % source_name)
    return INCLUDE_RE.sub(lambda m: "/* xdplab.h, inlined by the agent */\n" + header_text,
                          source_text)


def _strip_comments(text):
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", text, flags=re.S))


def parse_define(header_text, name):
    m = re.search(r"^#define\s+%s\s+(\w+)\s*(/\*.*)?$" % re.escape(name), header_text, re.M)
    if not m:
        raise RuntimeError("#define %s not found in xdplab.h" % name)
    return int(m.group(1), 0)


def parse_counter_enum(header_text):
    """Counter indices from `enum xdplab_counter`: {"seen": 0, ...} without
    XDPLAB_NR_COUNTERS, names lower-cased without the XDPLAB_ prefix."""
    m = re.search(r"enum\s+xdplab_counter\s*\{(.*?)\}", header_text, re.S)
    if not m:
        raise RuntimeError("enum xdplab_counter not found in xdplab.h")
    out, nxt = {}, 0
    for item in _strip_comments(m.group(1)).split(","):
        item = item.strip()
        if not item:
            continue
        name, _, value = item.partition("=")
        idx = int(value.strip(), 0) if value.strip() else nxt
        out[name.strip()] = idx
        nxt = idx + 1
    if "XDPLAB_NR_COUNTERS" not in out:
        raise RuntimeError("enum xdplab_counter has no XDPLAB_NR_COUNTERS")
    del out["XDPLAB_NR_COUNTERS"]
    return {k[len("XDPLAB_"):].lower(): v for k, v in out.items()}


_CTYPES = {"__u64": ct.c_uint64, "__u32": ct.c_uint32, "__u16": ct.c_uint16, "__u8": ct.c_uint8,
           "__be64": ct.c_uint64, "__be32": ct.c_uint32, "__be16": ct.c_uint16,
           "__s64": ct.c_int64, "__s32": ct.c_int32, "__s16": ct.c_int16, "__s8": ct.c_int8,
           "u64": ct.c_uint64, "u32": ct.c_uint32, "u16": ct.c_uint16, "u8": ct.c_uint8}


def parse_feature_fields(header_text):
    """[(name, C type)] of `struct xdplab_feature`, in order.

    BCC 0.26's RingBuf.event() cannot map the kernel's __u64/__u32 types (it
    exits the process), so the record layout is read from the header, which
    stays the only definition.  Natural C alignment: the struct is not packed."""
    m = re.search(r"struct\s+xdplab_feature\s*\{(.*?)\}\s*(__attribute__[^;]*)?;",
                  header_text, re.S)
    if not m:
        raise RuntimeError("struct xdplab_feature not found in xdplab.h")
    if m.group(2):
        raise RuntimeError("struct xdplab_feature has attributes the agent does not handle")
    fields = []
    for decl in _strip_comments(m.group(1)).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        fm = re.fullmatch(r"(\w+)\s+(\w+)", decl)
        if not fm or fm.group(1) not in _CTYPES:
            raise RuntimeError("struct xdplab_feature: cannot map field %r" % decl)
        fields.append((fm.group(2), fm.group(1)))
    return fields
