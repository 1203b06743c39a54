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


def write_parquet(raw_files: list[tuple[str, Path]], out: Path, same_clock: bool) -> int:
    """Convert raw record files [(interface, path)] into one Parquet file; return its rows.
    The file appears under its name only when whole."""
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
                    table = pa.Table.from_arrays([cols[n] for n in schema.names], schema=schema)
                    writer.write_table(table)
                    rows += table.num_rows
        if rows == 0:
            writer.write_table(schema.empty_table())
    tmp.replace(out)
    return rows
