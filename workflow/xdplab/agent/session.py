"""One session: arm in order, tear down in reverse order, compute results.

Arming acquires resources one by one and pushes each one's release onto a
contextlib.ExitStack as it is acquired; a failure anywhere unwinds exactly
what was acquired.  Disarm stops the capture, detaches (the links have their
own stack so they go first), reads the counters, drains the ring buffers,
then closes the stack.  The results come from counter snapshots through pure
functions (interface_result, session_result) that need no root to test.
"""

import errno
import logging
import os
import socket
import threading
import time
from contextlib import ExitStack

from ..sourcehost.wire import MAGIC  # the payload header's, defined once
from . import capture, sysstats, timeseries
from .api import ApiError
from .bpf import enable_run_time_stats, fdinfo, xdp_link_create, PROG_NAME
from .features import Features, empty_summary

log = logging.getLogger("xdplab-agent")

CONSUME_INTERVAL_S = 0.002     # ring buffers polled: records are submitted without wakeups
DRAIN_TIMEOUT_S = 1.0
SINK_RCVBUF_BYTES = 4096
XDP_FIELDS = ("seen", "ipv4_udp", "matched", "features", "ringbuf_full", "parse_errors",
              "foreign_arp", "foreign_port", "foreign_other", "chain_missed")


# --- pure result arithmetic -------------------------------------------------------

def interface_result(collector, run_id, run_ids, link, base, end, features, tcpdump,
                     target=None):
    """One interface's results from its snapshots at arm (base) and disarm (end).

    base/end: {"nic": {rx_*}, "prog": None | Program.snapshot()} and, with a user's
    program, "target" (its run-time statistics), "driver_xdp" (the driver's XDP
    verdict counters, or None) and "exceptions" (exceptions.XdpExceptions.counts).  link: the arm reply's entry for the interface.  features:
    Features.summary() or None.  target: the program under test's manifest when it is the
    user's (reported under "program")."""
    out = dict(link)
    out["nic"] = sysstats.delta(base["nic"], end["nic"])
    if collector == "off" or base.get("prog") is None:
        out["xdp"] = {k: None for k in XDP_FIELDS + ("run_time_ns", "run_cnt", "ns_per_pkt",
                                                      "unaccounted")}
        out["matched_by_run"] = None
    else:
        b, e = base["prog"], end["prog"]
        xdp = {k: e["counters"][k] - b["counters"][k] for k in XDP_FIELDS}
        run_time, run_cnt = e["run_time_ns"] - b["run_time_ns"], e["run_cnt"] - b["run_cnt"]
        xdp.update({"run_time_ns": run_time, "run_cnt": run_cnt,
                    "ns_per_pkt": round(run_time / run_cnt, 1) if run_cnt else None})
        # seen = matched + foreign_* + parse_errors: every frame lands in one of them.
        xdp["unaccounted"] = xdp["seen"] - (xdp["matched"] + xdp["foreign_arp"] +
                                            xdp["foreign_port"] + xdp["foreign_other"] +
                                            xdp["parse_errors"])
        out["xdp"] = xdp
        out["matched_by_run"] = {str(run_id + i): e["matched_by_run"][i] - b["matched_by_run"][i]
                                 for i in range(run_ids)}
    out["features"] = features if features is not None else empty_summary(collector)
    out["tcpdump"] = dict(tcpdump or {})
    out["program"] = None
    if target is not None:
        b, e = base["target"], end["target"]
        run_time, run_cnt = e["run_time_ns"] - b["run_time_ns"], e["run_cnt"] - b["run_cnt"]
        chained = base.get("prog") is not None
        out["program"] = dict(target, chained=chained, run_time_ns=run_time, run_cnt=run_cnt,
                              # A program reached by a tail call has no run-time statistics of
                              # its own: the kernel accounts its time to the collector.
                              ns_per_pkt=round(run_time / run_cnt, 1) if run_cnt else None,
                              driver_xdp=None, exceptions=None)
        for k in ("driver_xdp", "exceptions"):
            if base.get(k) is not None and end.get(k) is not None:
                out["program"][k] = {n: end[k][n] - base[k][n] for n in end[k]}
    return out


