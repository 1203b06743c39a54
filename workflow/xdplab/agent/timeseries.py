"""The time series of an armed session: every 0.1 s, per interface, counters
since arm and the softirq load, in bounded memory.

One thread samples all interfaces of a session from arm until disarm (or the
session's deadline, whichever comes first), on an absolute 0.1 s schedule.
Each row holds cumulative counts, so a late or missing row loses resolution,
never packets.  Columns are int arrays (8 bytes a value); past MAX_ROWS rows
every other row goes and the interval doubles, so a 24 h deadline still fits.
The softirq share is kept as cumulative /proc/stat jiffies and turned into a
percentage over each row's own interval only when the rows are read, so it
stays right after rows are dropped.
"""

import logging
import threading
import time
from array import array

log = logging.getLogger("xdplab-agent")

COLUMNS = ["t_ns", "nic_rx_packets", "xdp_seen", "xdp_matched_measured",
           "features_measured", "ringbuf_drops", "softirq_pct"]
COUNTS = COLUMNS[1:6]
INTERVAL_S = 0.1
MAX_ROWS = 36000        # one hour at 0.1 s; ~2.3 MB of arrays per interface at most
MISSING = -1            # a count that does not exist (collector off, no feature records)
DEADLINE_GRACE_NS = 2 * 10 ** 9   # the watchdog disarms at the deadline; stop soon after


class Series:
    """One interface's rows: t_ns, five cumulative counts, softirq and total jiffies."""

    def __init__(self):
        self.cols = [array("q") for _ in range(8)]

    def __len__(self):
        return len(self.cols[0])

    def append(self, t_ns, counts, soft, total):
        vals = [t_ns] + [MISSING if c is None else int(c) for c in counts] + [soft, total]
        for a, v in zip(self.cols, vals):
            a.append(v)

    def halve(self):
        """Keep every other row (the first and, when the count is odd, the last)."""
        for a in self.cols:
            a[:] = a[::2]

    def rows(self):
        """[[t_ns, counts..., softirq_pct]]: softirq_pct is the share of all CPUs'
        time spent in softirq since the previous row (null for the first row)."""
        t, soft, total = self.cols[0], self.cols[6], self.cols[7]
        out = []
        for k in range(len(t)):
            row = [t[k]] + [None if self.cols[c][k] == MISSING else self.cols[c][k]
                            for c in range(1, 6)]
            pct = None
            if k > 0:
                d_tot = total[k] - total[k - 1]
                if d_tot > 0:
                    pct = round(100.0 * (soft[k] - soft[k - 1]) / d_tot, 2)
            out.append(row + [pct])
        return out


def measured_window(rows, column):
    """(first, last) t_ns of the rows where `column` grew over the previous row, or
    (None, None): where feature records are missing, when the measured packets
    arrived, to the resolution of the sampling interval (each arrival lies in the
    interval that ends at the row's t_ns)."""
    c = COLUMNS.index(column)
    first = last = None
    for prev, row in zip(rows, rows[1:]):
        if prev[c] is not None and row[c] is not None and row[c] > prev[c]:
            if first is None:
                first = row[0]
            last = row[0]
    return first, last


class Sampler:
    """Samples `sources` ({interface: callable() -> the five counts since arm}) and
    the aggregate /proc/stat line every `interval` s until stop() or the deadline."""

    def __init__(self, name, sources, deadline_ns, stat, interval=INTERVAL_S,
                 max_rows=MAX_ROWS, clock=time.monotonic_ns):
        self.sources = sources
        self.series = {n: Series() for n in sources}
        self.deadline_ns = deadline_ns
        self.stat, self.clock = stat, clock
        self.interval = interval
        self.max_rows = max_rows
        self.errors = 0
        self._lock = threading.Lock()         # one sample at a time (the last one at stop)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="timeseries-" + name,
                                        daemon=True)

    def start(self):
        self.sample()
        self._thread.start()

    @property
    def thread(self):
        """The sampling thread (the session follows its CPU time)."""
        return self._thread

    def sample(self):
        with self._lock:
            try:
                soft, total = self.stat()
                t = self.clock()
                for name, fn in self.sources.items():
                    self.series[name].append(t, fn(), soft, total)
                if len(next(iter(self.series.values()), ())) > self.max_rows:
                    for s in self.series.values():
                        s.halve()
                    self.interval *= 2
            except Exception as e:
                self.errors += 1
                if self.errors <= 3:
                    log.warning("time series sample failed: %s: %s", type(e).__name__, e)

    def _loop(self):
        nxt = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, nxt - time.monotonic())):
            if self.clock() > self.deadline_ns + DEADLINE_GRACE_NS:
                return
            self.sample()
            nxt += self.interval
            now = time.monotonic()
            if nxt < now:                      # fell behind (a stalled agent): no burst
                nxt = now + self.interval

    def stop(self, last_sample=False):
        """Stop the thread; with last_sample, take one more row (after detaching,
        so that the last row holds the final counts)."""
        first = not self._stop.is_set()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if last_sample and first:
            self.sample()

    def result(self, name):
        return {"columns": list(COLUMNS), "rows": self.series[name].rows(),
                "interval_s": round(self.interval, 3), "max_rows": self.max_rows,
                "sample_errors": self.errors}
