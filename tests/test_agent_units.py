"""Unit tests of the DUT agent's pure parts: no root, no bcc, no network.

Validation (api), the histogram (hist), parsing of bpf/xdplab.h (bpfsrc),
result arithmetic from counter snapshots (session), the feature accumulator's
bounded memory (features), Prometheus text (metrics), and the bookkeeping of
captures (service)."""

import ctypes as ct
import json
import math
import os
import random
import re
import sys
import threading
import time
import tracemalloc
import types
from array import array
from email.message import Message
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xdplab.agent import (TOKEN_HEADER, api, bpfsrc, features, hist, metrics, results, service, session,
                          sysstats)
from xdplab.agent.capture import PcapCounter, capture_filter
from xdplab.agent.server import Handler

REPO = Path(__file__).resolve().parents[1]
HEADER = (REPO / "bpf" / "xdplab.h").read_text()
SOURCE = (REPO / "bpf" / "collector.bpf.c").read_text()


# --- api ------------------------------------------------------------------------------

def good(**over):
    body = {"trial": "t", "run_id": 10, "interfaces": ["eth1"], "xdp_mode": "native",
            "port": 12345, "expected_tag": None, "snaplen": 64, "deadline_s": 30,
            "expected_packets": 100}
    body.update(over)
    return body


def test_validate_arm_defaults_and_normalizes():
    req = api.validate_arm(good(), ["eth1", "eth2"])
    assert req["run_ids"] == 1 and req["collector"] == "features"
    assert req["ringbuf_pages"] is None and req["deadline_s"] == 30.0
    req = api.validate_arm(good(interfaces=["eth2", "eth1"], run_ids=16, collector="off"),
                           ["eth1", "eth2"])
    assert req["interfaces"] == ["eth2", "eth1"] and req["run_ids"] == 16


@pytest.mark.parametrize("field,value,status", [
    ("run_id", 0, 400), ("run_id", 65536, 400), ("run_ids", 17, 400), ("run_ids", True, 400),
    ("interfaces", ["eth9"], 403), ("interfaces", "eth1", 400), ("interfaces", [], 400),
    ("deadline_s", math.inf, 400), ("deadline_s", math.nan, 400),
    ("expected_packets", 2 ** 32 + 1, 400), ("snaplen", 10, 400), ("port", -1, 400),
    ("collector", None, 400), ("ringbuf_pages", 5, 400), ("extra", 1, 400),
])
def test_validate_arm_refuses_naming_the_field(field, value, status):
    with pytest.raises(api.ApiError) as e:
        api.validate_arm(good(**{field: value}), ["eth1"])
    assert e.value.status == status
    assert e.value.message.startswith(field + ":")


def test_403_names_the_allowed_interfaces():
    with pytest.raises(api.ApiError) as e:
        api.validate_arm(good(interfaces=["eth1", "lo"]), ["eth1", "eth2"])
    assert e.value.status == 403 and "eth1, eth2" in e.value.message


def test_run_id_range_must_fit():
    with pytest.raises(api.ApiError) as e:
        api.validate_arm(good(run_id=65530, run_ids=7), ["eth1"])
    assert e.value.message.startswith("run_ids:")
    assert api.validate_arm(good(run_id=65530, run_ids=6), ["eth1"])["run_ids"] == 6


def test_ringbuf_pages_only_with_features():
    with pytest.raises(api.ApiError) as e:
        api.validate_arm(good(collector="counters", ringbuf_pages=4), ["eth1"])
    assert e.value.message.startswith("ringbuf_pages:")


def test_validate_build():
    assert api.validate_build({"port": 1}) == {"port": 1, "collector": "features",
                                               "ringbuf_pages": None}
    for body, field in (({}, "port"), ({"port": 1, "collector": "off"}, "collector"),
                        ({"port": 1, "cflags": ["-O0"]}, "cflags"), ([], "body")):
        with pytest.raises(api.ApiError) as e:
            api.validate_build(body)
        assert e.value.message.startswith(field + ":")


def test_query_interface():
    assert api.query_interface("", ["a"]) == "a"
    assert api.query_interface("interface=b", ["a", "b"]) == "b"
    with pytest.raises(api.ApiError) as e:
        api.query_interface("", ["a", "b"])
    assert e.value.status == 400
    with pytest.raises(api.ApiError) as e:
        api.query_interface("interface=../x", ["a"])
    assert e.value.status == 404


# --- hist -------------------------------------------------------------------------------

def test_buckets_are_contiguous_and_three_digits_precise():
    prev_hi = -1
    for i in range(hist.EXACT_BELOW + 40 * hist.SUB):
        lo, hi = hist.bucket_bounds(i)
        assert lo == prev_hi + 1 and hi >= lo
        assert (hi - lo) <= lo / 1000 or lo < hist.EXACT_BELOW
        prev_hi = hi
    rng = random.Random(1)
    for _ in range(20000):
        v = rng.randrange(0, 1 << rng.randrange(1, 63))
        lo, hi = hist.bucket_bounds(hist.bucket_index(v))
        assert lo <= v <= hi


def test_percentiles_match_nearest_rank_within_precision():
    rng = random.Random(2)
    values = [int(rng.lognormvariate(11, 1.5)) for _ in range(20000)]
    h = hist.Histogram()
    for v in values:
        h.record(v)
    s = sorted(values)
    for p in (50, 90, 99, 99.9, 100):
        exact = s[max(1, math.ceil(p * len(s) / 100)) - 1]
        got = h.percentile(p)
        assert exact <= got <= exact * (1 + 1 / 1000) + 1, (p, exact, got)
    summ = h.summary()
    assert summ["count"] == len(values) and summ["min"] == s[0] and summ["max"] == s[-1]
    assert summ["mean"] == pytest.approx(sum(values) / len(values), abs=0.1)
    assert sum(b[2] for b in summ["histogram"]["buckets"]) == len(values)
    json.dumps(summ)