def session_result(meta, interfaces, softirq, udp_sink, timing, boot_id):
    out = dict(meta)
    out.update({"softirq": softirq, "interfaces": interfaces, "udp_sink": udp_sink,
                "boot_id": boot_id})
    out.update(timing)
    return out


def measured_window(collector, features, rows):
    """([first, last] or None, how): DUT CLOCK_MONOTONIC of the first and last arrival
    of a measured-run packet.  From the feature records when there are any; else from
    the time series, to its 0.1 s resolution."""
    if features and features.get("first_arrival_ns"):
        return [features["first_arrival_ns"], features["last_arrival_ns"]], "feature records"
    column = "nic_rx_packets" if collector == "off" else "xdp_matched_measured"
    first, last = timeseries.measured_window(rows, column)
    if first is None:
        return None, "no %s in the time series" % column
    return [first, last], "time series (%s grew; each arrival lies in the %.1f s before)" % (
        column, timeseries.INTERVAL_S)


def first_last_arrival(feature_summaries):
    firsts = [f["first_arrival_ns"] for f in feature_summaries if f and f["first_arrival_ns"]]
    lasts = [f["last_arrival_ns"] for f in feature_summaries if f and f["last_arrival_ns"]]
    return (min(firsts), max(lasts)) if firsts else (None, None)


# --- the session ---------------------------------------------------------------------

class Iface:
    """What a session holds for one interface."""

    def __init__(self, name, ifindex, pcap_path):
        self.name, self.ifindex, self.pcap_path = name, ifindex, pcap_path
        self.features_path = None   # <state_dir>/<session>/features-<if>.bin when kept
        self.program = None       # the collector, or the observer around a user's program
        self.target = None        # a user's program under test (userprog.UserProgram)
        self.attached_id = None   # the id of the program the user attached (program "attached")
        self.features = None
        self.tcpdump = None
        self.link = {}            # the arm reply's entry
        self.base = None
        self.end = None
        self.capture = None


