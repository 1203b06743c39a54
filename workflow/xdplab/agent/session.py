"""One session: arm in order, tear down in reverse order, compute results.

Arming acquires resources one by one and pushes each one's release onto a
contextlib.ExitStack as it is acquired; a failure anywhere unwinds exactly
what was acquired.  Disarm stops the capture, detaches (the links have their
own stack so they go first), reads the counters, drains the ring buffers,
then closes the stack.  The results come from counter snapshots through pure
functions (results.py: interface_result, session_result) that need no root to
test; what is done on one interface is iface.py's.
"""

import logging
import os
import socket
import threading
import time
from contextlib import ExitStack

from ..sourcehost.wire import MAGIC  # the payload header's, defined once
from . import capture, sysstats, timeseries
from .api import ApiError
from .bpf import enable_run_time_stats
from .features import Features
from .iface import Iface
from .results import first_last_arrival, interface_result, measured_window, session_result

log = logging.getLogger("xdplab-agent")

CONSUME_INTERVAL_S = 0.002     # ring buffers polled: records are submitted without wakeups
DRAIN_TIMEOUT_S = 1.0
SINK_RCVBUF_BYTES = 4096


class Session:
    """One armed trial on the DUT, from arm to disarm, and what is left of it after.

    Holds the validated arm request (req) and its fields in use (trial, run ids,
    collector, the program under test), one Iface per interface (iface.py: programs,
    link, capture, feature records, counter snapshots), everything acquired for it on
    two ExitStacks (stack; links, the bpf_links, detached first), the UDP sink, the
    ring-buffer consumer thread, the softirq (and observers' CPU) and time-series samplers,
    and, as it goes,
    state ("arming", "armed", "capture_stopped", "disarmed" or "failed"), the arm reply,
    the result and the timings.  lock serialises capture stop, disarm and the reads of
    a finished session; disarmed is set once it is over (the agent's watchdog waits on it).
    """

    def __init__(self, sid, req, agent_instance, state_dir, store=None, sources=None):
        self.id = sid
        self.req = req
        # The program under test: None (xdplab's collector), "attached", or an object spec.
        self.user_program = req.get("program")
        self.store, self.sources, self.state_dir = store, sources, state_dir
        self.trial, self.run_id, self.run_ids = req["trial"], req["run_id"], req["run_ids"]
        self.measured_run_ids = req.get("measured_run_ids", self.run_ids)
        self.collector = req["collector"]
        self.features_dir = None
        if req.get("keep_features") and self.collector == "features":
            self.features_dir = os.path.join(state_dir, sid)
        self.agent_instance = agent_instance
        self.ifaces = [Iface(name, None, os.path.join(state_dir, "%s.if%d.pcap" % (sid, i)))
                       for i, name in enumerate(req["interfaces"])]
        self.lock = threading.RLock()
        self.state = "arming"
        self.stack = ExitStack()       # everything, released in reverse order
        self.links = ExitStack()       # the bpf_links: detached first at disarm
        self.sampler = None
        self.drivers = {}
        self.timeseries = None
        self.sink_inode = None
        self.sink = None
        self.sink_base = None
        self.stop_consume = threading.Event()
        self.consumer = None
        self.exceptions = None         # XDP exceptions (exceptions.XdpExceptions), user's program
        self.drained = None
        self.consumer_error = None
        self.disarmed = threading.Event()
        self.watchdog_fired = False
        self.arm_reply = None
        self.result = None
        self.disarm_error = None
        self.armed_ns = self.deadline_ns = None
        self.timing = {"arm_s": None, "stop_s": None, "disarm_s": None}

    # --- arm --------------------------------------------------------------------------
    def arm(self, programs, spawner, record_cls):
        """Acquire everything; on any failure release what was acquired and raise.

        programs: the agent's cache (acquire(port, collector, ring_pages) ->
        (Program, compile_s), release(Program))."""
        t0 = time.monotonic()
        try:
            self._arm(programs, spawner, record_cls)
        except BaseException:
            self.stack.close()
            self.remove_pcaps()
            self.state = "failed"
            self.disarmed.set()
            raise
        self.timing["arm_s"] = round(time.monotonic() - t0, 3)
        self.arm_reply["arm_s"] = self.timing["arm_s"]

    def _arm(self, programs, spawner, record_cls):
        """arm's steps, in order: each pushes the release of what it acquires onto
        self.stack (the bpf_links onto self.links, itself on the stack), so that a failure
        anywhere, or the disarm, releases in exactly the reverse order."""
        for i in self.ifaces:
            i.check(self.user_program)
        if self.features_dir is not None:
            os.makedirs(self.features_dir, mode=0o700, exist_ok=True)
        if self.user_program is not None:
            self._take_user_programs()
        compile_s = 0.0
        if self.collector != "off":
            compile_s = self._take_collectors(programs, record_cls)
        if self.collector != "off" or self.user_program is not None:
            stats_fd = enable_run_time_stats()
            self.stack.callback(os.close, stats_fd)
        # The softirq share and the observers' own CPU (the consumer is followed from now,
        # tcpdump and the time series from their start).
        self.sampler = sysstats.SoftirqSampler(
            self.id, threads={"consumer": [self.consumer] if self.consumer else []})
        self.stack.callback(self.sampler.stop)
        # (veth drops at the sender what the DUT's receive ring has no room for)
        self.drivers = {i.name: sysstats.interface_driver(i.name) for i in self.ifaces}
        self._open_sink()
        self._attach()
        self._start_captures(spawner)
        self._start_timeseries()
        self.state = "armed"
        self.arm_reply = self._arm_reply(compile_s)

    def _take_user_programs(self):
        """The program under test on each interface, and the XDP exception counter."""
        self._load_user_programs()
        from .exceptions import XdpExceptions
        try:
            self.exceptions = XdpExceptions()
        except (OSError, RuntimeError) as e:
            raise ApiError(500, "attaching the XDP exception counter (xdp:xdp_exception): %s" % e)
        self.stack.callback(self.exceptions.close)

    def _load_user_programs(self):
        """The program under test on each interface: loaded from its object (attached later:
        behind the collector's tail call, or by itself with collector off), or the one the
        user attached, taken by id; each release pushed on the stack."""
        from .userprog import UserProgram
        for i in self.ifaces:
            try:
                i.target = UserProgram(self.store, self.user_program,
                                       log_dir=os.path.join(self.state_dir, "programs"),
                                       attached_id=i.attached_id)
            except OSError as e:
                raise ApiError(500, "taking the program under test on %s: %s" % (i.name, e))
            self.stack.callback(i.target.close)
            expected = self.req["expected_tag"]
            if expected is not None and i.target.tag != expected:
                raise ApiError(422, "prog_tag %s of the program under test differs from "
                                    "expected_tag %s" % (i.target.tag, expected))

    def _take_collectors(self, programs, record_cls):
        """A collector instance per interface from the agent's cache, readied for this
        session (chain slot, ring, run range, feature records), then the ring-buffer
        consumer; returns the compile time this took."""
        req, st = self.req, self.stack
        chain = self.user_program is not None
        compile_s = 0.0
        for i in self.ifaces:
            prog, cs = programs.acquire(req["port"], self.collector, req["ringbuf_pages"],
                                        chain=chain)
            st.callback(programs.release, prog)     # (empties the chain slot too)
            compile_s += cs
            i.program = prog
            if chain:
                prog.set_chain(i.target.fd)
            elif req["expected_tag"] is not None and prog.tag != req["expected_tag"]:
                raise ApiError(422, "prog_tag %s of the compiled program differs from "
                                    "expected_tag %s" % (prog.tag, req["expected_tag"]))
            prog.open_ring()                  # mapped while armed only (memory)
            st.callback(prog.close_ring)
            prog.consume()                    # discard what an earlier session left
            prog.drain_staged()               # (ring, and records staged per CPU)
            prog.set_run_range(self.run_id, self.run_ids)
            if self.collector == "features":
                i.features = Features(self.run_id, self.run_ids, req["expected_packets"],
                                      record_cls, **self._features_kwargs(i))
                prog.on_record = i.features.on_record
                st.callback(setattr, prog, "on_record", None)
        if self.collector == "features":
            st.callback(self._stop_consumer)
            self.consumer = threading.Thread(target=self._consume,
                                             name="ringbuf-" + self.id, daemon=True)
            self.consumer.start()
        return compile_s

    def _open_sink(self):
        """The sink keeps the stack from answering our datagrams with ICMP port
        unreachable; it is never read, so its tiny buffer overflows quietly."""
        self.sink = self.stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SINK_RCVBUF_BYTES)
        try:
            self.sink.bind(("0.0.0.0", self.req["port"]))
        except OSError as e:
            raise ApiError(409, "port: UDP port %d is already bound on the DUT (%s)"
                           % (self.req["port"], e.strerror))
        self.sink_inode = os.fstat(self.sink.fileno()).st_ino
        self.sink_base = {"snmp": sysstats.udp_snmp(),
                          "drops": sysstats.udp_socket_drops(self.sink_inode) or 0}

    def _attach(self):
        """Each interface's baseline, then its collector (or the program under test by
        itself); the links go on their own stack, detached first at disarm."""
        self.stack.enter_context(self.links)
        for i in self.ifaces:
            # Baselines just before attaching: the program is idle until then.
            i.base = i.snapshot(self.exceptions)
            if i.target is not None and i.program is None:
                i.attach_user_program(self.links, self.req["xdp_mode"])
            else:
                i.attach_collector(self.links, self.req["xdp_mode"])

    def _start_captures(self, spawner):
        """tcpdump on every interface, then wait until each one listens."""
        bpf_filter = capture.capture_filter(self.req["port"], MAGIC, self.run_id, self.run_ids)
        for i in self.ifaces:
            try:
                i.tcpdump = capture.Tcpdump(spawner, i.name, self.req["snaplen"], bpf_filter,
                                            i.pcap_path)
            except OSError as e:
                raise ApiError(500, "starting tcpdump on %s failed: %s" % (i.name, e))
            self.stack.callback(i.tcpdump.kill)
            self.sampler.watch_process("capture", i.tcpdump.proc)
        for i in self.ifaces:
            if not i.tcpdump.wait_listening():
                raise ApiError(500, "tcpdump on %s did not report listening within %.0f s: %s"
                               % (i.name, capture.LISTEN_TIMEOUT_S,
                                  " | ".join(list(i.tcpdump.lines)[-5:])))

    def _start_timeseries(self):
        """Armed from now: the deadline, and the time series sampled until then."""
        self.armed_ns = time.monotonic_ns()
        self.deadline_ns = self.armed_ns + int(self.req["deadline_s"] * 1e9)
        self.timeseries = timeseries.Sampler(
            self.id, {i.name: i.timeseries_source(self.measured_run_ids) for i in self.ifaces},
            self.deadline_ns, sysstats.proc_stat_cpu)
        self.timeseries.start()
        self.sampler.watch_thread("polling", self.timeseries.thread)
        self.stack.callback(self.timeseries.stop)

    def _arm_reply(self, compile_s):
        req = self.req
        p = self.ifaces[0].program
        reply = {
            "session": self.id, "trial": self.trial, "run_id": self.run_id,
            "run_ids": self.run_ids, "measured_run_ids": self.measured_run_ids,
            "keep_features": self.features_dir is not None, "collector": self.collector,
            "interfaces": {i.name: i.link for i in self.ifaces},
            "xdp_mode_requested": req["xdp_mode"], "port": req["port"],
            "prog_tag": p.tag if p else None, "insn_count": p.insn_count if p else None,
            "verified_insns": p.info.get("verified_insns") if p else None,
            "ringbuf_pages": p.ring_pages if p else None,
            "ringbuf_bytes": p.ring_bytes if p else None,
            "ringbuf_pages_requested": req["ringbuf_pages"],
            "snaplen": req["snaplen"], "expected_packets": req["expected_packets"],
            "armed_monotonic_ns": self.armed_ns, "deadline_monotonic_ns": self.deadline_ns,
            "agent_instance": self.agent_instance, "compile_s": round(compile_s, 3),
        }
        if self.user_program is not None:
            t = self.ifaces[0].target
            reply.update({"program": t.manifest(), "prog_tag": t.tag,
                          "insn_count": t.info.get("xlated_insns"),
                          "verified_insns": t.info.get("verified_insns")})
        return reply

    def _features_kwargs(self, i):
        """Features' warm-up and file arguments, given only when they differ from its
        defaults (all ids measured, no file)."""
        kw = {}
        if self.measured_run_ids != self.run_ids:
            kw["measured_run_ids"] = self.measured_run_ids
        if self.features_dir is not None:
            i.features_path = os.path.join(self.features_dir, "features-%s.bin" % i.name)
            kw["features_path"] = i.features_path
        return kw

    # --- ring-buffer consumer ---------------------------------------------------------
    def _consume(self):
        """Polls every interface's ring: the program submits with
        BPF_RB_NO_WAKEUP, so epoll would never wake up."""
        progs = [i.program for i in self.ifaces if i.features is not None]
        try:
            while not self.stop_consume.is_set():
                for p in progs:
                    p.consume()
                time.sleep(CONSUME_INTERVAL_S)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            empty = 0
            while empty < 2 and time.monotonic() < deadline:
                before = sum(i.features.received for i in self.ifaces if i.features)
                for p in progs:
                    p.consume()
                after = sum(i.features.received for i in self.ifaces if i.features)
                empty = empty + 1 if after == before else 0
            self.drained = empty >= 2
            for p in progs:          # detached by now: the records still staged per CPU
                p.drain_staged()
        except Exception as e:
            self.consumer_error = "%s: %s" % (type(e).__name__, e)
            log.error("session %s: ring buffer consumer failed: %s", self.id, e)

    def _stop_consumer(self):
        self.stop_consume.set()
        if self.consumer is not None:
            self.consumer.join(DRAIN_TIMEOUT_S + 5)

    # --- live counters ------------------------------------------------------------------
    def live(self):
        """Counters since arm, per interface (for /metrics)."""
        return {i.name: i.live() for i in self.ifaces}

    # --- capture stop and disarm -----------------------------------------------------------
    def capture_stop(self):
        with self.lock:
            if self.timing["stop_s"] is None:
                t0 = time.monotonic()
                for i in self.ifaces:
                    if i.capture is None:
                        i.capture = i.tcpdump.stop(i.matched_so_far())
                self.timing["stop_s"] = round(time.monotonic() - t0, 3)
                if self.state == "armed":
                    self.state = "capture_stopped"
                log.info("session %s: capture stopped in %.3f s: %s", self.id,
                         self.timing["stop_s"],
                         {i.name: i.capture["captured"] for i in self.ifaces})
            return {i.name: dict(i.capture, stop_s=self.timing["stop_s"]) for i in self.ifaces}

    def disarm(self, watchdog=False):
        with self.lock:
            if self.result is not None:
                return self.result
            if self.state in ("disarmed", "failed"):
                raise ApiError(500, "session %s: disarm failed earlier: %s"
                               % (self.id, self.disarm_error))
            try:
                self.watchdog_fired = watchdog
                self.capture_stop()
                t0 = time.monotonic()
                self.links.close()                       # detach: nothing more arrives
                for i in self.ifaces:
                    i.end = i.snapshot(self.exceptions)
                self._stop_consumer()
                self.timeseries.stop(last_sample=True)   # the last row: the final counts
                disarmed_ns = time.monotonic_ns()
                self.result = self._result(disarmed_ns)
                self.timing["disarm_s"] = round(time.monotonic() - t0, 3)
                self.result.update(self.timing)
            except BaseException as e:
                self.disarm_error = "%s: %s" % (type(e).__name__, e)
                log.error("session %s: disarm failed: %s", self.id, self.disarm_error)
                raise
            finally:
                self.stack.close()
                for i in self.ifaces:
                    if i.features is not None:
                        i.features.release()
                self.state = "disarmed"
                self.disarmed.set()
            return self.result

    def _result(self, disarmed_ns):
        feats = {}
        for i in self.ifaces:
            if i.features is not None:
                f = i.features.summary()
                f["drained"] = self.drained
                f["consumer_error"] = self.consumer_error
                feats[i.name] = f
        queued = 0
        try:   # datagrams still queued on the sink (it was never read)
            while True:
                self.sink.recv(1, socket.MSG_DONTWAIT)
                queued += 1
        except OSError:
            pass
        drops = (sysstats.udp_socket_drops(self.sink_inode) or 0) - self.sink_base["drops"]
        snmp = sysstats.udp_snmp()
        udp_sink = {"received_by_socket_or_dropped": queued + drops, "queued": queued,
                    "socket_drops": drops,
                    "rcvbuf_errors_delta": snmp.get("RcvbufErrors", 0)
                    - self.sink_base["snmp"].get("RcvbufErrors", 0)}
        self.sampler.stop()
        first, last = first_last_arrival(feats.values())
        if first is None:
            first, last, label = self.armed_ns, disarmed_ns, "armed window (no matched arrivals)"
        else:
            label = "first to last matched arrival"
        softirq = self.sampler.window(first, last, label)
        observers = self.sampler.observers(first, last, label)
        observers["drivers"] = self.drivers
        interfaces = {i.name: interface_result(self.collector, self.run_id, self.run_ids,
                                               i.link, i.base, i.end, feats.get(i.name),
                                               i.capture,
                                               i.target.manifest() if i.target else None)
                      for i in self.ifaces}
        for i in self.ifaces:
            out = interfaces[i.name]
            out["timeseries"] = self.timeseries.result(i.name)
            out["measured_window_ns"], out["measured_window_from"] = measured_window(
                self.collector, feats.get(i.name), out["timeseries"]["rows"])
        meta = {"session": self.id, "trial": self.trial, "run_id": self.run_id,
                "run_ids": self.run_ids, "measured_run_ids": self.measured_run_ids,
                "collector": self.collector, "watchdog": self.watchdog_fired, "agent_instance": self.agent_instance,
                "port": self.req["port"], "prog_tag": self.arm_reply["prog_tag"],
                "program": self.arm_reply.get("program"),
                "ringbuf_pages": self.arm_reply["ringbuf_pages"],
                "window": {"armed_monotonic_ns": self.armed_ns,
                           "disarmed_monotonic_ns": disarmed_ns}}
        return session_result(meta, interfaces, softirq, udp_sink, {}, sysstats.boot_id(),
                              observers)

    def summary(self):
        """GET /sessions/<id>: cheap, polled every second."""
        d = {"session": self.id, "trial": self.trial, "state": self.state,
             "watchdog": self.watchdog_fired, "agent_instance": self.agent_instance,
             "run_id": self.run_id, "run_ids": self.run_ids, "collector": self.collector,
             "interfaces": [i.name for i in self.ifaces],
             "armed_monotonic_ns": self.armed_ns, "deadline_monotonic_ns": self.deadline_ns,
             "capture": ({i.name: i.capture for i in self.ifaces}
                         if all(i.capture for i in self.ifaces) else None),
             "result_ready": self.result is not None}
        d.update(self.timing)
        return d

    def drop_histograms(self):
        """Keep a finished session's figures but not its histograms (thousands of buckets
        each) nor its time series (up to 36,000 rows): the agent remembers many finished
        sessions, and these would make its memory grow with every trial.  The controller
        reads them at disarm."""
        with self.lock:
            for i in ((self.result or {}).get("interfaces") or {}).values():
                ts = i.get("timeseries")
                if isinstance(ts, dict) and ts.get("rows") is not None:
                    ts["rows"] = None
                    ts["dropped"] = ("the agent keeps the time series of its latest finished "
                                     "sessions only")
                for h in ("latency_ns", "gap_ns"):
                    block = (i.get("features") or {}).get(h)
                    if isinstance(block, dict) and block.get("histogram") is not None:
                        block["histogram"] = {"dropped": "the agent keeps the histograms of its "
                                                         "latest finished sessions only"}

    def remove_pcaps(self):
        """Delete the session's capture and features files (never raises)."""
        for i in self.ifaces:
            for attr in ("pcap_path", "features_path"):
                path = getattr(i, attr)
                setattr(i, attr, None)
                if not path:
                    continue
                try:
                    os.unlink(path)
                    log.info("session %s: removed %s", self.id, path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.error("session %s: could not remove %s: %s", self.id, path, e)
        if self.features_dir is not None:
            try:
                os.rmdir(self.features_dir)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.error("session %s: could not remove %s: %s", self.id, self.features_dir, e)

    def features_file(self, name):
        """The interface's features file once the consumer has stopped (409 before;
        404 when the session keeps none; 410 once removed)."""
        with self.lock:
            iface = [i for i in self.ifaces if i.name == name][0]
            if self.features_dir is None:
                raise ApiError(404, "session %s keeps no features file (keep_features was "
                                    "false or the collector is not features)" % self.id)
            if self.state != "disarmed" or self.result is None:
                raise ApiError(409, "session %s: the features file is complete only after "
                                    "disarm" % self.id)
            if iface.features_path is None:
                raise ApiError(410, "session %s: its features file was removed (the agent "
                                    "keeps the files of the last finished sessions only)" % self.id)
            return iface.features_path
