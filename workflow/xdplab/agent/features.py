"""What the ring-buffer records of one interface add up to, in bounded memory.

The collector hands records over in batches (1..XDPLAB_BATCH `struct
xdplab_feature` back to back in one ring-buffer record, see xdplab.h); a
batch is decoded at once through memoryview casts (one strided `tolist()` per
field), so the Python work per record is a few list operations, not a ctypes
object and a call.

Per record of a measured run id (run_id .. run_id + measured_run_ids - 1):
counts per run id, duplicate detection with a paged bitmap per measured run id
(sized at arm from expected_packets, capped), latency (arrival_ns - send_ns)
and inter-arrival gap (between consecutive measured records in arrival order, see
GAP_WINDOW) into log-linear histograms, and, with a features file,
its 40 raw bytes appended to the file (buffered, ~1 MiB per write).  Records
of the session's other run ids (warm-up) are counted, nothing more.  Nothing
is kept per packet: memory does not grow with the packet count.  Touched only
by the consumer thread until it is joined (the counters are read live, racily,
by the time-series sampler).
"""

import bisect
import ctypes as ct
import hashlib
from operator import sub

from .hist import DESCRIPTION, Histogram

# Duplicate bitmaps of one interface together use at most this much; seqs at or
# above a run's bitmap are counted (seq_beyond_bitmap) but not checked.
BITMAP_MAX_BYTES = 1 << 24            # 16 MiB = 134M seqs
FILE_CHUNK_BYTES = 1 << 20            # features file: written in chunks of ~1 MiB
# Gaps are taken in arrival order.  The collector stages records per CPU and hands them
# over in batches, so the consumer reads each CPU's records in order but two CPUs'
# batches interleaved.  The latest GAP_WINDOW arrival times wait, sorted, before their
# gaps are taken: a record read after GAP_WINDOW later-arriving ones (a CPU's last,
# partly filled batch, handed over at disarm) is counted as late, not as a gap, and
# the gap that spans it is taken as one.
GAP_WINDOW = 4096

# The fields the consumer reads, and the memoryview format of their C type.
_FIELDS = {"arrival_ns": "Q", "send_ns": "Q", "seq": "I", "run_id": "H", "cpu": "I"}
_SIZES = {"Q": 8, "I": 4, "H": 2}


