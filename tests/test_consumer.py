"""The agent's ring-buffer consumer without BPF: batches of records as the collector
sends them (bpf/xdplab.h: up to XDPLAB_BATCH records back to back), warm-up run ids,
the features file, the bitmaps' fast path and the fixed-size histograms."""

import hashlib
import random
import struct
import tracemalloc
from pathlib import Path

import pytest

from xdplab.agent import bpfsrc, features, hist

REPO = Path(__file__).resolve().parents[1]
SOURCES = bpfsrc.Sources((REPO / "bpf" / "collector.bpf.c").read_bytes(),
                         (REPO / "bpf" / "xdplab.h").read_bytes())
REC = SOURCES.feature_struct()
FMT = "=QQIIIHHHHI"                 # struct xdplab_feature, as the kernel writes it


def rec(arrival, send, seq, run_id, cpu=0, saddr=0x0100000A, daddr=0x0200000A):
    return struct.pack(FMT, arrival, send, saddr, daddr, seq, 40000, 12345, 60, run_id, cpu)


def test_layout_matches_header():
    assert struct.calcsize(FMT) == SOURCES.record_size == 40
    assert SOURCES.batch >= 1 and SOURCES.batch & (SOURCES.batch - 1) == 0
    assert features._layout(REC)["arrival_ns"] == ("Q", 5, 0)
    assert features._layout(REC)["run_id"] == ("H", 20, 17)


