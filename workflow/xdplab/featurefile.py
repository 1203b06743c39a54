"""features.parquet: every feature record the collector exported in a trial's measured
window, one row per packet, written in chunks (memory does not grow with the trial).

The DUT agent streams the records to a file as they arrive, raw: `struct xdplab_feature`
of bpf/xdplab.h as the kernel wrote it (host byte order of the DUT, little-endian on
x86-64 and arm64; addresses as on the wire).  This reads that file in chunks and writes
Parquet with pyarrow.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

# struct xdplab_feature: arrival_ns u64, send_ns u64, saddr u32 (network order), daddr u32
# (network order), seq u32, sport u16, dport u16, frame_len u16, run_id u16, cpu u32.
RECORD = struct.Struct("<QQ4s4sIHHHHI")
RECORD_SIZE = RECORD.size  # 40
CHUNK_RECORDS = 1 << 16

# (column, Arrow type name, what it is)
COLUMNS = [
    ("saddr", "string", "source IPv4 address"),
    ("daddr", "string", "destination IPv4 address"),
    ("sport", "uint16", "UDP source port"),
    ("dport", "uint16", "UDP destination port"),
    ("frame_len", "uint16", "bytes from the Ethernet header to the frame's end (no FCS)"),
    ("seq", "uint32", "sequence number in the run, from 0"),
    ("run_id", "uint16", "the run id of the source that sent it"),
    ("send_ns", "uint64", "CLOCK_MONOTONIC on the source just before the send (0: not written)"),
    ("arrival_ns", "uint64", "bpf_ktime_get_ns() when XDP ran on the DUT (CLOCK_MONOTONIC)"),
    ("latency_ns", "int64", "arrival_ns - send_ns when both hosts share one clock, else null"),
    ("cpu", "uint32", "the DUT CPU that ran the XDP program"),
    ("interface", "string", "the DUT interface it arrived on"),
]


def _schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind, _ in COLUMNS])


# The same layout for numpy (decoding a chunk at once).
DTYPE = [("arrival_ns", "<u8"), ("send_ns", "<u8"), ("saddr", "V4"), ("daddr", "V4"), ("seq", "<u4"),
         ("sport", "<u2"), ("dport", "<u2"), ("frame_len", "<u2"), ("run_id", "<u2"), ("cpu", "<u4")]


# The columns are built from numpy buffers with pa.Array.from_buffers: pa.array() would
# import pandas (~0.2 s, once per trial) to ask whether its argument is a pandas object.


def _strings(values: list[str]):
    """An Arrow string array of a few Python strings."""
    import numpy as np
    import pyarrow as pa

    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(b) for b in data])
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def _repeated(names: list[str], index):
    """A string column of few distinct values: names[index[i]] for each row."""
    import numpy as np
    import pyarrow as pa

    index = np.ascontiguousarray(index, dtype=np.int32)
    codes = pa.Array.from_buffers(pa.int32(), len(index), [None, pa.py_buffer(index)])
    return pa.DictionaryArray.from_arrays(codes, _strings(names)).dictionary_decode()


def _addresses(raw):
    """Dotted addresses of a column of 4-byte network-order values (few distinct ones)."""
    import numpy as np

    uniq, inverse = np.unique(raw, return_inverse=True)
    return _repeated([str(ipaddress.IPv4Address(bytes(u))) for u in uniq], inverse)


def _numbers(values, kind: str, valid=None):
    """An Arrow array of a numpy column (`kind`: an Arrow type name); `valid` (bool per
    row) marks the others null."""
    import numpy as np
    import pyarrow as pa

    arrow_type = getattr(pa, kind)()
    values = np.ascontiguousarray(values, dtype=arrow_type.to_pandas_dtype())
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(arrow_type, len(values), [bitmap, pa.py_buffer(values)])


def _chunk(data: bytes, interface: str, same_clock: bool) -> dict:
    """The Arrow columns of whole raw records."""
    import numpy as np

    rec = np.frombuffer(data, dtype=np.dtype(DTYPE))
    kinds = {name: kind for name, kind, _ in COLUMNS}
    cols = {name: _numbers(rec[name], kinds[name]) for name in (
        "sport", "dport", "frame_len", "seq", "run_id", "send_ns", "arrival_ns", "cpu")}
    cols["saddr"] = _addresses(rec["saddr"])
    cols["daddr"] = _addresses(rec["daddr"])
    if same_clock:
        lat = rec["arrival_ns"].astype(np.int64) - rec["send_ns"].astype(np.int64)
        cols["latency_ns"] = _numbers(lat, "int64", valid=rec["send_ns"] != 0)
    else:
        cols["latency_ns"] = _numbers(np.zeros(len(rec), dtype=np.int64), "int64",
                                      valid=np.zeros(len(rec), dtype=bool))
    cols["interface"] = _repeated([interface], np.zeros(len(rec), dtype=np.int32))
    return cols


# Send gaps: the latest SEND_GAP_WINDOW send times of a run wait, sorted, before their gaps
# are taken (the agent's arrival gaps' rule, xdplab.agent.features.GAP_WINDOW).
SEND_GAP_WINDOW = 4096


class SendGaps:
    """The gaps between consecutive send times (send_ns) of each run id, i.e. of one source's
    senders together on one clock, in send order, into one log-linear histogram (the agent's,
    xdplab.agent.hist: 3 significant digits), computed off the DUT from the feature records
    as write_parquet reads them, chunk by chunk.  The records come in the order the DUT's
    consumer read them, a little out of send order: each run's latest SEND_GAP_WINDOW send
    times wait, sorted, before their gaps are taken; a time read after that many later ones
    is counted in `late`, and the gap that spans it is taken as one.  Records without a send
    time (0: trafgen writes none) are left out.  Memory: the histogram and the windows."""

    def __init__(self):
        import numpy as np

        from .agent.hist import NBUCKETS, Histogram
        self.hist = Histogram()
        self._counts = np.frombuffer(self.hist.counts, dtype=np.uint64)   # its array, in place
        self._nbuckets = NBUCKETS
        self.pending, self.last, self.late = {}, {}, 0

    def add(self, run_ids, send_ns) -> None:
        import numpy as np
        keep = send_ns != 0
        run_ids, send_ns = run_ids[keep], send_ns[keep]
        for r in np.unique(run_ids):
            r = int(r)
            times = send_ns[run_ids == r]
            p = self.pending.get(r)
            self.pending[r] = times if p is None else np.concatenate([p, times])
            if len(self.pending[r]) >= 2 * SEND_GAP_WINDOW:
                self._take(r, len(self.pending[r]) - SEND_GAP_WINDOW)

    def _take(self, r: int, n=None) -> None:
        """The gaps of run r's n earliest pending times (all of them: n None)."""
        import numpy as np
        p = np.sort(self.pending[r], kind="stable")
        last = self.last.get(r)
        late = 0 if last is None else int(np.searchsorted(p, last, side="left"))
        self.late += late
        end = len(p) if n is None else max(n, late)
        take, self.pending[r] = p[late:end], p[end:]
        if len(take) == 0:
            return
        if last is not None:
            take = np.concatenate([np.array([last], dtype=p.dtype), take])
        self._record(np.diff(take).astype(np.int64))
        self.last[r] = int(take[-1])

    def _record(self, gaps) -> None:
        """Into the histogram as Histogram.record_many would, in numpy (gaps below 2^53 ns,
        where float64 holds them exactly)."""
        import numpy as np

        from .agent.hist import EXACT_BELOW, SUB_BITS
        if len(gaps) == 0:
            return
        idx = gaps.copy()
        big = gaps >= EXACT_BELOW
        if big.any():
            bits = np.frexp(gaps[big].astype(np.float64))[1].astype(np.int64)   # bit_length
            shift = bits - SUB_BITS - 1
            idx[big] = (shift << SUB_BITS) + (gaps[big] >> shift)
        self._counts += np.bincount(idx, minlength=self._nbuckets).astype(np.uint64)
        h = self.hist
        h.count += len(gaps)
        h.sum += int(gaps.sum())
        lo, hi = int(gaps.min()), int(gaps.max())
        h.min = lo if h.min is None else min(h.min, lo)
        h.max = hi if h.max is None else max(h.max, hi)

    def summary(self) -> dict:
        """{"count", "p1", "p50", "p99", "min", "max", "mean", "late", "method", "precision",
        "histogram"}: as the agent's gap_ns block."""
        from .agent.hist import DESCRIPTION
        for r in list(self.pending):
            self._take(r)
        out = self.hist.summary(percentiles=(1, 50, 99))
        out["late"] = self.late
        out["method"] = ("send_ns difference of consecutive feature records of each run id (one "
                         "source: its senders' packets together, one clock) in send order, every "
                         "run id's gaps in one histogram (sorted over the latest %d read; a record "
                         "read after that many later-sent ones is counted in late, and the gap "
                         "that spans it is taken as one); records without a send time left out; "
                         "computed on the controller from the trial's feature records; "
                         % SEND_GAP_WINDOW + DESCRIPTION)
        return out


def write_parquet(raw_files: list[tuple[str, Path]], out: Path, same_clock: bool,
                  send_gaps: SendGaps | None = None) -> int:
    """Convert raw record files [(interface, path)] into one Parquet file; return its rows.
    The file appears under its name only when whole.  send_gaps, when given, is fed every
    record's run id and send time on the way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema()
    tmp = out.with_name(f".{out.name}.tmp")
    rows = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for interface, path in raw_files:
            with open(path, "rb") as f:
                while True:
                    data = f.read(RECORD_SIZE * CHUNK_RECORDS)
                    if not data:
                        break
                    if len(data) % RECORD_SIZE:
                        raise ValueError(f"{path}: {len(data) % RECORD_SIZE} bytes beyond whole "
                                         f"{RECORD_SIZE}-byte records: the file is truncated")
                    cols = _chunk(data, interface, same_clock)
                    if send_gaps is not None:
                        send_gaps.add(cols["run_id"].to_numpy(), cols["send_ns"].to_numpy())
                    table = pa.Table.from_arrays([cols[n] for n in schema.names], schema=schema)
                    writer.write_table(table)
                    rows += table.num_rows
        if rows == 0:
            writer.write_table(schema.empty_table())
    tmp.replace(out)
    return rows