def _layout(record_cls):
    """{field: (format, stride in elements, index in the record)} from the ctypes
    struct parsed from xdplab.h, checked against what the casts assume."""
    size = ct.sizeof(record_cls)
    out = {}
    for name, fmt in _FIELDS.items():
        field = getattr(record_cls, name)
        el = _SIZES[fmt]
        if field.size != el or field.offset % el or size % el:
            raise RuntimeError("struct xdplab_feature: field %s is not a %d-byte aligned "
                               "integer" % (name, el))
        out[name] = (fmt, size // el, field.offset // el)
    return out


PAGE_BITS = 1 << 19                   # a SeqSet page: 2^19 seqs in 64 KiB


class SeqSet:
    """The seqs of one run seen so far: a bitmap in pages of PAGE_BITS seqs, each page
    held only while some seq of it has not arrived.  A page whose every seq arrived is let
    go (any later arrival there is a duplicate), so a trial that loses nothing holds one or
    two pages whatever its length, and loss scattered everywhere at most 1 bit per seq."""

    def __init__(self):
        self.pages, self.fill, self.full = {}, {}, set()

    def add_run(self, s0, m):
        """Add the consecutive seqs s0 .. s0+m-1; return how many were already there."""
        dups, s, end = 0, s0, s0 + m
        while s < end:
            p, off = s // PAGE_BITS, s % PAGE_BITS
            n = min(end - s, PAGE_BITS - off)
            if p in self.full:
                dups += n
            else:
                bm = self.pages.get(p)
                if bm is None:
                    bm = self.pages[p] = bytearray(PAGE_BITS // 8)
                    self.fill[p] = 0
                b0, b1 = off >> 3, ((off + n - 1) >> 3) + 1
                chunk = int.from_bytes(bm[b0:b1], "little")
                mask = ((1 << n) - 1) << (off & 7)
                d = (chunk & mask).bit_count()
                if d != n:
                    bm[b0:b1] = (chunk | mask).to_bytes(b1 - b0, "little")
                dups += d
                self.fill[p] += n - d
                if self.fill[p] == PAGE_BITS:
                    del self.pages[p], self.fill[p]
                    self.full.add(p)
            s += n
        return dups

    def held_bytes(self):
        return len(self.pages) * (PAGE_BITS // 8)


class Features:
    """The ring-buffer records of one interface in one session, added up as they
    arrive: counts per run id (measured and warm-up), a duplicate bitmap per measured
    run id, the latency and inter-arrival gap histograms, first and last arrival,
    per-CPU counts, decoding errors, and the features file being written (with its
    sha256) when the session keeps one.  summary() is what the session reports;
    release() lets go of the bitmaps and buffers at disarm."""

    def __init__(self, run_id, run_ids, expected_packets, record_cls, measured_run_ids=None,
                 features_path=None):
        self.run_id, self.run_ids = run_id, run_ids
        self.measured = run_ids if measured_run_ids is None else measured_run_ids
        if not 1 <= self.measured <= run_ids:
            raise ValueError("measured_run_ids must be 1..run_ids")
        self.record_size = ct.sizeof(record_cls)
        self.layout = _layout(record_cls)
        self.records_read = 0          # every record, whatever its run id
        self.measured_received = 0     # records of measured run ids (read live by the sampler)
        self.warmup_records = 0        # records of the session's other (warm-up) run ids
        self.other_run = 0
        self.callback_errors = 0
        self.seq_beyond_bitmap = 0
        self.first_arrival = None
        self.last_arrival = None
        per_run = min(expected_packets // 8 + 1, BITMAP_MAX_BYTES // self.measured)
        self.bitmap_bits = per_run * 8
        self.bitmaps = [SeqSet() for _ in range(self.measured)]
        self.run_received = [0] * run_ids
        self.run_unique = [0] * self.measured
        self.run_duplicates = [0] * self.measured
        self.latency = Histogram()
        self.gap = Histogram()
        self.gap_late = 0
        self._gap_pending = []       # arrival times not yet in the gap histogram
        self._gap_last = None        # the latest arrival time whose gap was taken
        self.per_cpu = {}
        self.features_path = features_path
        self._file = None
        self._buf = bytearray()
        self._sha = None
        self.file_records = self.file_bytes = 0
        self.file_error = None
        if features_path is not None:
            self._file = open(features_path, "wb")
            self._sha = hashlib.sha256()

    @property
    def received(self):
        """Every record read (the session's drain loop watches it grow)."""
        return self.records_read

    # --- input ---------------------------------------------------------------------------
    def on_record(self, data, size):
        """The ring buffer's callback (data: address, size: bytes): one batch of
        records.  Never raises (BCC would print and go on)."""
        try:
            if size < self.record_size or size % self.record_size:
                raise ValueError("ring-buffer record of %d bytes" % size)
            self.add_batch(ct.string_at(data, size))
        except Exception:
            self.callback_errors += 1

    def add(self, ev):
        """One ctypes record (tests)."""
        self.add_batch(bytes(ev))

    def add_batch(self, buf):
        """buf: bytes of n whole records."""
        n = len(buf) // self.record_size
        if not n:
            return
        self.records_read += n
        mv = memoryview(buf)
        lay = self.layout
        views = {}

        def column(name):
            fmt, stride, idx = lay[name]
            v = views.get(fmt)
            if v is None:
                v = views[fmt] = mv.cast(fmt)
            return v[idx::stride].tolist()

        runs = column("run_id")
        r0 = runs[0]
        if runs.count(r0) == n:                      # one run id: the usual batch
            slot = r0 - self.run_id
            if 0 <= slot < self.measured:
                self._measured(buf, n, column, slot, None)
            elif self.measured <= slot < self.run_ids:
                self.warmup_records += n
                self.run_received[slot] += n
            else:
                self.other_run += n      # XDP filters run ids: only a stale record lands here
            return
        # Several run ids (two sources on one interface, the warm-up's end): by record.
        slots = [r - self.run_id for r in runs]
        keep = []
        for k, slot in enumerate(slots):
            if 0 <= slot < self.measured:
                keep.append(k)
            elif self.measured <= slot < self.run_ids:
                self.warmup_records += 1
                self.run_received[slot] += 1
            else:
                self.other_run += 1
        if keep:
            self._measured(buf, n, column, None, keep, slots)

    def _measured(self, buf, n, column, slot, keep, slots=None):
        """The measured records of a batch: all n (slot given) or those at `keep`."""
        arrivals, sends, seqs = column("arrival_ns"), column("send_ns"), column("seq")
        cpus = column("cpu")
        rs = self.record_size
        if keep is not None and len(keep) < n:
            arrivals = [arrivals[k] for k in keep]
            sends = [sends[k] for k in keep]
            seqs = [seqs[k] for k in keep]
            cpus = [cpus[k] for k in keep]
            slots = [slots[k] for k in keep]
            raw = b"".join(buf[k * rs:(k + 1) * rs] for k in keep) if self._file else None
        else:
            raw = buf
        m = len(arrivals)
        self.measured_received += m
        pending = self._gap_pending
        pending += arrivals
        if len(pending) >= 2 * GAP_WINDOW:
            self._take_gaps(len(pending) - GAP_WINDOW)
        self.latency.record_many(list(map(sub, arrivals, sends)))
        lo, hi = min(arrivals), max(arrivals)
        if self.first_arrival is None or lo < self.first_arrival:
            self.first_arrival = lo
        if self.last_arrival is None or hi > self.last_arrival:
            self.last_arrival = hi
        c0 = cpus[0]
        pc = self.per_cpu
        if cpus.count(c0) == m:                      # a batch comes from one CPU's staging
            pc[c0] = pc.get(c0, 0) + m
        else:
            for c in cpus:
                pc[c] = pc.get(c, 0) + 1
        if slot is not None:
            self.run_received[slot] += m
            self._seqs(slot, seqs)
        else:
            for s in set(slots):
                sel = [q for q, r in zip(seqs, slots) if r == s]
                self.run_received[s] += len(sel)
                self._seqs(s, sel)
        if self._file is not None and self.file_error is None:
            self._write(raw, m)

    def _take_gaps(self, n):
        """The gaps of the n earliest pending arrival times (all of them: n None)."""
        pending = self._gap_pending
        pending.sort()   # sorted runs (the window, each batch): a merge
        last = self._gap_last
        late = 0 if last is None else bisect.bisect_left(pending, last)
        self.gap_late += late
        take = pending[late:] if n is None else pending[late:max(n, late)]
        self._gap_pending = [] if n is None else pending[max(n, late):]
        if not take:
            return
        if last is not None:
            take.insert(0, last)
        self.gap.record_many(list(map(sub, take[1:], take)))
        self._gap_last = take[-1]

    def _seqs(self, slot, seqs):
        """Duplicate check of one run's seqs: a run of consecutive seqs (the usual
        batch) is tested and set with one big-int operation per page."""
        seen, bits = self.bitmaps[slot], self.bitmap_bits
        m, s0, s1 = len(seqs), seqs[0], seqs[-1]
        if s1 - s0 == m - 1 and s1 < bits and seqs == list(range(s0, s1 + 1)):
            dup = seen.add_run(s0, m)
            self.run_duplicates[slot] += dup
            self.run_unique[slot] += m - dup
            return
        dups = beyond = 0
        for seq in seqs:
            if seq < bits:
                dups += seen.add_run(seq, 1)
            else:
                beyond += 1
        self.run_duplicates[slot] += dups
        self.run_unique[slot] += len(seqs) - dups - beyond
        self.seq_beyond_bitmap += beyond

    # --- the features file -----------------------------------------------------------------
    def _write(self, raw, records):
        self._buf += raw
        self.file_records += records
        if len(self._buf) >= FILE_CHUNK_BYTES:
            self._flush()

    def _flush(self):
        if not self._buf or self._file is None:
            return
        try:
            self._file.write(self._buf)
            self._sha.update(self._buf)
            self.file_bytes += len(self._buf)
        except OSError as e:
            # A full disk ends the file, not the measurement: said in the summary.
            self.file_error = "%s: %s" % (type(e).__name__, e)
        self._buf = bytearray()

    def close_file(self):
        """Flush and close the features file (idempotent; the summary calls it)."""
        if self._file is None:
            return
        self._flush()
        try:
            self._file.close()
        except OSError as e:
            self.file_error = self.file_error or "%s: %s" % (type(e).__name__, e)
        self._file = None

    def release(self):
        """Drop the bitmaps and histograms once the summary is taken."""
        self.close_file()
        self.bitmaps = []
        self.latency = self.gap = None

    # --- output ------------------------------------------------------------------------------
    def summary(self):
        self.close_file()
        lat = self.latency.summary()
        lat["method"] = ("arrival_ns - send_ns per record of the session's measured run ids "
                         "(duplicates included; negative values, e.g. from two hosts' clocks, "
                         "are counted in out_of_range); " + DESCRIPTION)
        self._take_gaps(None)
        gap = self.gap.summary(percentiles=(50, 99))
        gap["late"] = self.gap_late
        gap["method"] = ("arrival_ns difference of consecutive records of the measured run ids "
                         "in arrival order (sorted over the latest %d; a record read after that "
                         "many later arrivals is counted in late, and the gap that spans it is "
                         "taken as one); " % GAP_WINDOW + DESCRIPTION)
        by_run = {}
        for i in range(self.run_ids):
            if i < self.measured:
                by_run[str(self.run_id + i)] = {"received": self.run_received[i],
                                                "unique_seqs": self.run_unique[i],
                                                "duplicates": self.run_duplicates[i]}
            else:
                by_run[str(self.run_id + i)] = {"received": self.run_received[i],
                                                "warmup": True}
        out = {
            "received": self.measured_received,
            "for_run": self.measured_received,
            "warmup_records": self.warmup_records,
            "other_run": self.other_run,
            "unique_seqs": sum(self.run_unique),
            "duplicates": sum(self.run_duplicates),
            "seq_beyond_bitmap": self.seq_beyond_bitmap,
            "by_run": by_run,
            "first_arrival_ns": self.first_arrival,
            "last_arrival_ns": self.last_arrival,
            "per_cpu": {str(k): v for k, v in sorted(self.per_cpu.items())},
            "callback_errors": self.callback_errors,
            "latency_ns": lat,
            "gap_ns": gap,
        }
        if self.features_path is not None:
            out["features_file"] = {"records": self.file_bytes // self.record_size,
                                    "bytes": self.file_bytes,
                                    "sha256": self._sha.hexdigest(),
                                    "record_size": self.record_size,
                                    "error": self.file_error}
        return out


def empty_summary(collector):
    """features for a session without records ("counters": zeros, "off": nulls)."""
    z = 0 if collector == "counters" else None
    return {"received": z, "for_run": z, "warmup_records": z, "other_run": z, "unique_seqs": z,
            "duplicates": z, "seq_beyond_bitmap": z, "by_run": {}, "first_arrival_ns": None,
            "last_arrival_ns": None, "per_cpu": {}, "callback_errors": z,
            "latency_ns": None, "gap_ns": None}
