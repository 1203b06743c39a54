"""The agent: compiled programs kept across sessions, one armed session at a
time, the finished sessions it remembers, and its own identity."""

import json
import logging
import os
import platform
import re
import secrets
import subprocess
import threading
import time
from collections import OrderedDict

from ..sourcehost.wire import MAGIC  # the payload header's, defined once
from . import AGENT, children, environment, sysstats
from .api import ApiError, validate_arm, validate_build, validate_capture_check
from .bpf import Program, PROG_NAME, collector_cflags, release_freed_memory
from .session import Session
from .userprog import ProgramStore, UserProgram, validate_program

log = logging.getLogger("xdplab-agent")

MAX_KEPT_SESSIONS = 64                # finished sessions remembered in memory
# The state directory is usually on /run (RAM): a 60 s trial at 100k pps is
# ~0.5 GB of pcap.  The controller downloads a capture before it disarms, so
# only the newest finished sessions keep theirs.
MAX_KEPT_CAPTURES = 2
MAX_PROGRAM_KEYS = 4                  # (port, collector, ring pages) kept compiled
SHUTDOWN_ARMING_WAIT_S = 60.0         # a compile + attach in flight finishes first
PCAP_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.if\d{1,3})?\.pcap$")
SESSION_DIR_RE = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}$")     # <state_dir>/<session>/
FEATURES_NAME_RE = re.compile(r"^features-[^/]{1,64}\.bin$")
CHECK_TIMEOUT_S = 600                 # a capture check of the largest trials takes minutes
CHECK_IN_PROCESS_MAX = 500_000        # packets scheduled: checked in the agent, not in a child


class Programs:
    """Compiled, loaded, unattached collector instances, by (port, collector,
    ring pages).  A session takes one per interface and gives it back at
    disarm; only the first use of a key (or more interfaces than before)
    compiles.  At most MAX_PROGRAM_KEYS keys stay loaded (least recently used
    go), and a key never holds more instances than the agent has interfaces."""

    def __init__(self, sources, max_per_key):
        self.sources = sources
        self.max_per_key = max_per_key
        self.compiling = threading.Lock()  # one compile at a time
        self.lock = threading.Lock()       # the free lists: never held while compiling, so that
        self.free = OrderedDict()          # /health answers during a compile
        self.last = None                   # the program most recently taken (/environment)

    def _take(self, key):
        with self.lock:
            progs = self.free.get(key)
            if progs:
                self.free.move_to_end(key)
                self.last = progs[-1]
                return progs.pop()
        return None

    def acquire(self, port, collector, ring_pages, chain=False):
        key = (port, collector, ring_pages, chain)
        prog = self._take(key)
        if prog is not None:
            return prog, 0.0
        with self.compiling:
            prog = self._take(key)        # compiled meanwhile by another request
            if prog is not None:
                return prog, 0.0
            try:
                prog = Program(self.sources, port, collector, ring_pages, chain)
            except ApiError:
                raise
            except Exception as e:
                raise ApiError(500, "compiling and loading %s (%s) failed: %s"
                               % (PROG_NAME, " ".join(collector_cflags(port, collector, ring_pages, chain)),
                                  e))
            log.info("compiled %s for port %d, collector %s, ring pages %s in %.2f s (tag %s)",
                     PROG_NAME, port, collector, ring_pages, prog.compile_s, prog.tag)
            self.last = prog
            return prog, prog.compile_s

    def release(self, prog):
        key = (prog.port, prog.collector, prog.ring_pages_requested, prog.chain)
        try:
            prog.set_run_range(0, 0)       # matches nothing until the next arm
            if prog.chain:
                prog.set_chain(None)       # hands nothing on until the next arm
        except Exception as e:
            log.warning("resetting the run range failed (%s); dropping the program", e)
            prog.close()
            return
        with self.lock:
            progs = self.free.setdefault(key, [])
            if len(progs) >= self.max_per_key:
                prog.close()
            else:
                progs.append(prog)
            self.free.move_to_end(key)
            while len(self.free) > MAX_PROGRAM_KEYS:
                _, old = self.free.popitem(last=False)
                for p in old:
                    p.close()

    def loaded(self):
        with self.lock:
            return [{"port": k[0], "collector": k[1], "ringbuf_pages_requested": k[2],
                     "chain": k[3], "instances": len(v)} for k, v in self.free.items()]

    def close(self):
        with self.lock:
            for progs in self.free.values():
                for p in progs:
                    p.close()
            self.free.clear()


