"""What the ring-buffer records of one interface add up to, in bounded memory.

Per record: counts per run id, duplicate detection with a bitmap per run id
(sized at arm from expected_packets, capped), latency (arrival_ns - send_ns)
and inter-arrival gap (in the order the consumer reads records) into
log-linear histograms.  Nothing is kept per packet: memory does not grow with
the packet count.  Touched only by the consumer thread until it is joined.
"""

import ctypes as ct

from .hist import DESCRIPTION, Histogram

# Duplicate bitmaps of one interface together use at most this much; seqs at or
# above a run's bitmap are counted (seq_beyond_bitmap) but not checked.
BITMAP_MAX_BYTES = 1 << 24            # 16 MiB = 134M seqs


class Features:
    def __init__(self, run_id, run_ids, expected_packets, record_cls):
        self.run_id, self.run_ids = run_id, run_ids
        self.record_ptr = ct.POINTER(record_cls)
        self.record_size = ct.sizeof(record_cls)
        self.received = 0
        self.other_run = 0
        self.callback_errors = 0
        self.seq_beyond_bitmap = 0
        self.first_arrival = None
        self.last_arrival = None
        self.prev_arrival = None
        per_run = min(expected_packets // 8 + 1, BITMAP_MAX_BYTES // run_ids)
        self.bitmap_bits = per_run * 8
        self.bitmaps = [bytearray(per_run) for _ in range(run_ids)]
        self.run_received = [0] * run_ids
        self.run_unique = [0] * run_ids
        self.run_duplicates = [0] * run_ids
        self.latency = Histogram()
        self.gap = Histogram()
        self.gap_negative = 0
        self.per_cpu = {}

    def on_record(self, data, size):
        """The ring buffer's callback: never raises (BCC would print and go on)."""
        try:
            if size < self.record_size:
                raise ValueError("short record")
            self.add(ct.cast(data, self.record_ptr).contents)
        except Exception:
            self.callback_errors += 1

    def add(self, ev):
        self.received += 1
        arrival = ev.arrival_ns
        prev = self.prev_arrival
        if prev is not None:
            if arrival >= prev:
                self.gap.record(arrival - prev)
            else:
                self.gap_negative += 1
        self.prev_arrival = arrival
        slot = ev.run_id - self.run_id
        if not 0 <= slot < self.run_ids:
            self.other_run += 1      # XDP filters run ids: only a stale record could land here
            return
        self.run_received[slot] += 1
        seq = ev.seq
        if seq < self.bitmap_bits:
            bm = self.bitmaps[slot]
            byte, bit = seq >> 3, 1 << (seq & 7)
            if bm[byte] & bit:
                self.run_duplicates[slot] += 1
            else:
                bm[byte] |= bit
                self.run_unique[slot] += 1
        else:
            self.seq_beyond_bitmap += 1
        if self.first_arrival is None or arrival < self.first_arrival:
            self.first_arrival = arrival
        if self.last_arrival is None or arrival > self.last_arrival:
            self.last_arrival = arrival
        self.latency.record(arrival - ev.send_ns)
        cpu = ev.cpu
        self.per_cpu[cpu] = self.per_cpu.get(cpu, 0) + 1

    def release(self):
        """Drop the bitmaps once the summary is taken."""
        self.bitmaps = []

    def summary(self):
        lat = self.latency.summary()
        lat["method"] = ("arrival_ns - send_ns per record of the session's run ids (duplicates "
                         "included; negative values, e.g. from two hosts' clocks, are counted "
                         "in out_of_range); " + DESCRIPTION)
        gap = self.gap.summary(percentiles=(50, 99))
        gap["negative"] = self.gap_negative
        gap["method"] = ("arrival_ns difference of consecutive records in the order the "
                         "consumer read them; " + DESCRIPTION)
        by_run = {str(self.run_id + i): {"received": self.run_received[i],
                                         "unique_seqs": self.run_unique[i],
                                         "duplicates": self.run_duplicates[i]}
                  for i in range(self.run_ids)}
        return {
            "received": self.received,
            "for_run": sum(self.run_received),
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


def empty_summary(collector):
    """features for a session without records ("counters": zeros, "off": nulls)."""
    z = 0 if collector == "counters" else None
    return {"received": z, "for_run": z, "other_run": z, "unique_seqs": z, "duplicates": z,
            "seq_beyond_bitmap": z, "by_run": {}, "first_arrival_ns": None,
            "last_arrival_ns": None, "per_cpu": {}, "callback_errors": z,
            "latency_ns": None, "gap_ns": None}