class Session:
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
        req, st = self.req, self.stack
        for i in self.ifaces:
            try:
                i.ifindex = socket.if_nametoindex(i.name)
            except OSError:
                raise ApiError(400, "interfaces: %s does not exist on the DUT" % i.name)
            foreign = sysstats.link_xdp_info(i.name)
            if self.user_program == "attached":
                # xdplab attaches and detaches nothing here: it observes what is there.
                if not foreign or not foreign["progs"]:
                    raise ApiError(409, "program: attached, but interface %s has no XDP program "
                                        "attached; attach yours first (or name an object)" % i.name)
                i.attached_id = foreign["progs"][0]["id"]
                i.link = {"xdp_mode_in_effect": foreign["mode"]}
            elif foreign:
                desc = ", ".join("id %s name %s tag %s" % (p["id"], p["name"], p["tag"])
                                 for p in foreign["progs"]) or "unknown program"
                raise ApiError(409, "interface %s already has an XDP program attached (%s mode: "
                                    "%s); left in place" % (i.name, foreign["mode"], desc))
        compile_s = 0.0
        if self.features_dir is not None:
            os.makedirs(self.features_dir, mode=0o700, exist_ok=True)
        if self.user_program is not None:
            self._load_user_programs()
            from .exceptions import XdpExceptions
            try:
                self.exceptions = XdpExceptions()
            except (OSError, RuntimeError) as e:
                raise ApiError(500, "attaching the XDP exception counter (xdp:xdp_exception): %s" % e)
            st.callback(self.exceptions.close)
        if self.collector != "off":
            chain = self.user_program is not None
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
        if self.collector != "off" or self.user_program is not None:
            stats_fd = enable_run_time_stats()
            st.callback(os.close, stats_fd)
        self.sampler = sysstats.SoftirqSampler(self.id)
        st.callback(self.sampler.stop)
        # The sink keeps the stack from answering our datagrams with ICMP port
        # unreachable; it is never read, so its tiny buffer overflows quietly.
        self.sink = st.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SINK_RCVBUF_BYTES)
        try:
            self.sink.bind(("0.0.0.0", req["port"]))
        except OSError as e:
            raise ApiError(409, "port: UDP port %d is already bound on the DUT (%s)"
                           % (req["port"], e.strerror))
        self.sink_inode = os.fstat(self.sink.fileno()).st_ino
        self.sink_base = {"snmp": sysstats.udp_snmp(),
                          "drops": sysstats.udp_socket_drops(self.sink_inode) or 0}
        st.enter_context(self.links)
        for i in self.ifaces:
            # Baselines just before attaching: the program is idle until then.
            i.base = self._snapshot(i)
            if i.target is not None and i.program is None:
                self._attach_user_program(i)
                continue
            i.link = {"xdp_mode_in_effect": None, "prog_id": None, "prog_tag": None,
                      "link_id": None}
            if i.program is None:
                continue
            try:
                fd = xdp_link_create(i.program.prog_fd, i.ifindex, req["xdp_mode"])
            except OSError as e:
                status = 409 if e.errno in (errno.EBUSY, errno.EEXIST) else 500
                raise ApiError(status, "attaching %s to %s in %s mode failed: %s"
                               % (PROG_NAME, i.name, req["xdp_mode"], e.strerror))
            self.links.callback(os.close, fd)     # closing the last fd detaches
            now = sysstats.link_xdp_info(i.name)
            prog_id = i.program.info.get("prog_id")
            if not now or prog_id not in [p["id"] for p in now["progs"]]:
                raise ApiError(500, "after attaching, %s does not show prog id %s (shows %s)"
                               % (i.name, prog_id, now))
            i.link = {"xdp_mode_in_effect": now["mode"], "prog_id": prog_id,
                      "prog_tag": i.program.tag, "link_id": fdinfo(fd).get("link_id")}
            if i.target is not None:     # the collector hands every frame on to it
                i.link.update({"program_under_test_id": i.target.info.get("id"),
                               "program_under_test_tag": i.target.tag})
        bpf_filter = capture.capture_filter(req["port"], MAGIC, self.run_id, self.run_ids)
        for i in self.ifaces:
            try:
                i.tcpdump = capture.Tcpdump(spawner, i.name, req["snaplen"], bpf_filter,
                                            i.pcap_path)
            except OSError as e:
                raise ApiError(500, "starting tcpdump on %s failed: %s" % (i.name, e))
            st.callback(i.tcpdump.kill)
        for i in self.ifaces:
            if not i.tcpdump.wait_listening():
                raise ApiError(500, "tcpdump on %s did not report listening within %.0f s: %s"
                               % (i.name, capture.LISTEN_TIMEOUT_S,
                                  " | ".join(list(i.tcpdump.lines)[-5:])))
        self.armed_ns = time.monotonic_ns()
        self.deadline_ns = self.armed_ns + int(req["deadline_s"] * 1e9)
        self.timeseries = timeseries.Sampler(self.id, {i.name: self._timeseries_source(i)
                                                       for i in self.ifaces},
                                             self.deadline_ns, sysstats.proc_stat_cpu)
        self.timeseries.start()
        st.callback(self.timeseries.stop)
        self.state = "armed"
        p = self.ifaces[0].program
        self.arm_reply = {
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
            self.arm_reply.update({"program": t.manifest(), "prog_tag": t.tag,
                                   "insn_count": t.info.get("xlated_insns"),
                                   "verified_insns": t.info.get("verified_insns")})

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

    def _attach_user_program(self, i):
        """Attach the program under test by itself (collector off); a program the user
        attached is left as it is."""
        t = i.target
        link_id = None
        if not t.attached:
            try:
                fd = xdp_link_create(t.fd, i.ifindex, self.req["xdp_mode"])
            except OSError as e:
                status = 409 if e.errno in (errno.EBUSY, errno.EEXIST) else 500
                raise ApiError(status, "attaching program %s to %s in %s mode failed: %s"
                               % (t.name, i.name, self.req["xdp_mode"], e.strerror))
            self.links.callback(os.close, fd)
            link_id = fdinfo(fd).get("link_id")
        now = sysstats.link_xdp_info(i.name)
        if not now or t.info.get("id") not in [p["id"] for p in now["progs"]]:
            raise ApiError(500, "after attaching, %s does not show prog id %s (shows %s)"
                           % (i.name, t.info.get("id"), now))
        i.link = {"xdp_mode_in_effect": now["mode"], "prog_id": t.info.get("id"),
                  "prog_tag": t.tag, "link_id": link_id,
                  "attached_by": "user" if t.attached else "xdplab"}

    def _snapshot(self, i):
        """i's counters now: the NIC's, the collector's, and with a user's program its
        run-time statistics and the driver's XDP verdict counters."""
        from .userprog import driver_xdp_stats
        snap = {"nic": sysstats.nic_stats(i.name),
                "prog": i.program.snapshot() if i.program else None}
        if i.target is not None:
            snap["target"] = i.target.stats()
            snap["driver_xdp"] = driver_xdp_stats(i.name, sysstats.interface_facts(i.name)
                                                  .get("driver"))
            snap["exceptions"] = (self.exceptions.counts(self._attached_prog_id(i))
                                  if self.exceptions is not None else None)
        return snap

    @staticmethod
    def _attached_prog_id(i):
        """The id of the program the interface's driver runs (and names in its XDP
        exceptions): the collector in chain mode, else the program under test."""
        if i.program is not None:
            return i.program.info.get("prog_id")
        return i.attached_id if i.attached_id is not None else i.target.info.get("id")

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

    def _timeseries_source(self, i):
        """A callable giving i's five time-series counts since arm (None: not counted)."""
        rx_path = "/sys/class/net/%s/statistics/rx_packets" % i.name
        nic0 = i.base["nic"].get("rx_packets", 0)
        slots = range(self.measured_run_ids)
        prog = i.program
        if prog is not None:
            b = i.base["prog"]
            seen0, drops0 = b["counters"]["seen"], b["counters"]["ringbuf_full"]
            matched0 = sum(b["matched_by_run"][k] for k in slots)

        def counts():
            nic = int(sysstats.read_text(rx_path)) - nic0
            if prog is None:
                return nic, None, None, None, None
            seen, matched, drops = prog.sample(slots)
            feats = None
            if i.features is not None:
                feats = getattr(i.features, "measured_received", None)
                if callable(feats):
                    feats = feats()
                if feats is None:
                    feats = i.features.received
            return nic, seen - seen0, matched - matched0, feats, drops - drops0
        return counts

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
    def matched_so_far(self, i):
        if i.program is None:
            return None
        return i.program.snapshot()["counters"]["matched"] - i.base["prog"]["counters"]["matched"]

    def live(self):
        """Counters since arm, per interface (for /metrics)."""
        out = {}
        for i in self.ifaces:
            nic = sysstats.delta(i.base["nic"], sysstats.nic_stats(i.name))
            xdp = None
            if i.program is not None:
                snap, b = i.program.snapshot(), i.base["prog"]
                xdp = {k: snap["counters"][k] - b["counters"][k] for k in XDP_FIELDS}
            out[i.name] = {"nic": nic, "xdp": xdp,
                           "records": i.features.received if i.features else None}
        return out

    # --- capture stop and disarm -----------------------------------------------------------
    def capture_stop(self):
        with self.lock:
            if self.timing["stop_s"] is None:
                t0 = time.monotonic()
                for i in self.ifaces:
                    if i.capture is None:
                        i.capture = i.tcpdump.stop(self.matched_so_far(i))
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
                    i.end = self._snapshot(i)
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
        if first is not None:
            softirq = self.sampler.window(first, last, "first to last matched arrival")
        else:
            softirq = self.sampler.window(self.armed_ns, disarmed_ns,
                                          "armed window (no matched arrivals)")
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
        return session_result(meta, interfaces, softirq, udp_sink, {}, sysstats.boot_id())

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

    def pcap_path(self, name):
        for i in self.ifaces:
            if i.name == name:
                return i.pcap_path
        return None

    def has_pcaps(self):
        return any(i.pcap_path or i.features_path for i in self.ifaces)