def remove_stale_pcaps(state_dir):
    """Delete <session>[.ifN].pcap files in the state directory: at start they
    can only be a killed predecessor's, whose sessions nobody can fetch any
    more.  Returns [{"file", "bytes"}] of what was removed."""
    removed = []
    for name in sorted(os.listdir(state_dir)):
        if not PCAP_NAME_RE.match(name):
            continue
        path = os.path.join(state_dir, name)
        try:
            st = os.lstat(path)
            if (st.st_mode & 0o170000) != 0o100000:   # regular files only, no symlinks
                continue
            os.unlink(path)
        except OSError as e:
            log.warning("could not remove stale capture %s: %s", path, e)
            continue
        removed.append({"file": name, "bytes": st.st_size})
        log.warning("removed stale capture %s (%d bytes) left by an earlier agent",
                    path, st.st_size)
    for name in sorted(os.listdir(state_dir)):   # session directories with features files
        path = os.path.join(state_dir, name)
        if not SESSION_DIR_RE.match(name) or not os.path.isdir(path) or os.path.islink(path):
            continue
        for f in sorted(os.listdir(path)):
            fp = os.path.join(path, f)
            try:
                st = os.lstat(fp)
                if not FEATURES_NAME_RE.match(f) or (st.st_mode & 0o170000) != 0o100000:
                    continue
                os.unlink(fp)
            except OSError as e:
                log.warning("could not remove stale features file %s: %s", fp, e)
                continue
            removed.append({"file": os.path.join(name, f), "bytes": st.st_size})
            log.warning("removed stale features file %s (%d bytes) left by an earlier agent",
                        fp, st.st_size)
        try:
            os.rmdir(path)
        except OSError:
            pass
    return removed


