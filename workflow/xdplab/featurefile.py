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


def _addresses(raw):
    """Dotted addresses of a column of 4-byte network-order values (few distinct ones)."""
    import numpy as np

    uniq, inverse = np.unique(raw, return_inverse=True)
    names = np.array([str(ipaddress.IPv4Address(bytes(u))) for u in uniq], dtype=object)
    return names[inverse]


def _chunk(data: bytes, interface: str, same_clock: bool) -> dict:
    import numpy as np

    rec = np.frombuffer(data, dtype=np.dtype(DTYPE))
    cols = {name: rec[name] for name in ("sport", "dport", "frame_len", "seq", "run_id", "send_ns",
                                         "arrival_ns", "cpu")}
    cols["saddr"] = _addresses(rec["saddr"])
    cols["daddr"] = _addresses(rec["daddr"])
    if same_clock:
        lat = rec["arrival_ns"].astype(np.int64) - rec["send_ns"].astype(np.int64)
        cols["latency_ns"] = np.ma.masked_array(lat, mask=rec["send_ns"] == 0)
    else:
        cols["latency_ns"] = np.ma.masked_all(len(rec), dtype=np.int64)
    cols["interface"] = np.full(len(rec), interface, dtype=object)
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
                    table = pa.Table.from_arrays(
                        [pa.array(cols[n], type=schema.field(n).type) for n in schema.names], schema=schema)
                    writer.write_table(table)
                    rows += table.num_rows
        if rows == 0:
            writer.write_table(pa.Table.from_pydict({n: [] for n, _, _ in COLUMNS}, schema=schema))
    tmp.replace(out)
    return rows
