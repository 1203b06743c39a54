"""The program under test when it is the user's: where its object comes from, loading
it, and what the kernel counts of its verdicts.

How xdplab observes it (observe full or verdicts): the collector runs first and hands each
frame to the user's program by a tail call (collector.bpf.c, chain mode), so the records and
counters are the collector's own and the verdict is the program's.  The verdicts are
counted where the kernel counts them: the driver's XDP statistics of the interface
(`ethtool -S`: veth's rx_queue_<n>_xdp_{packets,drops,tx,redirect}), read at arm and at
disarm; what passed is also what tcpdump saw.  (fexit on the program, as xdpdump does,
would give each packet's verdict and run time, but needs BPF trampolines, which kernels
such as this project's test machines refuse with EPERM.)  With observe off, or a program
the user attached, nothing of xdplab's runs in the XDP path.

A user's XDP program is code running as root on the DUT, so the agent loads one only
if its operator allowed it when starting the agent: `--allow-programs DIR` (objects
found in DIR, named by their sha256) or `--allow-program-upload` (whoever holds the
token may upload an object).  Both are off by default.  An object is always named by
its sha256, which the trial records; an uploaded one is checked against the sha256
its client sent, and kept under <state_dir>/programs/<sha256>.o.

`attached` (the user's own loader attached the program) needs no permission: xdplab
attaches nothing and detaches nothing on that interface, it only observes.
"""

import hashlib
import logging
import os
import re
import tempfile

from .api import ApiError
from .bpf import fdinfo
from .capture import sha256_file as sha256_of

log = logging.getLogger("xdplab-agent")

MAX_OBJECT_BYTES = 8 << 20            # a large XDP object (katran's) is well under 1 MiB
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ELF_MAGIC = b"\x7fELF"
EM_BPF = 247
LIBXDP_DISPATCHER = "xdp_dispatcher"   # the name libxdp gives its dispatcher program


def check_elf_bpf(data, what):
    """Refuse what is not an ELF object for the BPF machine, before libbpf sees it."""
    if len(data) < 20 or data[:4] != ELF_MAGIC:
        raise ApiError(400, "%s: not an ELF object" % what)
    order = "little" if data[5] == 1 else "big"
    if int.from_bytes(data[18:20], order) != EM_BPF:
        raise ApiError(400, "%s: an ELF object for another machine, not BPF (build it with "
                            "clang -target bpf)" % what)