def test_histogram_small_exact_and_out_of_range():
    h = hist.Histogram()
    for v in (1, 2, 3, 4, -5):
        h.record(v)
    assert h.percentile(50) == 2 and h.percentile(100) == 4 and h.out_of_range == 1
    assert hist.Histogram().summary()["p50"] is None


# --- bpfsrc ----------------------------------------------------------------------------------

def test_header_parsing():
    counters = bpfsrc.parse_counter_enum(HEADER)
    assert list(counters) == ["seen", "ipv4_udp", "matched", "features", "ringbuf_full",
                              "parse_errors", "foreign_arp", "foreign_port", "foreign_other",
                              "chain_missed"]
    assert sorted(counters.values()) == list(range(len(counters)))
    assert set(results.XDP_FIELDS) == set(counters)
    assert bpfsrc.parse_define(HEADER, "XDPLAB_MAX_RUN_IDS") == api.RUN_IDS_MAX
    assert bpfsrc.parse_define(HEADER, "XDPLAB_MAGIC") == 0x58444C42
    fields = dict(bpfsrc.parse_feature_fields(HEADER))
    assert fields["arrival_ns"] == "__u64" and fields["run_id"] == "__u16"


def test_sources_inline_the_header_and_hash_what_was_read():
    s = bpfsrc.Sources(SOURCE.encode(), HEADER.encode())
    assert '#include "xdplab.h"' not in s.text and "enum xdplab_counter" in s.text
    assert ct.sizeof(s.feature_struct()) == 40
    with pytest.raises(RuntimeError):
        bpfsrc.inline_header("int x;", HEADER)


def test_header_magic_is_checked_against_the_wire_definition():
    service.check_magic(bpfsrc.Sources(SOURCE.encode(), HEADER.encode()))
    other = HEADER.replace("XDPLAB_MAGIC 0x58444c42", "XDPLAB_MAGIC 0x58444c43")
    assert other != HEADER
    with pytest.raises(ValueError, match="XDPLAB_MAGIC 0x58444c43 in xdplab.h"):
        service.check_magic(bpfsrc.Sources(SOURCE.encode(), other.encode()))


def test_parse_counter_enum_explicit_values():
    text = "enum xdplab_counter { XDPLAB_A = 2, /* c */ XDPLAB_B, XDPLAB_NR_COUNTERS, };"
    assert bpfsrc.parse_counter_enum(text) == {"a": 2, "b": 3}


# --- session arithmetic ------------------------------------------------------------------------

def snap(**c):
    counters = {k: 0 for k in results.XDP_FIELDS}
    counters.update(c)
    return counters


def test_interface_result_from_snapshots():
    base = {"nic": {"rx_packets": 100, "rx_dropped": 1},
            "prog": {"counters": snap(seen=10, matched=5), "matched_by_run": [5, 0] + [0] * 14,
                     "run_time_ns": 1000, "run_cnt": 10}}
    end = {"nic": {"rx_packets": 190, "rx_dropped": 1},
           "prog": {"counters": snap(seen=100, matched=75, foreign_arp=5, foreign_port=10,
                                     foreign_other=4, parse_errors=1, features=70,
                                     ringbuf_full=0, ipv4_udp=85),
                    "matched_by_run": [50, 25] + [0] * 14, "run_time_ns": 10000, "run_cnt": 100}}
    link = {"xdp_mode_in_effect": "native", "prog_id": 1, "prog_tag": "ab", "link_id": 2}
    r = results.interface_result("features", 7, 2, link, base, end, {"received": 70}, {"captured": 70})
    assert r["nic"] == {"rx_packets": 90, "rx_dropped": 0}
    assert r["xdp"]["seen"] == 90 and r["xdp"]["matched"] == 70 and r["xdp"]["unaccounted"] == 0
    assert r["xdp"]["ns_per_pkt"] == 100.0 and r["xdp"]["run_cnt"] == 90
    assert r["matched_by_run"] == {"7": 45, "8": 25}
    assert r["prog_id"] == 1 and r["tcpdump"] == {"captured": 70}

    off = results.interface_result("off", 7, 1, link, {"nic": base["nic"], "prog": None},
                                   {"nic": end["nic"], "prog": None}, None, {})
    assert off["xdp"]["seen"] is None and off["matched_by_run"] is None
    assert off["features"]["received"] is None
    cnt = results.interface_result("counters", 7, 2, link, base, end, None, {})
    assert cnt["features"]["received"] == 0 and cnt["features"]["latency_ns"] is None


def test_first_last_arrival():
    assert results.first_last_arrival([None, {"first_arrival_ns": None,
                                              "last_arrival_ns": None}]) == (None, None)
    assert results.first_last_arrival([{"first_arrival_ns": 5, "last_arrival_ns": 9},
                                       {"first_arrival_ns": 3, "last_arrival_ns": 7}]) == (3, 9)


# --- features: bounded memory ------------------------------------------------------------------

REC = bpfsrc.Sources(SOURCE.encode(), HEADER.encode()).feature_struct()


def feed(f, n, start=0, rng=None):
    rng = rng or random.Random(3)
    r = REC()
    t = 10 ** 12
    for k in range(start, start + n):
        t += rng.randrange(1, 50000)
        r.arrival_ns, r.send_ns = t, t - rng.randrange(1000, 10 ** 7)
        r.seq, r.run_id, r.cpu = k % 200000, 5 + k % 2, k % 2
        f.add(r)


