"""A session's results from its counter snapshots: pure arithmetic, no root needed to
test.  interface_result for one interface, session_result for the whole; the
measured window from the feature records or the time series."""

from . import sysstats, timeseries
from .features import empty_summary

XDP_FIELDS = ("seen", "ipv4_udp", "matched", "features", "ringbuf_full", "parse_errors",
              "foreign_arp", "foreign_port", "foreign_other", "chain_missed")


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


def session_result(meta, interfaces, softirq, udp_sink, timing, boot_id, observers=None):
    """observers: the CPU the session's observers used over softirq's window
    (sysstats.SoftirqSampler.observers), or None."""
    out = dict(meta)
    out.update({"softirq": softirq, "observers": observers, "interfaces": interfaces,
                "udp_sink": udp_sink, "boot_id": boot_id})
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