class ProgramStore:
    """Objects the agent may load, by sha256."""

    def __init__(self, state_dir, allow_dir=None, allow_upload=False):
        self.allow_dir = os.path.realpath(allow_dir) if allow_dir else None
        self.allow_upload = bool(allow_upload)
        self.upload_dir = os.path.join(state_dir, "programs")

    def allowed(self):
        return {"allow_programs": self.allow_dir, "allow_program_upload": self.allow_upload}

    def _refusal(self):
        if not self.allow_dir and not self.allow_upload:
            return ("this agent loads no user programs: its operator did not allow any (start it "
                    "with --allow-programs DIR, objects from DIR only, or --allow-program-upload)")
        return None

    def upload(self, data, sha256):
        """POST /programs: keep an uploaded object; 403 unless --allow-program-upload."""
        if not self.allow_upload:
            raise ApiError(403, "program upload: not allowed by this agent (its operator starts it "
                                "with --allow-program-upload to allow it%s)"
                           % (", or puts objects in %s" % self.allow_dir if self.allow_dir else ""))
        if not isinstance(sha256, str) or not SHA256_RE.match(sha256):
            raise ApiError(400, "X-Xdplab-Sha256 header: must be the object's sha256 (64 lowercase "
                                "hex digits)")
        if not data:
            raise ApiError(400, "body: empty; send the object's bytes")
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise ApiError(400, "body: sha256 %s differs from the X-Xdplab-Sha256 header %s (the "
                                "object was changed or cut on the way)" % (got, sha256))
        check_elf_bpf(data, "body")
        os.makedirs(self.upload_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.upload_dir, sha256 + ".o")
        if not os.path.exists(path):
            fd, tmp = tempfile.mkstemp(dir=self.upload_dir, prefix=".upload-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        log.info("program object %s uploaded (%d bytes)", sha256, len(data))
        return {"sha256": sha256, "bytes": len(data), "stored": path}

    def path_of(self, sha256):
        """The object with this sha256: uploaded, or in the allowed directory."""
        refusal = self._refusal()
        if refusal:
            raise ApiError(403, refusal)
        if not isinstance(sha256, str) or not SHA256_RE.match(sha256):
            raise ApiError(400, "program.sha256: must be 64 lowercase hex digits")
        if self.allow_upload:
            path = os.path.join(self.upload_dir, sha256 + ".o")
            if os.path.exists(path) and sha256_of(path) == sha256:
                return path
        if self.allow_dir:
            for name in sorted(os.listdir(self.allow_dir)):
                path = os.path.realpath(os.path.join(self.allow_dir, name))
                if (name.endswith(".o") and os.path.dirname(path) == self.allow_dir
                        and os.path.isfile(path)
                        and os.path.getsize(path) <= MAX_OBJECT_BYTES and sha256_of(path) == sha256):
                    return path
        where = " or ".join(w for w in (
            "uploaded (POST /programs)" if self.allow_upload else "",
            "in %s" % self.allow_dir if self.allow_dir else "") if w)
        raise ApiError(404, "program.sha256: no object %s %s on this agent" % (sha256, where))


def validate_program(body):
    """The arm request's `program` field: None (the collector), "attached", or
    {"sha256", "name" (optional), "globals" (optional {name: int|bool})}."""
    if body is None or body == "attached":
        return body
    if not isinstance(body, dict):
        raise ApiError(400, 'program: must be null, "attached" or {"sha256", "name", "globals"}')
    unknown = sorted(set(body) - {"sha256", "name", "globals"})
    if unknown:
        raise ApiError(400, "program.%s: unknown field" % unknown[0])
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not NAME_RE.match(name)):
        raise ApiError(400, "program.name: must be a C identifier (the program's function name)")
    g = body.get("globals") or {}
    if not isinstance(g, dict) or len(g) > 64 or any(
            not isinstance(k, str) or not NAME_RE.match(k) or not isinstance(v, (int, bool))
            for k, v in g.items()):
        raise ApiError(400, "program.globals: must map C identifiers to integers or booleans")
    sha = body.get("sha256")
    if not isinstance(sha, str) or not SHA256_RE.match(sha):
        raise ApiError(400, "program.sha256: must be 64 lowercase hex digits")
    return {"sha256": sha, "name": name, "globals": dict(g)}


def _bpfobject():
    from . import bpfobject   # libbpf through ctypes; imported when a user program is used
    return bpfobject


def xdp_program_name(info, wanted):
    """The XDP program to load from an object described by bpfobject.describe()."""
    xdp = [p["name"] for p in info["programs"] if p.get("type") == "xdp"]
    names = [p["name"] for p in info["programs"]]
    if wanted:
        if wanted not in names:
            raise ApiError(400, "program_name: %s is not a program of the object (it has %s)"
                           % (wanted, ", ".join(names) or "none"))
        return wanted
    if len(xdp) != 1:
        raise ApiError(400, "program_name: the object has %s XDP programs (%s); name the one to "
                            "measure with program_name" % (len(xdp) or "no", ", ".join(xdp) or "none"))
    return xdp[0]