def test_features_counts():
    f = features.Features(5, 2, 10, REC)
    r = REC()
    for seq, run in ((0, 5), (1, 5), (0, 5), (0, 6), (99, 6), (0, 9)):
        r.arrival_ns, r.send_ns, r.seq, r.run_id = 1000 + seq, 900, seq, run
        f.add(r)
    s = f.summary()
    assert s["received"] == 5 and s["for_run"] == 5 and s["other_run"] == 1
    assert s["warmup_records"] == 0 and f.records_read == 6
    assert s["by_run"]["5"] == {"received": 3, "unique_seqs": 2, "duplicates": 1}
    assert s["by_run"]["6"] == {"received": 2, "unique_seqs": 1, "duplicates": 0}
    assert s["seq_beyond_bitmap"] == 1     # seq 99 with expected_packets 10
    # gaps between measured records only, in arrival order: 1000 1000 1000 1001 1099
    assert s["latency_ns"]["count"] == 5 and s["gap_ns"]["count"] == 4 and s["gap_ns"]["late"] == 0
    assert s["gap_ns"]["min"] == 0 and s["gap_ns"]["max"] == 98
    json.dumps(s)


def test_features_memory_does_not_grow_with_packets():
    """200k more records of the same kind leave the consumer's state as it was:
    no per-packet list or array; histogram buckets are bounded by the value
    range, not by the count."""
    f = features.Features(5, 2, 200000, REC)
    rng = random.Random(4)
    feed(f, 200000, rng=rng)
    buckets = len(f.latency.nonzero()) + len(f.gap.nonzero())
    tracemalloc.start()
    try:
        feed(f, 200000, start=200000, rng=rng)
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.received == 400000
    new_buckets = len(f.latency.nonzero()) + len(f.gap.nonzero()) - buckets
    assert new_buckets > 0          # new buckets were touched, and cost nothing
    # The histograms are fixed arrays: nothing per record, nothing per new bucket; the gaps'
    # arrival-order window holds at most 2 * GAP_WINDOW times (~40 bytes each).
    assert grown < 16 * 1024 + 2 * features.GAP_WINDOW * 40, (grown, new_buckets)
    assert len(f._gap_pending) < 2 * features.GAP_WINDOW
    assert len(f.latency.counts) == len(f.gap.counts) == hist.NBUCKETS
    # the duplicate bitmaps: at most one page per run held (the others were filled and let go)
    assert sum(b.held_bytes() for b in f.bitmaps) <= 2 * features.PAGE_BITS // 8
    assert not any(isinstance(v, (list, bytearray)) and len(v) > 16
                   for k, v in vars(f).items() if k not in ("bitmaps", "_gap_pending"))


def test_checked_seqs_are_capped():
    f = features.Features(1, 16, 2 ** 32, REC)
    assert f.bitmap_bits * f.measured <= features.BITMAP_MAX_BYTES * 8


def test_a_seq_set_lets_go_of_whole_pages_and_still_counts_duplicates():
    s = features.SeqSet()
    P = features.PAGE_BITS
    assert s.add_run(0, P + 10) == 0                  # page 0 whole: let go
    assert s.held_bytes() == P // 8 and 0 in s.full
    assert s.add_run(5, 3) == 3                       # a duplicate in a page let go
    assert s.add_run(P + 5, 10) == 5                  # half of it seen already
    assert s.add_run(3 * P + 1, 1) == 0 and s.held_bytes() == 2 * P // 8   # a hole is held
    for k in range(P + 15, 2 * P, 4096):              # fill page 1 in pieces: let go
        s.add_run(k, min(4096, 2 * P - k))
    assert 1 in s.full and s.held_bytes() == P // 8


# --- capture helpers -----------------------------------------------------------------------------

def test_capture_filter_matches_magic_and_run_ids():
    f = capture_filter(12345, 0x58444C42, 100, 3)
    assert "udp dst port 12345" in f and "udp[8:4] = 0x58444c42" in f
    assert "udp[24:2] >= 100" in f and "udp[24:2] <= 102" in f


def test_pcap_counter_counts_complete_records(tmp_path):
    p = tmp_path / "x.pcap"
    head = bytes.fromhex("d4c3b2a1") + bytes(20)
    rec = lambda n: (bytes(8) + n.to_bytes(4, "little") + n.to_bytes(4, "little")  # noqa: E731
                     + bytes(n))
    p.write_bytes(head)
    c = PcapCounter(str(p))
    assert c.update() == 0
    p.write_bytes(head + rec(60) + rec(70) + rec(80)[:30])
    assert c.update() == 2
    p.write_bytes(head + rec(60) + rec(70) + rec(80))
    assert c.update() == 3


# --- metrics -----------------------------------------------------------------------------------

def test_metrics_text():
    state = {"instance": "abc", "started_monotonic_ns": 1, "sessions_armed_total": 3,
             "programs_loaded": [{"instances": 2}],
             "session": {"id": "s1", "trial": 'a"b', "state": "armed",
                         "interfaces": {"eth1": {"nic": {"rx_packets": 9},
                                                 "xdp": {k: 1 for k in metrics.XDP_HELP},
                                                 "records": 4}}}}
    text = metrics.render(state, "xdplab-agent/2")
    assert 'xdplab_xdp_matched_total{interface="eth1"} 1' in text
    assert 'xdplab_nic_rx_packets_total{interface="eth1"} 9' in text
    assert 'xdplab_session_info{session="s1",trial="a\\"b",state="armed"} 1' in text
    assert "xdplab_agent_sessions_armed_total 3" in text and "xdplab_session_armed 1" in text
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r'^[a-z_]+(\{.*\})? -?\d+(\.\d+)?$', line), line
    idle = metrics.render(dict(state, session=None), "x")
    assert "xdplab_session_armed 0" in idle and "xdplab_xdp_" not in idle
    assert "xdplab_session_info" not in idle
    check_exposition(text)
    check_exposition(idle)


