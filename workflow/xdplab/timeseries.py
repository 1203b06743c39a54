"""A trial second by second: timeseries.csv, and whether its rate was stable.

The DUT agent samples its counters every 0.1 s while a trial is armed (cumulative
since arm, stamped with the DUT's CLOCK_MONOTONIC), and knows when the first and the
last packet of the measured window arrived.  Second k of the measured window is
[first + k s, first + (k + 1) s); a counter's rate in it is the difference of the
counter linearly interpolated at both ends, so each value is exact to the sampling
(0.1 s).  The generator counts what it sent in each whole second of its own measured
window (sent_pps).  Pure functions; no I/O.
"""

from __future__ import annotations

import bisect

# timeseries.csv, in order: (column, what it is).
COLUMNS = [
    ("second", "second of the measured window, from 0"),
    ("sent_pps", "packets the generators sent in this second of their own window"),
    ("nic_rx_pps", "packets the DUT interfaces received (NIC counter), per second"),
    ("xdp_matched_pps", "packets of the measured run the XDP program matched, per second"),
    ("features_pps", "feature records user space received, per second"),
    ("ringbuf_drops_per_s", "feature records dropped for want of ring-buffer room, per second"),
    ("softirq_pct", "softirq CPU time on the DUT over the second, % of all its CPUs"),
]
NAMES = [c for c, _ in COLUMNS]
# Agent sample columns (per interface) behind each per-second rate.
_RATE_OF = {"nic_rx_pps": "nic_rx_packets", "xdp_matched_pps": "xdp_matched_measured",
            "features_pps": "features_measured", "ringbuf_drops_per_s": "ringbuf_drops"}
NS = 1_000_000_000


def _at(ts: list, vs: list, t: float):
    """The counter linearly interpolated at time t (clamped at the ends)."""
    if not ts:
        return None
    i = bisect.bisect_left(ts, t)
    if i <= 0:
        return vs[0]
    if i >= len(ts):
        return vs[-1]
    t0, t1, v0, v1 = ts[i - 1], ts[i], vs[i - 1], vs[i]
    if v0 is None or v1 is None:
        return None
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


def _window(ifaces: dict):
    starts, ends = [], []
    for blk in ifaces.values():
        w = blk.get("measured_window_ns")
        if w and w[0] is not None and w[1] is not None:
            starts.append(w[0])
            ends.append(w[1])
    return (min(starts), max(ends)) if starts else (None, None)


def _anchored(idx: dict, rows: list, first: int, last: int, warmup: bool) -> dict:
    """Per column, (times, values) with the traffic's edges added: a counter is linear
    between samples only while packets flow, so without the edges the second holding the
    first or the last packet would be off by up to a sample's worth.  The measured run's
    counters are 0 at its first arrival and final at its last; the NIC's (and XDP's seen)
    are final at the last arrival too (nothing of ours comes after it), and, without a
    warm-up, still at their last value before the first arrival."""
    times = [r[idx["t_ns"]] for r in rows]
    out = {}
    for col, i in idx.items():
        if col == "t_ns":
            continue
        vals = [r[i] for r in rows]
        if col in ("xdp_matched_measured", "features_measured", "nic_rx_packets", "xdp_seen") \
                and all(v is not None for v in vals):
            after = [v for tm, v in zip(times, vals) if tm >= last]
            before = [v for tm, v in zip(times, vals) if tm <= first]
            anchors = {}
            if after:
                anchors[last] = after[0]
            if col in ("xdp_matched_measured", "features_measured"):
                anchors[first] = 0
            elif not warmup and before:
                anchors[first] = before[-1]
            pts = sorted([(tm, v) for tm, v in zip(times, vals) if tm not in anchors]
                         + list(anchors.items()))
            out[col] = ([p[0] for p in pts], [p[1] for p in pts])
        else:
            out[col] = (times, vals)
    return out


def per_second(gathered: dict, gens: list[dict], duration_s: int, warmup: bool = False) -> list[dict]:
    """One row per whole second of the measured window (COLUMNS); [] when the agent kept no
    samples or no measured packet arrived."""
    ifaces = gathered.get("interfaces") or {}
    first, last = _window(ifaces)
    if first is None:
        return []
    seconds = min(duration_s, max(1, round((last - first) / NS)))
    series = []
    for blk in ifaces.values():
        ts = blk.get("timeseries") or {}
        cols, rows = ts.get("columns") or [], ts.get("rows") or []
        if not rows:
            continue
        idx = {c: i for i, c in enumerate(cols)}
        series.append((idx, _anchored(idx, rows, first, last, warmup)))
    if not series:
        return []
    out = []
    for k in range(seconds):
        a, b = first + k * NS, first + (k + 1) * NS
        row = {"second": k}
        sent = [g["sent_per_s"][k] for g in gens if k < len(g.get("sent_per_s") or [])]
        row["sent_pps"] = sum(sent) if sent else None
        for col, src in _RATE_OF.items():
            total = 0.0
            for idx, cols in series:
                if src not in idx:
                    total = None
                    break
                times, vs = cols[src]
                va, vb = _at(times, vs, a), _at(times, vs, b)
                if va is None or vb is None:
                    total = None
                    break
                total += vb - va
            row[col] = round(total, 1) if total is not None else None
        soft = []
        for idx, cols in series[:1]:   # the DUT's CPUs: the same for every interface
            if "softirq_pct" in cols:
                soft = [v for tm, v in zip(*cols["softirq_pct"]) if a < tm <= b and v is not None]
        row["softirq_pct"] = round(sum(soft) / len(soft), 2) if soft else None
        out.append(row)
    return out


def stability(rows: list[dict], pct: float, column: str = "nic_rx_pps") -> dict:
    """{"unstable": whether any second's received rate strays from the mean of all seconds by
    more than pct %, "max_dev_pct": the largest such departure}; None for both without data."""
    values = [r[column] for r in rows if r.get(column) is not None]
    if not values:
        return {"unstable": None, "max_dev_pct": None}
    mean = sum(values) / len(values)
    if mean <= 0:
        return {"unstable": None, "max_dev_pct": None}
    dev = max(abs(v - mean) for v in values) / mean * 100.0
    return {"unstable": dev > pct, "max_dev_pct": round(dev, 2)}


def csv_text(rows: list[dict]) -> str:
    lines = [",".join(NAMES)]
    for r in rows:
        lines.append(",".join("" if r.get(c) is None else str(r[c]) for c in NAMES))
    return "\n".join(lines) + "\n"