class Agent:
    """The agent behind the HTTP routes: what it was started with (the interfaces it
    may use, state directory, token, collector sources, tcpdump spawner), who it is
    (instance, pid, start time, BCC's version), the compiled collectors it keeps
    (Programs), the users' programs it may load (ProgramStore), the armed session (at
    most one) and the finished ones it remembers (the newest with their captures).
    lock guards sessions, armed, arming and closing; a watchdog thread per session
    disarms it at its deadline."""

    def __init__(self, interfaces, state_dir, token, sources, spawner, store=None):
        from .bpf import bcc_facts
        facts = bcc_facts()                # from a child: bcc is never imported here
        self.bcc_version = facts["bcc"]
        self.llvm_maps = "".join("0-0 r-xp 0 0 0 %s\n" % p for p in facts["maps"])
        self.allowed = list(dict.fromkeys(interfaces))
        self.state_dir = state_dir
        self.token = token
        self.sources = sources
        self.record_cls = sources.feature_struct()
        check_magic(sources)               # the header the collector is built with
        self.spawner = spawner
        # Who this agent is: a controller compares it with the one it armed
        # with, to tell that the agent was restarted (and the session lost).
        self.instance = secrets.token_hex(8)
        self.pid = os.getpid()
        self.started_ns = time.monotonic_ns()
        self.stale_removed = remove_stale_pcaps(state_dir)
        self.programs = Programs(sources, max_per_key=len(self.allowed))
        # User programs: none unless the operator allowed them (userprog.py).
        self.store = store or ProgramStore(state_dir)
        self.lock = threading.Lock()          # guards sessions / armed / arming / closing
        self.sessions = OrderedDict()
        self.armed = None
        self.arming = False
        self.closing = False
        self.sessions_armed = 0

    # --- health, build -------------------------------------------------------------
    def health(self):
        with self.lock:
            s = self.armed
        return {"ok": True, "agent": AGENT, "hostname": sysstats.hostname(),
                "kernel": platform.release(), "bcc_version": self.bcc_version,
                "boot_id": sysstats.boot_id(), "agent_instance": self.instance,
                "pid": self.pid, "started_monotonic_ns": self.started_ns,
                "stale_files_removed": self.stale_removed,
                "interfaces": {name: sysstats.interface_facts(name) for name in self.allowed},
                "programs_loaded": self.programs.loaded(),
                "user_programs": self.store.allowed(),
                "state_dir": self.state_dir, "state_dir_free_bytes": sysstats.free_bytes(self.state_dir),
                "session": s.summary() if s else None}

    def environment(self):
        """GET /environment (environment.py): what this DUT runs."""
        with self.lock:
            s = self.armed
        prog = None
        if s is not None:
            prog = next((i.program for i in s.ifaces if i.program is not None), None)
        prog = prog or self.programs.last
        collector = {"prog_tag": prog.tag if prog else
                     (None, "no collector loaded yet (POST /build or arm first)"),
                     "source_sha256": self.sources.source_sha256,
                     "header_sha256": self.sources.header_sha256,
                     "source_origin": self.sources.source_origin,
                     "cflags": list(prog.cflags) if prog else None}
        return environment.gather(self.allowed, self.bcc_version, collector, sysstats.run_argv,
                                  llvm_maps=self.llvm_maps)

    def build(self, body):
        """Compile (or reuse) one instance per --interface, so that arming any
        of them later compiles nothing."""
        req = validate_build(body)
        key = (req["port"], req["collector"], req["ringbuf_pages"])
        progs, compile_s = [], 0.0
        try:
            for _ in self.allowed:
                prog, cs = self.programs.acquire(*key)
                progs.append(prog)
                compile_s += cs
            out = {"source_sha256": self.sources.source_sha256,
                   "header_sha256": self.sources.header_sha256,
                   "bcc_version": self.bcc_version, "kernel_release": platform.release()}
            out.update(progs[0].manifest())
            out["compile_s"] = round(compile_s, 3)
            out["reused"] = compile_s == 0.0
            out["instances"] = len(progs)
            return out
        finally:
            for prog in progs:
                self.programs.release(prog)

    # --- user programs -------------------------------------------------------------------
    def upload_program(self, data, sha256):
        """POST /programs: an object, kept by sha256 (only with --allow-program-upload)."""
        return self.store.upload(data, sha256)

    def check_program(self, body):
        """POST /programs/check: load the program under test through the verifier, attach
        nothing, and say what was loaded; a refusal names the global, the program or the
        verifier's last lines, before any traffic."""
        if not isinstance(body, dict) or set(body) - {"program", "port"}:
            raise ApiError(400, 'body: must be {"program": {...}, "port": N}')
        spec = validate_program(body.get("program"))
        if spec is None or spec == "attached":
            raise ApiError(400, "program: give an object's {sha256, name, globals} to check")
        target = UserProgram(self.store, spec, log_dir=os.path.join(self.state_dir, "programs"))
        try:
            return dict(target.manifest(), kernel_release=platform.release())
        finally:
            target.close()

    # --- arm ---------------------------------------------------------------------------
    def arm(self, body):
        req = validate_arm(body, self.allowed)
        req["program"] = validate_program(req.get("program"))
        if req["program"] == "attached" and req["collector"] != "off":
            raise ApiError(400, "collector: a program the user attached runs alone (xdplab "
                                "cannot put its collector in front of it without detaching it); "
                                "arm with collector \"off\"")
        with self.lock:
            if self.closing:
                raise ApiError(409, "the agent is shutting down")
            if self.armed is not None:
                raise ApiError(409, "session %s (trial %s) is armed; disarm it first"
                               % (self.armed.id, self.armed.trial))
            if self.arming:
                raise ApiError(409, "another session is being armed")
            self.arming = True
        try:
            self._drop_finished_histograms()
            sid = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)
            s = Session(sid, req, self.instance, self.state_dir, store=self.store,
                        sources=self.sources)
            s.arm(self.programs, self.spawner, self.record_cls)
            with self.lock:
                self.sessions[sid] = s
                self.armed = s
                self.sessions_armed += 1
                self._forget_old_sessions()
            threading.Thread(target=self._watchdog, args=(s,), name="watchdog-" + sid,
                             daemon=True).start()
            log.info("session %s armed in %.3f s: trial=%s run_ids=%d..%d %s port=%d "
                     "collector=%s compile_s=%s", sid, s.timing["arm_s"], s.trial, s.run_id,
                     s.run_id + s.run_ids - 1, ",".join(req["interfaces"]), req["port"],
                     s.collector, s.arm_reply["compile_s"])
            if self.closing:
                self.disarm(s)
            return s.arm_reply
        finally:
            with self.lock:
                self.arming = False

    def _forget_old_sessions(self):
        done = [sid for sid, s in self.sessions.items() if s.state == "disarmed"]
        for sid in done[:max(0, len(done) - MAX_KEPT_SESSIONS)]:
            self.sessions.pop(sid).remove_pcaps()
        for sid in done[:max(0, len(done) - MAX_KEPT_CAPTURES)]:
            if sid in self.sessions:
                self.sessions[sid].remove_pcaps()

    def _drop_finished_histograms(self):
        """Before a new session: the finished ones let go of their histograms and time
        series (their controllers read them at disarm; one session is armed at a time), so
        what the agent holds during a trial does not depend on the trials before it.  A
        finished session keeps its figures, and its captures and features files."""
        with self.lock:
            done = [s for s in self.sessions.values() if s.state == "disarmed"]
        for s in done:
            s.drop_histograms()
        if done:
            release_freed_memory()

    def _watchdog(self, s):
        while not s.disarmed.is_set():
            left = (s.deadline_ns - time.monotonic_ns()) / 1e9
            if left <= 0:
                log.warning("session %s: deadline of %.1f s passed; disarming (watchdog)",
                            s.id, s.req["deadline_s"])
                try:
                    self.disarm(s, watchdog=True)
                except Exception as e:
                    log.error("session %s: watchdog disarm failed: %s", s.id, e)
                return
            s.disarmed.wait(min(left, 1.0))

    # --- session operations -----------------------------------------------------------
    def get_session(self, sid):
        with self.lock:
            s = self.sessions.get(sid)
        if s is None:
            raise ApiError(404, "no session %s on this agent" % sid)
        return s

    @staticmethod
    def stopped_capture(s, name):
        """(the session's interface, its capture file) once tcpdump has stopped: 409 while it
        runs, 410 once the capture was deleted."""
        with s.lock:
            iface = [i for i in s.ifaces if i.name == name][0]
            if iface.capture is None:
                raise ApiError(409, "session %s: capture is still running; stop it first" % s.id)
            path = iface.pcap_path
        if path is None:
            raise ApiError(410, "session %s: its capture was removed (the agent keeps the "
                                "captures of the last finished sessions only)" % s.id)
        return iface, path

    def capture_check(self, s, body):
        """Check one run id's packets in a stopped capture against the generator's schedule,
        here where the capture was written (streaming, bounded memory: pcapcheck), so that
        the controller never needs the file unless it keeps it."""
        req = validate_capture_check(body, [i.name for i in s.ifaces])
        iface, path = self.stopped_capture(s, req["interface"])
        t0 = time.monotonic()
        args = dict(pcap_path=path, run_id=req["run_id"], port=s.req["port"], scheduled=req["scheduled"],
                    threads=req["threads"], failed_seqs=req["failed_seqs"], send_errors=req["send_errors"])
        if req["scheduled"] <= CHECK_IN_PROCESS_MAX:
            # A short trial's check here (a search's 1 s trials): its table is at most 0.5 MB
            # and its read buffer 16 MiB, once, and a child's interpreter start (50-60 ms
            # here) would cost more than the check itself.
            from .. import pcapcheck
            try:
                out = pcapcheck.verify_capture(**args)
            except (OSError, ValueError) as e:
                raise ApiError(500, "session %s: checking the capture of %s failed: %s"
                               % (s.id, req["interface"], e))
            out["check_s"] = round(time.monotonic() - t0, 3)
            out["pcap_sha256"] = iface.capture.get("pcap_sha256")
            return out
        # In a child process: its bitmap (1 bit per scheduled packet) and read buffers never
        # count in the agent's own memory.
        try:
            r = subprocess.run(children.argv("checkchild", json.dumps(args)), env=children.env(),
                               capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
            out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            raise ApiError(500, "session %s: checking the capture of %s failed: %s"
                           % (s.id, req["interface"], e))
        if r.returncode != 0 or "error" in out:
            raise ApiError(500, "session %s: checking the capture of %s failed: %s"
                           % (s.id, req["interface"], out.get("error") or r.stderr.strip()[-500:]
                              or "exit status %d" % r.returncode))
        out["check_s"] = round(time.monotonic() - t0, 3)
        out["pcap_sha256"] = iface.capture.get("pcap_sha256")
        return out

    def disarm(self, s, watchdog=False):
        try:
            res = s.disarm(watchdog=watchdog)
        finally:
            with self.lock:
                if self.armed is s:
                    self.armed = None
            release_freed_memory()   # the session's bitmaps and histograms
        x = {n: ((r.get("xdp") or {}).get("matched"), (r.get("nic") or {}).get("rx_packets"))
             for n, r in res["interfaces"].items()}
        log.info("session %s disarmed%s in %.3f s (arm %.3f s, capture stop %s s): "
                 "matched/nic rx %s", s.id, " by the watchdog" if watchdog else "",
                 res["disarm_s"], res["arm_s"], res["stop_s"], x)
        return res

    def reset(self):
        with self.lock:
            armed = [s for s in self.sessions.values() if s.state in ("armed", "capture_stopped")]
        for s in armed:
            self.disarm(s)
        return {"disarmed": [s.id for s in armed]}

    def shutdown(self):
        """Disarm, delete every capture (nobody can fetch them after exit), unload."""
        with self.lock:
            self.closing = True
        deadline = time.monotonic() + SHUTDOWN_ARMING_WAIT_S
        while time.monotonic() < deadline:   # an arm in flight disarms itself (closing)
            with self.lock:
                if not self.arming:
                    break
            time.sleep(0.05)
        try:
            r = self.reset()
            if r["disarmed"]:
                log.info("disarmed on shutdown: %s", r["disarmed"])
        except Exception as e:
            log.error("disarm on shutdown failed: %s", e)
        with self.lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            s.remove_pcaps()
        self.programs.close()

    def state(self):
        """For /metrics: the agent's state and the armed session's live counters."""
        with self.lock:
            s = self.armed
            n = self.sessions_armed
        live = None
        if s is not None:
            try:
                live = {"id": s.id, "trial": s.trial, "state": s.state, "interfaces": s.live()}
            except Exception as e:       # disarming meanwhile: report the agent only
                log.info("metrics: session %s: %s", s.id, e)
        return {"instance": self.instance, "started_monotonic_ns": self.started_ns,
                "sessions_armed_total": n, "programs_loaded": self.programs.loaded(),
                "session": live}


def check_magic(sources):
    """XDPLAB_MAGIC in the collector's header must be the payload header's MAGIC, whose
    one definition is the wire format's (sourcehost/wire.py)."""
    from .bpfsrc import parse_define
    magic = parse_define(sources.header.decode(), "XDPLAB_MAGIC")
    if magic != MAGIC:
        raise ValueError("XDPLAB_MAGIC 0x%08x in xdplab.h is not the payload header's MAGIC 0x%08x "
                         "(sourcehost/wire.py)" % (magic, MAGIC))