def check_exposition(text):
    """Parsed as Prometheus parses a scrape: every family typed, no label that
    clashes with the target's own `instance`, no per-session label on a counter."""
    families = list(text_string_to_metric_families(text))
    assert families
    for f in families:
        assert f.type in ("counter", "gauge"), (f.name, f.type)
        for s in f.samples:
            assert "instance" not in s.labels, s
            if f.type == "counter":
                assert set(s.labels) <= {"interface"}, s
    return {f.name: f for f in families}


def test_metrics_parse_as_prometheus_does():
    state = {"instance": "abc", "started_monotonic_ns": 1, "sessions_armed_total": 1,
             "programs_loaded": [],
             "session": {"id": "s2", "trial": "pps~10/size~18", "state": "capture_stopped",
                         "interfaces": {n: {"nic": {"rx_packets": 5}, "records": None,
                                            "xdp": {k: 2 for k in metrics.XDP_HELP}}
                                        for n in ("eth1", "eth2")}}}
    fams = check_exposition(metrics.render(state, "a/2"))
    assert [s.labels for s in fams["xdplab_agent_info"].samples] == [
        {"agent": "a/2", "agent_instance": "abc"}]
    assert [s.labels for s in fams["xdplab_session_info"].samples] == [
        {"session": "s2", "trial": "pps~10/size~18", "state": "capture_stopped"}]
    assert fams["xdplab_xdp_matched"].type == "counter"
    assert {s.labels["interface"]: s.value for s in fams["xdplab_xdp_matched"].samples} == {
        "eth1": 2, "eth2": 2}
    assert "xdplab_features_received" not in fams     # collector off: no records counted


def test_token_in_either_header_compared_in_constant_time():
    def state(**headers):
        h = Handler.__new__(Handler)
        h.headers = Message()
        for k, v in headers.items():
            h.headers[k] = v
        return h._token_state(types.SimpleNamespace(token="t" * 16))
    assert state() is None
    assert state(**{TOKEN_HEADER: "t" * 16}) is True
    assert state(Authorization="Bearer " + "t" * 16) is True
    assert state(Authorization="bearer  " + "t" * 16) is True
    assert state(Authorization="Bearer wrong") is False
    assert state(Authorization="Basic " + "t" * 16) is False
    assert state(Authorization="Bearer") is False
    assert state(**{TOKEN_HEADER: "t" * 16, "Authorization": "Bearer wrong"}) is False


# --- service bookkeeping --------------------------------------------------------------------------