def naive(records, run_id, measured):
    """What the consumer must find, computed the plain way."""
    lat, gaps, prev, seen, dups = [], [], None, set(), 0
    for a, s, q, r in records:
        if not run_id <= r < run_id + measured:
            continue
        lat.append(a - s)
        if prev is not None:
            gaps.append(a - prev)
        prev = a
        if (r, q) in seen:
            dups += 1
        seen.add((r, q))
    return lat, gaps, dups


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_batches_decode_like_single_records(batch):
    rng = random.Random(batch)
    recs, t = [], 10 ** 12
    for k in range(3000):
        t += rng.randrange(1, 30000)
        seq = k if rng.random() > 0.02 else rng.randrange(k + 1)     # some duplicates
        recs.append((t, t - rng.randrange(1000, 10 ** 6), seq, 7 + (k // 500) % 2))
    f = features.Features(7, 2, 4000, REC)
    one = features.Features(7, 2, 4000, REC)
    raw = [rec(*r) for r in recs]
    for i in range(0, len(raw), batch):
        f.add_batch(b"".join(raw[i:i + batch]))
    for r in raw:
        one.add_batch(r)
    a, b = f.summary(), one.summary()
    assert a == b
    lat, gaps, dups = naive(recs, 7, 2)
    assert a["received"] == 3000 and a["duplicates"] == dups
    assert a["unique_seqs"] == 3000 - dups
    assert a["latency_ns"]["count"] == len(lat) and a["latency_ns"]["min"] == min(lat)
    assert a["latency_ns"]["max"] == max(lat) and a["latency_ns"]["mean"] == round(sum(lat) / len(lat), 1)
    assert a["gap_ns"]["count"] == len(gaps)
    assert a["first_arrival_ns"] == recs[0][0] and a["last_arrival_ns"] == recs[-1][0]


def test_consecutive_seqs_fast_path_finds_duplicates_across_batches():
    f = features.Features(1, 1, 1000, REC)
    f.add_batch(b"".join(rec(100 + s, 50, s, 1) for s in range(0, 64)))
    f.add_batch(b"".join(rec(200 + s, 50, s, 1) for s in range(60, 124)))     # 4 seen again
    f.add_batch(b"".join(rec(300 + s, 50, s, 1) for s in range(990, 1010)))  # past the bitmap
    s = f.summary()
    bits = f.bitmap_bits
    assert s["received"] == 148 and s["duplicates"] == 4
    assert s["seq_beyond_bitmap"] == 1010 - bits
    assert s["unique_seqs"] == 124 + (bits - 990)


def test_warmup_run_ids_are_counted_only(tmp_path):
    path = tmp_path / "features-xl-dut0.bin"
    f = features.Features(10, 4, 100, REC, measured_run_ids=2, features_path=str(path))
    batch = []
    for k in range(40):   # warm-up of both sources (run ids 12, 13), then measured (10, 11)
        batch.append(rec(1000 + k, 900, k, 12 + k % 2, cpu=1))
    for k in range(40):
        batch.append(rec(5000 + k, 4000, k // 2, 10 + k % 2, cpu=1))
    f.add_batch(b"".join(batch[:50]))
    f.add_batch(b"".join(batch[50:]))
    assert f.measured_received == 40 and f.warmup_records == 40 and f.records_read == 80
    s = f.summary()
    assert s["received"] == s["for_run"] == 40 and s["warmup_records"] == 40
    assert s["by_run"]["12"] == {"received": 20, "warmup": True}
    assert s["by_run"]["10"] == {"received": 20, "unique_seqs": 20, "duplicates": 0}
    assert s["latency_ns"]["count"] == 40 and s["latency_ns"]["min"] == 1000
    assert s["gap_ns"]["count"] == 39                  # measured records only
    assert s["first_arrival_ns"] == 5000 and s["last_arrival_ns"] == 5039
    assert len(f.bitmaps) == 2
    data = path.read_bytes()
    assert data == b"".join(batch[40:])
    assert s["features_file"] == {"records": 40, "bytes": 1600, "record_size": 40,
                                  "sha256": hashlib.sha256(data).hexdigest(), "error": None}


def test_features_file_is_written_in_chunks(tmp_path):
    path = tmp_path / "f.bin"
    f = features.Features(1, 1, 100000, REC, features_path=str(path))
    n, h = 0, hashlib.sha256()
    for b in range(1000):          # 64,000 records, 2.56 MB: more than two chunks
        data = b"".join(rec(10 ** 9 + n + k, 10 ** 9, n + k, 1) for k in range(64))
        n += 64
        h.update(data)
        f.add_batch(data)
        assert len(f._buf) < features.FILE_CHUNK_BYTES    # never more than a chunk held
    assert path.stat().st_size > 0                        # written while records came
    s = f.summary()
    assert s["features_file"]["records"] == n and s["features_file"]["sha256"] == h.hexdigest()
    assert path.stat().st_size == n * 40
    f.release()                                           # idempotent close


def test_on_record_rejects_partial_records():
    import ctypes as ct
    f = features.Features(1, 1, 10, REC)
    data = rec(5, 1, 0, 1) + b"\0" * 8
    buf = ct.create_string_buffer(data, len(data))
    f.on_record(ct.addressof(buf), len(data))
    assert f.callback_errors == 1 and f.records_read == 0
    f.on_record(ct.addressof(buf), 40)
    assert f.callback_errors == 1 and f.measured_received == 1


def test_memory_flat_per_record():
    """200k more records (in batches) leave the consumer's memory as it was."""
    f = features.Features(5, 1, 400000, REC)
    rng = random.Random(5)
    t = 10 ** 12

    def feed(start):
        nonlocal t
        for b in range(start, start + 200000, 64):
            out = []
            for s in range(b, b + 64):
                t += rng.randrange(1, 50000)
                out.append(rec(t, t - rng.randrange(1000, 10 ** 8), s, 5, cpu=s % 2))
            f.add_batch(b"".join(out))
    feed(0)
    tracemalloc.start()
    try:
        feed(200000)
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.measured_received == 400000 and f.summary()["duplicates"] == 0
    # bounded: the gaps' arrival-order window holds at most 2 * GAP_WINDOW times (~40 B each)
    assert grown < 64 * 1024 + 2 * features.GAP_WINDOW * 40, grown


def _dict_percentile(values, pct):
    """The former dict-based histogram's rule: nearest rank, bucket's highest value."""
    import math
    from fractions import Fraction
    idx = sorted(hist.bucket_index(v) for v in values)
    rank = max(1, math.ceil(Fraction(str(pct)) * len(values) / 100))
    return min(hist.bucket_bounds(idx[rank - 1])[1], max(values))


def test_histogram_array_matches_dict_rule():
    rng = random.Random(9)
    values = [int(rng.lognormvariate(10, 2)) for _ in range(20000)] + [0, 1, 2047, 2048, hist.MAX_VALUE]
    h = hist.Histogram()
    h.record_many(values[:7000])
    for v in values[7000:]:
        h.record(v)
    h.record_many([-1, hist.MAX_VALUE + 1])
    assert h.out_of_range == 2 and h.count == len(values)
    for p in (50, 90, 99, 99.9, 100):
        assert h.percentile(p) == _dict_percentile(values, p)
    b = h.buckets()
    assert sum(x[2] for x in b) == len(values) and b == sorted(b)
    assert len(h.counts) == hist.NBUCKETS == hist.bucket_index(hist.MAX_VALUE) + 1


def _gap_stream(n, cpus, seed):
    """n arrivals 1 us apart, spread over `cpus` CPUs at random, each CPU's records handed
    over in batches of 64 (its last batch partly filled, handed over at the end), as the
    collector stages them: each CPU's records in order, the CPUs' batches interleaved."""
    rng = random.Random(seed)
    staged = {c: [] for c in range(cpus)}
    batches = []
    for k in range(n):
        c = rng.randrange(cpus)
        staged[c].append(10 ** 9 + 1000 * k)
        if len(staged[c]) == 64:
            batches.append(staged[c])
            staged[c] = []
    batches += [b for b in staged.values() if b]   # drained at disarm
    return batches


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_gaps_are_taken_in_arrival_order_across_cpus(cpus):
    f = features.Features(1, 1, 100000, REC)
    n = 20000
    for b in _gap_stream(n, cpus, cpus):
        f.add_batch(b"".join(rec(a, a - 500, k, 1) for k, a in enumerate(b)))
    g = f.summary()["gap_ns"]
    # every gap is 1 us: read order would give negative and long ones across CPUs
    assert g["count"] == n - 1 and g["late"] == 0
    assert g["min"] == g["max"] == 1000


def test_a_record_read_after_the_window_is_late_and_not_a_gap():
    f = features.Features(1, 1, 100000, REC)
    w = features.GAP_WINDOW
    early = 10 ** 9 + 500                  # arrived second, read after 2 * w + 64 later ones
    f.add_batch(rec(10 ** 9, 0, 0, 1))
    for i in range(0, 2 * w + 64, 64):
        f.add_batch(b"".join(rec(10 ** 9 + 1000 * (1 + i + k), 0, 1 + i + k, 1) for k in range(64)))
    f.add_batch(rec(early, 0, 99999, 1))
    g = f.summary()["gap_ns"]
    assert g["late"] == 1 and g["count"] == 2 * w + 64
    assert g["min"] == g["max"] == 1000
