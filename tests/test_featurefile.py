"""features.parquet from the agent's raw records (workflow/xdplab/featurefile.py): every
column as the kernel wrote it, latency null where it cannot be known, chunks, a truncated
file refused, and no pandas import on the way (it costs each trial ~0.2 s)."""

import ipaddress
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab import featurefile  # noqa: E402

SRC, DST = "10.201.0.1", "10.201.0.2"


def record(seq, send_ns, arrival_ns, src=SRC, run_id=7, cpu=1):
    return featurefile.RECORD.pack(arrival_ns, send_ns, ipaddress.IPv4Address(src).packed,
                                   ipaddress.IPv4Address(DST).packed, seq, 40000, 12345, 60, run_id, cpu)


def write_raw(path, records):
    path.write_bytes(b"".join(records))
    return path


def test_columns_are_the_records_values(tmp_path):
    raw = write_raw(tmp_path / "a.raw", [record(0, 1000, 1500), record(1, 0, 2600, src="10.0.0.9"),
                                         record(2, 3000, 3100, cpu=0)])
    out = tmp_path / "features.parquet"
    assert featurefile.write_parquet([("xl-dut0", raw)], out, same_clock=True) == 3
    t = pq.read_table(out)
    assert t.schema == featurefile._schema()
    rows = t.to_pylist()
    assert [r["seq"] for r in rows] == [0, 1, 2]
    assert [r["saddr"] for r in rows] == [SRC, "10.0.0.9", SRC]
    assert {r["daddr"] for r in rows} == {DST}
    assert {(r["sport"], r["dport"], r["frame_len"], r["run_id"]) for r in rows} == {(40000, 12345, 60, 7)}
    assert [r["cpu"] for r in rows] == [1, 1, 0]
    # a send time of 0 (trafgen backend) has no latency
    assert [r["latency_ns"] for r in rows] == [500, None, 100]
    assert {r["interface"] for r in rows} == {"xl-dut0"}


def test_without_a_shared_clock_every_latency_is_null(tmp_path):
    raw = write_raw(tmp_path / "a.raw", [record(0, 1000, 1500)])
    out = tmp_path / "f.parquet"
    featurefile.write_parquet([("eth0", raw)], out, same_clock=False)
    assert pq.read_table(out).column("latency_ns").null_count == 1


def test_several_interfaces_and_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(featurefile, "CHUNK_RECORDS", 3)
    a = write_raw(tmp_path / "a.raw", [record(i, 10 + i, 20 + i) for i in range(7)])
    b = write_raw(tmp_path / "b.raw", [record(i, 10 + i, 20 + i, run_id=8) for i in range(2)])
    out = tmp_path / "f.parquet"
    assert featurefile.write_parquet([("if0", a), ("if1", b)], out, same_clock=True) == 9
    t = pq.read_table(out).to_pylist()
    assert [r["interface"] for r in t] == ["if0"] * 7 + ["if1"] * 2
    assert [r["seq"] for r in t] == list(range(7)) + [0, 1]
    assert all(r["latency_ns"] == 10 for r in t)


def test_no_records_still_write_the_schema(tmp_path):
    raw = write_raw(tmp_path / "a.raw", [])
    out = tmp_path / "f.parquet"
    assert featurefile.write_parquet([("if0", raw)], out, same_clock=True) == 0
    t = pq.read_table(out)
    assert t.num_rows == 0 and t.schema == featurefile._schema()


def test_a_truncated_file_is_refused_and_nothing_is_left(tmp_path):
    raw = tmp_path / "a.raw"
    raw.write_bytes(record(0, 1, 2) + b"\x00" * 7)
    out = tmp_path / "f.parquet"
    with pytest.raises(ValueError, match="truncated"):
        featurefile.write_parquet([("if0", raw)], out, same_clock=True)
    assert not out.exists()


def test_the_conversion_does_not_import_pandas(tmp_path):
    raw = write_raw(tmp_path / "a.raw", [record(i, 1, 2) for i in range(5)])
    code = ("import sys; from pathlib import Path; from xdplab import featurefile; "
            f"featurefile.write_parquet([('if0', Path({str(raw)!r}))], Path({str(tmp_path / 'f.parquet')!r}), True); "
            "print('pandas' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO / "workflow")}, check=True)
    assert r.stdout.strip() == "False"


def test_send_gaps_are_each_sources_in_send_order_as_the_agents_histogram_would_count(tmp_path, monkeypatch):
    """Two senders of one source interleave their slots 10 us apart; the records come in
    arrival order, a little out of send order, and across chunks; a second source (another
    run id, its own clock) keeps its own stream; trafgen's records (send_ns 0) are left out.
    The gaps are those of the send times sorted per run id, counted in the agent's
    log-linear histogram."""
    import random

    from xdplab.agent.hist import Histogram

    monkeypatch.setattr(featurefile, "CHUNK_RECORDS", 1000)
    rng = random.Random(3)
    recs, expected = [], Histogram()
    sends = {7: [], 8: []}
    for k in range(20000):
        jitter = rng.randrange(0, 400) if k % 2 else 0          # the second sender is a little late
        s7 = 10 ** 9 + 10000 * k + jitter
        sends[7].append(s7)
        recs.append((s7 + rng.randrange(2000, 9000), record(k, s7, 0, run_id=7)))
        s8 = 5 * 10 ** 12 + 30000 * k
        sends[8].append(s8)
        recs.append((s8 - 5 * 10 ** 12 + 10 ** 9 + 3000, record(k, s8, 0, run_id=8)))
    recs.append((10 ** 9 + 1, record(99, 0, 0, run_id=9)))      # no send time
    recs.sort(key=lambda r: r[0])                                # arrival order
    for r in (7, 8):
        t = sorted(sends[r])
        expected.record_many([b - a for a, b in zip(t, t[1:])])
    gaps = featurefile.SendGaps()
    raw = write_raw(tmp_path / "a.raw", [r for _, r in recs])
    assert featurefile.write_parquet([("xl-dut0", raw)], tmp_path / "f.parquet", True, send_gaps=gaps) == 40001
    s = gaps.summary()
    assert s["late"] == 0 and s["count"] == 2 * 19999 == expected.count
    assert gaps.hist.counts == expected.counts
    assert (s["min"], s["max"], s["p50"], s["p99"]) == (expected.min, expected.max,
                                                        expected.percentile(50), expected.percentile(99))