def test_forgotten_sessions_and_stale_files_lose_their_pcap(tmp_path):
    a = service.Agent.__new__(service.Agent)   # only the session bookkeeping, no BPF
    ids = ["s%03d" % i for i in range(service.MAX_KEPT_SESSIONS + 3)]
    a.sessions = {}

    def fake(sid, state):
        path = tmp_path / (sid + ".if0.pcap")
        path.write_bytes(b"pcap")
        fdir = tmp_path / ("20261126T120000-%08x" % len(a.sessions))
        fdir.mkdir()
        fpath = fdir / "features-eth1.bin"
        fpath.write_bytes(bytes(40))
        s = types.SimpleNamespace(id=sid, state=state, lock=threading.RLock(), result=None,
                                  features_dir=str(fdir),
                                  ifaces=[types.SimpleNamespace(name="eth1", pcap_path=str(path),
                                                                features_path=str(fpath))])
        s.remove_pcaps = lambda s=s: session.Session.remove_pcaps(s)
        s.drop_histograms = lambda s=s: session.Session.drop_histograms(s)
        return s

    for sid in ids + ["armed"]:
        a.sessions[sid] = fake(sid, "disarmed" if sid != "armed" else "armed")
    a._forget_old_sessions()
    assert sorted(a.sessions) == sorted(ids[3:] + ["armed"])
    kept = [sid + ".if0.pcap" for sid in ids[-service.MAX_KEPT_CAPTURES:]] + ["armed.if0.pcap"]
    kept_dirs = [Path(a.sessions[sid].features_dir).name
                 for sid in ids[-service.MAX_KEPT_CAPTURES:] + ["armed"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + kept_dirs)
    assert a.sessions[ids[3]].ifaces[0].pcap_path is None
    assert a.sessions[ids[3]].ifaces[0].features_path is None
    kept += [d + "/features-eth1.bin" for d in kept_dirs]

    # At start: only <session>[.ifN].pcap regular files go; nothing else is touched.
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link.pcap").symlink_to(tmp_path / "notes.txt")
    (tmp_path / "old-agent.pcap").write_bytes(b"pcap")
    removed = service.remove_stale_pcaps(str(tmp_path))
    assert sorted(r["file"] for r in removed) == sorted(kept + ["old-agent.pcap"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link.pcap", "notes.txt"]


def test_agent_package_imports_nothing_else_from_xdplab():
    # Beside itself, the agent uses the capture checker, which `make agent` ships in the pyz.
    for path in (REPO / "workflow" / "xdplab" / "agent").glob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"^\s*(from|import)\s+xdplab\b(?!\.agent)(.*)$", text, re.M):
            assert m.group(2).split("#")[0].strip() == "import pcapcheck", (path.name, m.group(0))
        assert not re.search(r"shell\s*=\s*True|os\.system|os\.popen", text), path.name


# --- where the bpf files come from ------------------------------------------------------------

def test_unzipped_package_reads_the_repositorys_bpf_files():
    s = bpfsrc.Sources.load()
    assert Path(s.source_origin) == REPO / "bpf" / "collector.bpf.c"
    assert s.source == (REPO / "bpf" / "collector.bpf.c").read_bytes()


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3")
def test_pyz_carries_the_bpf_files_and_runs_help_without_bcc():
    import subprocess
    r = subprocess.run(["make", "-s", "agent"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    pyz = REPO / "dist" / "xdplab-agent.pyz"
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); "
            "from xdplab.agent import bpfsrc; s = bpfsrc.Sources.load(); "
            "print(json.dumps([s.source_origin, s.source_sha256, s.header_sha256]))")
    r = subprocess.run(["/usr/bin/python3", "-S", "-c", code, str(pyz)], capture_output=True,
                       text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    origin, src_sha, hdr_sha = json.loads(r.stdout)
    assert origin.startswith("package:")
    import hashlib
    assert src_sha == hashlib.sha256((REPO / "bpf" / "collector.bpf.c").read_bytes()).hexdigest()
    assert hdr_sha == hashlib.sha256((REPO / "bpf" / "xdplab.h").read_bytes()).hexdigest()
    r = subprocess.run(["/usr/bin/python3", "-S", str(pyz), "--help"], capture_output=True,
                       text=True, cwd="/")
    assert r.returncode == 0 and "--interface" in r.stdout, r.stderr


def test_old_sessions_keep_their_figures_but_not_their_histograms():
    from xdplab.agent.session import Session

    hist = {"scheme": "log-linear", "buckets": [[1, 1, 5]] * 3000}
    result = {"interfaces": {"xl-dut0": {"features": {
        "latency_ns": {"count": 5, "p50": 1, "histogram": dict(hist)},
        "gap_ns": {"count": 4, "p50": 1, "histogram": dict(hist)}}}}}
    old = types.SimpleNamespace(lock=threading.RLock(), result=result)
    Session.drop_histograms(old)
    feats = result["interfaces"]["xl-dut0"]["features"]
    assert feats["latency_ns"]["p50"] == 1 and feats["latency_ns"]["count"] == 5
    assert "buckets" not in feats["latency_ns"]["histogram"] and "dropped" in feats["gap_ns"]["histogram"]
    Session.drop_histograms(types.SimpleNamespace(lock=threading.RLock(), result=None))  # nothing to drop


def test_a_new_session_finds_the_finished_ones_without_histograms():
    """What the agent holds during a trial does not depend on the trials before it: their
    histograms and time series go when the next session arms (their controllers read them
    at disarm); the armed session's stay."""
    from xdplab.agent.session import Session

    def sess(state):
        result = {"interfaces": {"xl-dut0": {
            "features": {"latency_ns": {"count": 5, "p50": 1, "histogram": {"buckets": [[1, 1, 5]]}}},
            "timeseries": {"columns": ["t_ns"], "rows": [[1]] * 100}}}}
        s = types.SimpleNamespace(state=state, lock=threading.RLock(), result=result)
        s.drop_histograms = lambda s=s: Session.drop_histograms(s)
        return s

    a = service.Agent.__new__(service.Agent)
    a.lock = threading.Lock()
    a.sessions = {"old": sess("disarmed"), "now": sess("armed")}
    a._drop_finished_histograms()
    old = a.sessions["old"].result["interfaces"]["xl-dut0"]
    now = a.sessions["now"].result["interfaces"]["xl-dut0"]
    assert "buckets" not in old["features"]["latency_ns"]["histogram"] and old["timeseries"]["rows"] is None
    assert old["features"]["latency_ns"]["p50"] == 1
    assert now["features"]["latency_ns"]["histogram"]["buckets"] and len(now["timeseries"]["rows"]) == 100


# --- arm: warm-up and features file fields -----------------------------------------------------

def test_validate_arm_measured_run_ids_and_keep_features():
    req = api.validate_arm(good(run_ids=4), ["eth1"])
    assert req["measured_run_ids"] == 4 and req["keep_features"] is False
    req = api.validate_arm(good(run_ids=4, measured_run_ids=2, keep_features=True), ["eth1"])
    assert req["measured_run_ids"] == 2 and req["keep_features"] is True
    for field, value in (("measured_run_ids", 0), ("measured_run_ids", 5),
                         ("measured_run_ids", True), ("keep_features", "true"),
                         ("keep_features", None)):
        with pytest.raises(api.ApiError) as e:
            api.validate_arm(good(run_ids=4, **{field: value}), ["eth1"])
        assert e.value.status == 400 and e.value.message.startswith(field + ":")


def test_features_get_warmup_and_file_arguments_only_when_not_default(tmp_path):
    req = api.validate_arm(good(run_ids=2), ["eth1"])
    s = session.Session("20261126T120000-0000abcd", req, "inst", str(tmp_path))
    assert s._features_kwargs(s.ifaces[0]) == {} and s.features_dir is None
    req = api.validate_arm(good(run_ids=2, measured_run_ids=1, keep_features=True), ["eth1"])
    s = session.Session("20261126T120000-0000abcd", req, "inst", str(tmp_path))
    kw = s._features_kwargs(s.ifaces[0])
    assert kw == {"measured_run_ids": 1, "features_path": str(
        tmp_path / "20261126T120000-0000abcd" / "features-eth1.bin")}
    req = api.validate_arm(good(keep_features=True, collector="counters"), ["eth1"])
    assert session.Session("x", req, "inst", str(tmp_path)).features_dir is None


# --- time series -------------------------------------------------------------------------------

from xdplab.agent import environment, timeseries   # noqa: E402


def test_series_rows_and_softirq_pct_over_each_rows_interval():
    s = timeseries.Series()
    s.append(1000, (0, 0, 0, 0, 0), 10, 100)
    s.append(2000, (5, 5, 4, None, 0), 15, 200)        # 5 of 100 jiffies: 5 %
    s.append(3000, (9, 9, 8, None, 1), 15, 200)        # no time passed in /proc/stat
    s.append(4000, (9, 9, 8, None, 1), 65, 300)        # 50 of 100: 50 %
    assert s.rows() == [[1000, 0, 0, 0, 0, 0, None], [2000, 5, 5, 4, None, 0, 5.0],
                        [3000, 9, 9, 8, None, 1, None], [4000, 9, 9, 8, None, 1, 50.0]]
    s.halve()       # rows 0 and 2 stay; the percentage now spans their longer interval
    assert s.rows() == [[1000, 0, 0, 0, 0, 0, None], [3000, 9, 9, 8, None, 1, 5.0]]


def test_measured_window_from_rows():
    rows = [[10, 0, 0, 0], [20, 0, 0, 0], [30, 3, 0, 3], [40, 5, 0, 5], [50, 5, 0, 5],
            [60, 6, 0, 5]]
    rows = [r + [None, None, None] for r in rows]
    assert timeseries.measured_window(rows, "xdp_matched_measured") == (30, 40)
    assert timeseries.measured_window(rows, "nic_rx_packets") == (30, 60)
    assert timeseries.measured_window(rows[:2], "nic_rx_packets") == (None, None)
    none_rows = [[10, 0, None, None, None, None, None], [20, 4, None, None, None, None, None]]
    assert timeseries.measured_window(none_rows, "xdp_matched_measured") == (None, None)


def test_session_measured_window_prefers_feature_records():
    rows = [[10, 0, 0, 0, 0, 0, None], [20, 2, 2, 2, 2, 0, 1.0]]
    feats = {"first_arrival_ns": 12, "last_arrival_ns": 18}
    assert results.measured_window("features", feats, rows) == ([12, 18], "feature records")
    w, how = results.measured_window("features", {"first_arrival_ns": None}, rows)
    assert w == [20, 20] and "xdp_matched_measured" in how
    w, how = results.measured_window("off", None, rows)
    assert w == [20, 20] and "nic_rx_packets" in how
    assert results.measured_window("counters", None, rows[:1])[0] is None


class FakeClock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        self.t += 10 ** 8
        return self.t


def test_sampler_rows_are_bounded_and_stop_at_the_deadline():
    clock, n = FakeClock(), [0]

    def counts():
        n[0] += 1
        return n[0], n[0], n[0], None, 0
    stat = lambda: (n[0], 10 * n[0])                                   # noqa: E731
    s = timeseries.Sampler("t", {"eth1": counts}, deadline_ns=10 ** 15, stat=stat,
                           interval=0.0005, max_rows=50, clock=clock)
    s.start()
    assert wait_until(lambda: n[0] > 150)
    s.stop(last_sample=True)
    r = s.result("eth1")
    rows = r["rows"]
    assert r["columns"] == timeseries.COLUMNS and 25 <= len(rows) <= 51
    assert r["interval_s"] > 0.0005 and r["max_rows"] == 50
    assert rows[-1][1] == n[0]                       # the last row: taken at stop
    assert all(b[0] > a[0] and b[1] > a[1] for a, b in zip(rows, rows[1:]))
    assert all(row[4] is None for row in rows)
    # A sampler whose deadline has passed stops by itself; stop() still adds the last row.
    clock2, m = FakeClock(), [0]
    s2 = timeseries.Sampler("u", {"eth1": lambda: (m[0], 0, 0, 0, 0)},
                            deadline_ns=3 * 10 ** 8 - timeseries.DEADLINE_GRACE_NS,
                            stat=lambda: (0, 1), interval=0.001, clock=clock2)
    s2.start()
    assert wait_until(lambda: not s2._thread.is_alive())
    before = len(s2.series["eth1"])
    m[0] = 7
    s2.stop(last_sample=True)
    assert len(s2.series["eth1"]) == before + 1 and s2.result("eth1")["rows"][-1][1] == 7


def test_sampler_survives_a_failing_source():
    def bad():
        raise OSError("interface gone")
    s = timeseries.Sampler("t", {"eth1": bad}, 10 ** 18, stat=lambda: (0, 1),
                           clock=FakeClock())
    s.sample()
    s.sample()
    assert s.errors == 2 and s.result("eth1")["rows"] == []


def wait_until(pred, timeout=10):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def test_series_memory_is_bounded():
    s = timeseries.Series()
    for k in range(timeseries.MAX_ROWS):
        s.append(k, (k, k, k, k, k), k, k)
    assert sum(a.itemsize * len(a) for a in s.cols) == 8 * 8 * timeseries.MAX_ROWS


def test_old_sessions_lose_their_time_series_rows():
    from xdplab.agent.session import Session
    result = {"interfaces": {"eth1": {"features": {}, "timeseries": {
        "columns": timeseries.COLUMNS, "rows": [[1, 2, 3, 4, 5, 6, None]]}}}}
    Session.drop_histograms(types.SimpleNamespace(lock=threading.RLock(), result=result))
    ts = result["interfaces"]["eth1"]["timeseries"]
    assert ts["rows"] is None and "dropped" in ts and ts["columns"] == timeseries.COLUMNS


# --- environment -------------------------------------------------------------------------------

KCONFIG = """#
# Automatically generated file; DO NOT EDIT.
CONFIG_BPF=y
CONFIG_HAVE_EBPF_JIT=y
CONFIG_BPF_SYSCALL=y
CONFIG_BPF_JIT=y
# CONFIG_BPF_PRELOAD is not set
CONFIG_XDP_SOCKETS=y
CONFIG_DEBUG_INFO_BTF=y
CONFIG_DEBUG_INFO_BTF_MODULES=y
CONFIG_NET_CLS_BPF=m
CONFIG_HZ=250
CONFIG_EXT4_FS=y
CONFIG_LOCALVERSION="-xdp"
CONFIG_BPFILTER_UMH=m
"""


def test_parse_kernel_config_keeps_bpf_options_only():
    cfg = environment.parse_kernel_config(KCONFIG)
    assert cfg == {"CONFIG_BPF": "y", "CONFIG_BPFILTER_UMH": "m", "CONFIG_BPF_JIT": "y",
                   "CONFIG_BPF_PRELOAD": "n", "CONFIG_BPF_SYSCALL": "y",
                   "CONFIG_DEBUG_INFO_BTF": "y", "CONFIG_DEBUG_INFO_BTF_MODULES": "y",
                   "CONFIG_HAVE_EBPF_JIT": "y", "CONFIG_HZ": "250", "CONFIG_NET_CLS_BPF": "m",
                   "CONFIG_XDP_SOCKETS": "y"}


def test_parse_cpuinfo_ethtool_and_versions():
    assert environment.parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"
                                     "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n") == \
        "AMD EPYC 7B13"
    assert environment.parse_cpuinfo("processor : 0\nBogoMIPS : 50\nHardware : BCM2835\n") == \
        "BCM2835"
    assert environment.parse_cpuinfo("processor : 0\n") is None
    veth = ("driver: veth\nversion: 1.0\nfirmware-version: \nexpansion-rom-version: \n"
            "bus-info: \nsupports-statistics: yes\n")
    assert environment.parse_ethtool_i(veth) == {"driver": "veth", "version": "1.0",
                                                 "firmware": None, "bus": None}
    mlx = "driver: mlx5_core\nversion: 6.1.0\nfirmware-version: 16.35.2000 (MT_0000000080)\n" \
          "bus-info: 0000:41:00.0\n"
    assert environment.parse_ethtool_i(mlx)["firmware"] == "16.35.2000 (MT_0000000080)"
    assert environment.parse_ethtool_i(mlx)["bus"] == "0000:41:00.0"
    k = ("Features for xlt-ad0:\nrx-checksumming: on\ntx-checksumming: on\n"
         "\ttx-checksum-ipv4: off [fixed]\ngeneric-receive-offload: off\n"
         "rx-gro-hw: off [fixed]\n")
    assert environment.parse_ethtool_k(k) == {
        "rx-checksumming": "on", "tx-checksumming": "on", "tx-checksum-ipv4": "off [fixed]",
        "generic-receive-offload": "off", "rx-gro-hw": "off [fixed]"}
    assert environment.parse_tcpdump_version(
        "tcpdump version 4.99.3\nlibpcap version 1.10.3 (with TPACKET_V3)\nOpenSSL 3.0\n") == \
        ("4.99.3", "1.10.3")
    assert environment.parse_tcpdump_version("what?") == (None, None)
    maps = ("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0\n"
            "7f02-7f03 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1\n")
    assert environment.llvm_from_maps(maps) == ("14", "/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1")
    assert environment.llvm_from_maps("1-2 r-xp 0 0 3 /usr/lib/libLLVM.so.19.1\n")[0] == "19.1"
    assert environment.llvm_from_maps("1-2 r-xp 0 0 3 /usr/lib/libc.so.6\n") is None


def test_environment_names_what_it_cannot_read():
    import subprocess

    def run(argv):
        if argv[0] == "tcpdump":
            raise FileNotFoundError(2, "No such file or directory", "tcpdump")
        if argv[0] == "ethtool" and argv[1] == "-i":
            return subprocess.CompletedProcess(argv, 0, "driver: veth\nversion: 1.0\n"
                                                        "firmware-version: \nbus-info: \n", "")
        if argv[0] == "ethtool":
            return subprocess.CompletedProcess(argv, 76, "", "Operation not supported")
        return subprocess.CompletedProcess(argv, 1, "", "")
    e = environment.gather(["eth9"], "", {"prog_tag": (None, "nothing loaded"),
                                          "source_sha256": "ab"}, run)
    json.dumps(e)
    u = e["unavailable"]
    assert e["tcpdump"] is None and "tcpdump" in u["tcpdump"] and e["libpcap"] is None
    assert e["interfaces"]["eth9"]["driver"] == "veth"
    assert e["interfaces"]["eth9"]["offloads"] is None
    assert "not supported" in u["interfaces.eth9.offloads"]
    assert "interfaces.eth9.firmware" in u and e["bcc"] is None and "bcc" in u
    assert e["collector"] == {"prog_tag": None, "source_sha256": "ab"}
    assert u["collector.prog_tag"] == "nothing loaded"
    assert e["kernel"]["release"] and e["cpu"]["count"] >= 1 and e["python"]


# -- users' programs: who may load one, and how it is named (userprog.py) -------------------

def _bpf_elf(tail=b""):
    return b"\x7fELF\x02\x01\x01" + bytes(11) + (247).to_bytes(2, "little") + bytes(44) + tail


def test_program_store_loads_nothing_unless_allowed(tmp_path):
    import hashlib
    from xdplab.agent.api import ApiError
    from xdplab.agent.userprog import ProgramStore

    store = ProgramStore(str(tmp_path))
    obj = _bpf_elf()
    sha = hashlib.sha256(obj).hexdigest()
    with pytest.raises(ApiError) as e:
        store.upload(obj, sha)
    assert e.value.status == 403 and "--allow-program-upload" in e.value.message
    with pytest.raises(ApiError) as e:
        store.path_of(sha)
    assert e.value.status == 403 and "--allow-programs DIR" in e.value.message
    assert not (tmp_path / "programs").exists()


def test_program_upload_is_checked_end_to_end(tmp_path):
    import hashlib
    from xdplab.agent.api import ApiError
    from xdplab.agent.userprog import ProgramStore

    store = ProgramStore(str(tmp_path), allow_upload=True)
    obj = _bpf_elf()
    sha = hashlib.sha256(obj).hexdigest()
    for data, header, words in ((obj, "0" * 64, "differs"), (obj, "nope", "64 lowercase hex"),
                                (b"#!/bin/sh\n" + bytes(30), None, "not an ELF"),
                                (obj[:18] + (62).to_bytes(2, "little") + obj[20:], None, "not BPF")):
        with pytest.raises(ApiError) as e:
            store.upload(data, header or hashlib.sha256(data).hexdigest())
        assert e.value.status == 400 and words in e.value.message, e.value.message
    out = store.upload(obj, sha)
    assert out["sha256"] == sha and Path(out["stored"]).read_bytes() == obj
    assert store.path_of(sha) == out["stored"]
    with pytest.raises(ApiError) as e:
        store.path_of("a" * 64)
    assert e.value.status == 404


def test_programs_from_the_allowed_directory_are_named_by_sha256(tmp_path):
    import hashlib
    from xdplab.agent.api import ApiError
    from xdplab.agent.userprog import ProgramStore

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    obj = _bpf_elf(b"lb")
    (allowed / "lb.o").write_bytes(obj)
    (tmp_path / "outside.o").write_bytes(_bpf_elf(b"outside"))
    os.symlink(tmp_path / "outside.o", allowed / "link.o")     # leads out of DIR: not taken
    store = ProgramStore(str(tmp_path / "state"), allow_dir=str(allowed))
    assert store.path_of(hashlib.sha256(obj).hexdigest()) == str(allowed / "lb.o")
    with pytest.raises(ApiError) as e:
        store.path_of(hashlib.sha256(_bpf_elf(b"outside")).hexdigest())
    assert e.value.status == 404 and str(allowed) in e.value.message
    with pytest.raises(ApiError) as e:            # uploads stay off
        store.upload(obj, hashlib.sha256(obj).hexdigest())
    assert e.value.status == 403


def test_the_arm_requests_program_field_is_checked():
    from xdplab.agent.api import ApiError
    from xdplab.agent.userprog import validate_program

    assert validate_program(None) is None and validate_program("attached") == "attached"
    good = {"sha256": "ab" * 32, "name": "xdp_main", "globals": {"drop_port": 12345, "on": True}}
    assert validate_program(good) == good
    for bad, field in (("loaded", "program:"), ({"sha256": "x"}, "program.sha256"),
                       (dict(good, name="x y"), "program.name"),
                       (dict(good, globals={"a": "1"}), "program.globals"),
                       (dict(good, globals={"1a": 1}), "program.globals"),
                       (dict(good, path="/etc/passwd"), "program.path")):
        with pytest.raises(ApiError) as e:
            validate_program(bad)
        assert e.value.status == 400 and e.value.message.startswith(field), e.value.message


def test_driver_xdp_counters_are_summed_over_queues():
    from xdplab.agent.userprog import DRIVER_XDP_STATS, parse_ethtool_stats

    text = """NIC statistics:
     peer_ifindex: 26
     rx_queue_0_xdp_packets: 10
     rx_queue_0_xdp_bytes: 15000
     rx_queue_0_drops: 3
     rx_queue_0_xdp_redirect: 1
     rx_queue_0_xdp_drops: 4
     rx_queue_0_xdp_tx: 2
     rx_queue_0_xdp_tx_errors: 1
     rx_queue_1_xdp_packets: 5
     rx_queue_1_xdp_drops: 1
     tx_queue_0_xdp_xmit: 7
"""
    assert parse_ethtool_stats(text, DRIVER_XDP_STATS["veth"]) == {
        "xdp_packets": 15, "xdp_drop": 5, "xdp_tx": 2, "xdp_redirect": 1, "xdp_tx_errors": 1}


def test_a_cpu_clock_counts_nothing_before_its_start_and_keeps_its_last_reading():
    readings = iter([None, 5, 9, None, 3])
    clock = sysstats.CpuClock(lambda: next(readings))
    # not started yet, then running, then gone (None) or a reused pid's smaller reading
    assert [clock(), clock(), clock(), clock(), clock()] == [0, 5, 9, 9, 9]


def test_the_observers_cpu_is_taken_over_the_softirq_windows_samples():
    s = sysstats.SoftirqSampler("t")
    s.stop()
    ms = 10 ** 6
    s.t = array("q", [0, 100 * ms, 200 * ms, 300 * ms])
    s.soft, s.total = array("q", [0, 1, 2, 3]), array("q", [0, 20, 40, 60])
    s.agent = array("q", [0, 10 * ms, 30 * ms, 50 * ms])
    s.parts = {"capture": array("q", [0, 0, 50 * ms, 100 * ms]),     # started between samples 1 and 2
               "consumer": array("q", [0, 5 * ms, 15 * ms, 25 * ms]),
               "polling": array("q", [0, 1 * ms, 2 * ms, 3 * ms])}
    o = s.observers(120 * ms, 280 * ms, "first to last matched arrival")
    assert (o["from_monotonic_ns"], o["to_monotonic_ns"]) == (100 * ms, 300 * ms)
    # % of one CPU: 40 ms of the agent's CPU in 200 ms; tcpdump 100 ms in 200 ms
    assert (o["agent_cpu_pct"], o["capture_cpu_pct"]) == (20.0, 50.0)
    assert (o["consumer_cpu_pct"], o["polling_cpu_pct"]) == (10.0, 1.0)
    assert o["capture_cpu_ns"] == 100 * ms and o["ncpu"] == os.cpu_count()
    assert s.window(120 * ms, 280 * ms, "w")["cpu_pct"] == 5.0
    # fewer than two samples: no figures
    s.t, s.agent = array("q", [0]), array("q", [0])
    assert s.observers(0, 1, "w")["agent_cpu_pct"] is None


def test_the_agent_follows_its_own_and_a_childs_cpu_time():
    import subprocess
    s = sysstats.SoftirqSampler("t")
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                             "while time.process_time() - t < 0.3: pass"])
    s.watch_process("capture", busy)
    busy.wait()
    time.sleep(0.25)
    s.stop()
    assert s.parts["capture"][-1] >= 0.2e9         # its run time, kept after it ended
    assert s.agent[-1] > 0 and sysstats.interface_driver("lo") in (None, "")
