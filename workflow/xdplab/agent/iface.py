"""One interface of a session: what the session holds for it (its programs, link,
capture, feature records and counter snapshots), and the checks, attaching and
counter reads done on it.  The session (session.py) decides the order and owns the
releases: every attach here pushes its release on the links stack it is given.
"""

import errno
import os
import socket

from . import sysstats
from .api import ApiError
from .bpf import fdinfo, xdp_link_create, PROG_NAME
from .results import XDP_FIELDS


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

    # --- before arming -------------------------------------------------------------------
    def check(self, user_program):
        """The interface exists and has no XDP program attached; or, with the program
        "attached", has the user's, which is then observed as it is."""
        try:
            self.ifindex = socket.if_nametoindex(self.name)
        except OSError:
            raise ApiError(400, "interfaces: %s does not exist on the DUT" % self.name)
        foreign = sysstats.link_xdp_info(self.name)
        if user_program == "attached":
            # xdplab attaches and detaches nothing here: it observes what is there.
            if not foreign or not foreign["progs"]:
                raise ApiError(409, "program: attached, but interface %s has no XDP program "
                                    "attached; attach yours first (or name an object)" % self.name)
            self.attached_id = foreign["progs"][0]["id"]
            self.link = {"xdp_mode_in_effect": foreign["mode"]}
        elif foreign:
            desc = ", ".join("id %s name %s tag %s" % (p["id"], p["name"], p["tag"])
                             for p in foreign["progs"]) or "unknown program"
            raise ApiError(409, "interface %s already has an XDP program attached (%s mode: "
                                "%s); left in place" % (self.name, foreign["mode"], desc))

    # --- attaching -------------------------------------------------------------------------
    def attach_collector(self, links, mode):
        """Attach the collector (if any) through a bpf_link, whose close goes on links."""
        self.link = {"xdp_mode_in_effect": None, "prog_id": None, "prog_tag": None,
                     "link_id": None}
        if self.program is None:
            return
        try:
            fd = xdp_link_create(self.program.prog_fd, self.ifindex, mode)
        except OSError as e:
            status = 409 if e.errno in (errno.EBUSY, errno.EEXIST) else 500
            raise ApiError(status, "attaching %s to %s in %s mode failed: %s"
                           % (PROG_NAME, self.name, mode, e.strerror))
        links.callback(os.close, fd)     # closing the last fd detaches
        now = sysstats.link_xdp_info(self.name)
        prog_id = self.program.info.get("prog_id")
        if not now or prog_id not in [p["id"] for p in now["progs"]]:
            raise ApiError(500, "after attaching, %s does not show prog id %s (shows %s)"
                           % (self.name, prog_id, now))
        self.link = {"xdp_mode_in_effect": now["mode"], "prog_id": prog_id,
                     "prog_tag": self.program.tag, "link_id": fdinfo(fd).get("link_id")}
        if self.target is not None:     # the collector hands every frame on to it
            self.link.update({"program_under_test_id": self.target.info.get("id"),
                              "program_under_test_tag": self.target.tag})

    def attach_user_program(self, links, mode):
        """Attach the program under test by itself (collector off); a program the user
        attached is left as it is."""
        t = self.target
        link_id = None
        if not t.attached:
            try:
                fd = xdp_link_create(t.fd, self.ifindex, mode)
            except OSError as e:
                status = 409 if e.errno in (errno.EBUSY, errno.EEXIST) else 500
                raise ApiError(status, "attaching program %s to %s in %s mode failed: %s"
                               % (t.name, self.name, mode, e.strerror))
            links.callback(os.close, fd)
            link_id = fdinfo(fd).get("link_id")
        now = sysstats.link_xdp_info(self.name)
        if not now or t.info.get("id") not in [p["id"] for p in now["progs"]]:
            raise ApiError(500, "after attaching, %s does not show prog id %s (shows %s)"
                           % (self.name, t.info.get("id"), now))
        self.link = {"xdp_mode_in_effect": now["mode"], "prog_id": t.info.get("id"),
                     "prog_tag": t.tag, "link_id": link_id,
                     "attached_by": "user" if t.attached else "xdplab"}

    # --- counters --------------------------------------------------------------------------
    def snapshot(self, exceptions):
        """The counters now: the NIC's, the collector's, and with a user's program its
        run-time statistics and the driver's XDP verdict counters, and its XDP exceptions
        (exceptions: the session's exceptions.XdpExceptions or None)."""
        from .userprog import driver_xdp_stats
        snap = {"nic": sysstats.nic_stats(self.name),
                "prog": self.program.snapshot() if self.program else None}
        if self.target is not None:
            snap["target"] = self.target.stats()
            snap["driver_xdp"] = driver_xdp_stats(self.name, sysstats.interface_facts(self.name)
                                                  .get("driver"))
            snap["exceptions"] = (exceptions.counts(self.attached_prog_id())
                                  if exceptions is not None else None)
        return snap

    def attached_prog_id(self):
        """The id of the program the interface's driver runs (and names in its XDP
        exceptions): the collector in chain mode, else the program under test."""
        if self.program is not None:
            return self.program.info.get("prog_id")
        return self.attached_id if self.attached_id is not None else self.target.info.get("id")

    def timeseries_source(self, measured_run_ids):
        """A callable giving the five time-series counts since arm (None: not counted)."""
        rx_path = "/sys/class/net/%s/statistics/rx_packets" % self.name
        nic0 = self.base["nic"].get("rx_packets", 0)
        slots = range(measured_run_ids)
        prog = self.program
        if prog is not None:
            b = self.base["prog"]
            seen0, drops0 = b["counters"]["seen"], b["counters"]["ringbuf_full"]
            matched0 = sum(b["matched_by_run"][k] for k in slots)

        def counts():
            nic = int(sysstats.read_text(rx_path)) - nic0
            if prog is None:
                return nic, None, None, None, None
            seen, matched, drops = prog.sample(slots)
            feats = None
            if self.features is not None:
                feats = getattr(self.features, "measured_received", None)
                if callable(feats):
                    feats = feats()
                if feats is None:
                    feats = self.features.received
            return nic, seen - seen0, matched - matched0, feats, drops - drops0
        return counts

    def matched_so_far(self):
        if self.program is None:
            return None
        return (self.program.snapshot()["counters"]["matched"]
                - self.base["prog"]["counters"]["matched"])

    def live(self):
        """Counters since arm (for /metrics)."""
        nic = sysstats.delta(self.base["nic"], sysstats.nic_stats(self.name))
        xdp = None
        if self.program is not None:
            snap, b = self.program.snapshot(), self.base["prog"]
            xdp = {k: snap["counters"][k] - b["counters"][k] for k in XDP_FIELDS}
        return {"nic": nic, "xdp": xdp,
                "records": self.features.received if self.features else None}