class UserProgram:
    """The program under test, loaded from an allowed object (not attached here: the
    session attaches it, or puts it in the collector's chain slot), or the one the user
    attached (its fd, taken by id).  Holds its fd until close()."""

    def __init__(self, store, spec, log_dir=None, attached_id=None):
        bo = _bpfobject()
        self.obj, self.fd, self.attached = None, None, spec == "attached"
        self.sha256 = None if self.attached else spec["sha256"]
        if self.attached:
            self.fd = bo.prog_fd_by_id(attached_id)
            self.name = None
        else:
            path = store.path_of(spec["sha256"])
            try:
                info = bo.describe(path)
                self.name = xdp_program_name(info, spec.get("name"))
                self.obj = bo.BpfObject(path, load=[self.name], globals=spec.get("globals") or {},
                                        tail_call_target=[self.name])
            except bo.LoadError as e:
                where = _save_log(log_dir, spec["sha256"], e.log)
                raise ApiError(422, "the kernel's verifier refused program %s: %s%s"
                               % (spec.get("name") or "", e, "; full log: %s" % where if where else ""))
            except bo.ObjectError as e:
                raise ApiError(400, "program: %s" % e)
            self.fd = self.obj.prog_fd(self.name)
        try:
            self.info = bo.prog_info(self.fd)
            if self.info.get("type") != "xdp":
                raise ApiError(400, "program: %s is a %s program, not XDP"
                               % (self.info.get("name"), self.info.get("type")))
        except BaseException:
            self.close()
            raise

    @property
    def tag(self):
        return self.info.get("tag")

    def stats(self):
        """The kernel's run-time statistics of the program (BPF_ENABLE_STATS held)."""
        info = fdinfo(self.fd)
        return {"run_time_ns": info.get("run_time_ns", 0), "run_cnt": info.get("run_cnt", 0)}

    def manifest(self):
        keys = ("id", "name", "tag", "xlated_insns", "jited_bytes", "nr_map_ids", "verified_insns")
        out = {k: self.info.get(k) for k in keys}
        out.update({"sha256": self.sha256,
                    "loaded_by": "user" if self.attached else "xdplab",
                    # libxdp's multi-program dispatcher (xdp-loader, libxdp): the programs
                    # behind it run by freplace, and the verdicts counted are the
                    # dispatcher's, i.e. the interface's.  (Kernels without BPF trampolines
                    # make libxdp attach a single program directly instead.)
                    "libxdp_dispatcher": self.info.get("name") == LIBXDP_DISPATCHER})
        return out

    def close(self):
        if self.obj is not None:
            self.obj.close()
            self.obj = None
        elif self.fd is not None:
            os.close(self.fd)
        self.fd = None


def _save_log(log_dir, sha256, text):
    if not log_dir or not text:
        return None
    try:
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        path = os.path.join(log_dir, "%s.verifier.log" % sha256[:16])
        with open(path, "w") as f:
            f.write(text)
        return path
    except OSError:
        return None


# veth's per-queue XDP statistics (ethtool -S), summed over queues; other drivers name
# theirs differently (mlx5: rx_xdp_drop, rx_xdp_tx_xmit, rx_xdp_redirect) and are added here
# when a lab has one.  veth counts XDP_ABORTED as a drop (and traces xdp_exception).
DRIVER_XDP_STATS = {
    "veth": {"xdp_packets": r"rx_queue_\d+_xdp_packets", "xdp_drop": r"rx_queue_\d+_xdp_drops",
             "xdp_tx": r"rx_queue_\d+_xdp_tx", "xdp_redirect": r"rx_queue_\d+_xdp_redirect",
             "xdp_tx_errors": r"rx_queue_\d+_xdp_tx_errors"},
}


def driver_xdp_stats(ifname, driver, run=None):
    """{"xdp_packets", "xdp_drop", "xdp_tx", "xdp_redirect", "xdp_tx_errors"} summed over
    the interface's queues, from `ethtool -S`; None when the driver's names are not known
    (or ethtool is missing).  Counted by the driver for native XDP only."""
    import subprocess
    names = DRIVER_XDP_STATS.get(driver)
    if names is None:
        return None
    try:
        out = (run or subprocess.run)(["ethtool", "-S", ifname], capture_output=True, text=True,
                                      timeout=10, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_ethtool_stats(out, names)


def parse_ethtool_stats(text, names):
    totals = dict.fromkeys(names, 0)
    compiled = {k: re.compile(v + "$") for k, v in names.items()}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if not sep or not value.strip().lstrip("-").isdigit():
            continue
        for name, rx in compiled.items():
            if rx.match(key.strip()):
                totals[name] += int(value)
    return totals
