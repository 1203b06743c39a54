"""The program under test is the user's: each shipped example measured on the embedded
testbed with the books closed to the packet, an object built outside the workflow, a
program attached by another loader, A/B comparisons, and every refusal before traffic.

The collector runs first and hands each frame to the user's program by a tail call; the
verdicts come from the DUT driver's XDP counters (veth), what passed also from tcpdump.
One testbed for the module (brought up once, torn down at the end); each run is the
snakemake command line a user types.
"""

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import testbed_up as embedded_testbed_up   # (a name pytest does not collect as a test)

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SRC_NS, DUT_NS, SRC_IF, DUT_IF = "xdplab-src", "xdplab-dut", "xl-src0", "xl-dut0"
REPO = Path(__file__).resolve().parents[1]
SHORT = ["duration_s=1", "warmup_s=1", "target_pps=1000", "keep_testbed=true"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


def _env(workdir):
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(workdir / "workflow")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's clone with the embedded testbed up for the whole module."""
    dest = tmp_path_factory.mktemp("userprog") / "xdplab"
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".venv", "results", ".snakemake", ".git", "__pycache__", ".pytest_cache"))
    with embedded_testbed_up(dest, timeout=180):
        yield dest


def snakemake(workdir, *config, check=True, timeout=600):
    r = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--config", *config], cwd=workdir,
                       env=_env(workdir), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    text = r.stdout + r.stderr
    if check:
        assert r.returncode == 0, text[-5000:]
    return r.returncode, text


def rows(workdir, exp):
    with open(workdir / "results" / exp / "summary.csv") as f:
        return list(csv.DictReader(f))


def n(r, col):
    return int(float(r[col]))


def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    assert not check or r.returncode == 0, (argv, r.stderr)
    return r


def xdp_on_dut():
    """What is attached on the DUT interface, as `ip -d link` shows it."""
    out = sh("ip", "-n", DUT_NS, "-d", "-j", "link", "show", DUT_IF).stdout
    return json.loads(out)[0].get("xdp")


def trial_dirs(workdir, exp):
    return sorted((workdir / "results" / exp / "trials").glob("*/rep~*"))


def captured_seqs(pcap: Path, run_ids):
    """Sequence numbers of our packets of the given run ids in a classic pcap."""
    data = pcap.read_bytes()
    off, seqs = 24, []
    little = data[:4] == b"\xd4\xc3\xb2\xa1"
    fmt = "<IIII" if little else ">IIII"
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(fmt, data, off)
        frame = data[off + 16: off + 16 + incl]
        off += 16 + incl
        ihl = (frame[14] & 0x0F) * 4
        payload = frame[14 + ihl + 8:]
        if len(payload) >= 18 and payload[:4] == b"XDLB":
            seq, run_id = struct.unpack("!I", payload[4:8])[0], struct.unpack("!H", payload[16:18])[0]
            if run_id in run_ids:
                seqs.append(seq)
    return seqs


def test_pass_all_and_an_object_built_elsewhere_close_their_books(workdir, tmp_path):
    """pass_all built by the workflow passes every packet; tx_back built outside it (clang
    in this test) sends every packet back, and the source's interface receives them."""
    obj = tmp_path / "tx_back.o"
    sh("clang", "-O2", "-g", "-target", "bpf", "-I", str(workdir / "bpf"),
       "-I", f"/usr/include/{os.uname().machine}-linux-gnu",
       "-c", str(workdir / "programs" / "tx_back.bpf.c"), "-o", str(obj))
    src_rx = f"/sys/class/net/{SRC_IF}/statistics/rx_packets"
    rx0 = int(sh("ip", "netns", "exec", SRC_NS, "cat", src_rx).stdout)
    # veth delivers XDP_TX frames to its peer only when the peer runs XDP itself (its NAPI
    # ring takes them); otherwise they count as the driver's xdp_tx_errors (prog_tx_errors).
    pass_obj = tmp_path / "pass_all.o"
    sh("clang", "-O2", "-g", "-target", "bpf", "-c", str(workdir / "programs" / "pass_all.bpf.c"),
       "-I", f"/usr/include/{os.uname().machine}-linux-gnu", "-o", str(pass_obj))
    sh("ip", "-n", SRC_NS, "link", "set", "dev", SRC_IF, "xdpdrv", "obj", str(pass_obj), "sec", "xdp")
    try:
        snakemake(workdir, "experiment=ab", f"program=programs/pass_all.bpf.c,{obj}", *SHORT)
    finally:
        sh("ip", "-n", SRC_NS, "link", "set", "dev", SRC_IF, "xdpdrv", "off", check=False)
    rx1 = int(sh("ip", "netns", "exec", SRC_NS, "cat", src_rx).stdout)
    by_prog = {r["program"]: r for r in rows(workdir, "ab")}
    assert set(by_prog) == {"programs/pass_all.bpf.c", str(obj)}
    for r in by_prog.values():
        assert n(r, "lost") == 0 and n(r, "unexplained") == 0, r
        assert n(r, "prog_seen") == n(r, "sent") + n(r, "warmup_sent") == n(r, "xdp_seen"), r
        assert r["observe"] == "full" and len(r["program_sha256"]) == 64
    p, t = by_prog["programs/pass_all.bpf.c"], by_prog[str(obj)]
    assert n(p, "prog_pass") == n(p, "prog_seen") == n(p, "tcpdump_captured")
    assert n(p, "prog_drop") == n(p, "prog_tx") == 0
    # Every packet went back where it came from: counted by the driver, seen at the source.
    assert n(t, "prog_tx") == n(t, "prog_seen") and n(t, "prog_pass") == n(t, "prog_tx_errors") == 0
    assert n(t, "tcpdump_captured") == 0
    assert rx1 - rx0 >= n(t, "prog_tx"), (rx0, rx1)
    assert xdp_on_dut() is None, "nothing of xdplab's stays attached"


def test_drop_rule_drops_exactly_the_packets_its_global_names(workdir):
    snakemake(workdir, "experiment=drop", "program=programs/drop_rule.bpf.c",
              "program_globals={drop_odd_seq: 1}", *SHORT)
    (r,) = rows(workdir, "drop")
    total = n(r, "sent") + n(r, "warmup_sent")
    assert n(r, "lost") == 0 and n(r, "unexplained") == 0, r
    assert n(r, "prog_seen") == total
    (trial,) = trial_dirs(workdir, "drop")
    run_id = n(r, "run_id")
    warm_id = json.loads((trial / "trial.json").read_text())["generators"][0]["warmup"]["run_id"]
    odd = sum(1 for k in (n(r, "sent"), n(r, "warmup_sent")) for s in range(k) if s % 2)
    assert n(r, "prog_drop") == odd and n(r, "prog_pass") == total - odd
    # features.parquet holds every packet that reached the program; the capture exactly the
    # even ones of each run.
    import pyarrow.parquet as pq
    feats = pq.read_table(trial / "features.parquet", columns=["seq"]).column("seq").to_pylist()
    assert sorted(feats) == list(range(n(r, "sent")))
    seen = captured_seqs(trial / "capture.pcap", {run_id})
    assert sorted(seen) == [s for s in range(n(r, "sent")) if s % 2 == 0]
    assert sorted(captured_seqs(trial / "capture.pcap", {warm_id})) == \
        [s for s in range(n(r, "warmup_sent")) if s % 2 == 0]
    assert xdp_on_dut() is None


def test_aborted_verdicts_are_counted_apart_from_drops(workdir):
    """veth counts XDP_ABORTED among its drops; the xdp_exception tracepoint tells them
    apart, and the counter is gone after the trial."""
    snakemake(workdir, "experiment=abort", "program=programs/drop_rule.bpf.c",
              "program_globals={drop_odd_seq: 1, abort_instead: 1}", *SHORT)
    (r,) = rows(workdir, "abort")
    total = n(r, "sent") + n(r, "warmup_sent")
    odd = sum(1 for k in (n(r, "sent"), n(r, "warmup_sent")) for s in range(k) if s % 2)
    assert n(r, "lost") == 0 and n(r, "unexplained") == 0, r
    assert n(r, "prog_aborted") == odd and n(r, "prog_drop") == 0, r
    assert n(r, "prog_pass") == total - odd == n(r, "tcpdump_captured")
    assert xdp_on_dut() is None
    tracepoint_progs = sh("bpftool", "prog", "show", check=False).stdout
    assert "xdp_exception" not in tracepoint_progs and "tracepoint__xdp" not in tracepoint_progs


def test_a_program_attached_by_another_loader_is_measured_and_left_attached(workdir, tmp_path):
    obj = tmp_path / "pass_all.o"
    sh("clang", "-O2", "-g", "-target", "bpf", "-I", str(workdir / "bpf"),
       "-I", f"/usr/include/{os.uname().machine}-linux-gnu",
       "-c", str(workdir / "programs" / "pass_all.bpf.c"), "-o", str(obj))
    sh("ip", "-n", DUT_NS, "link", "set", "dev", DUT_IF, "xdpdrv", "obj", str(obj), "sec", "xdp")
    try:
        before = xdp_on_dut()
        assert before and before["prog"]["id"]
        snakemake(workdir, "experiment=attached", "program=attached", *SHORT)
        (r,) = rows(workdir, "attached")
        assert r["observe"] == "off" and r["prog_tag"] == before["prog"]["tag"], r
        total = n(r, "sent") + n(r, "warmup_sent")
        assert n(r, "prog_seen") == n(r, "prog_pass") == total == n(r, "tcpdump_captured"), r
        assert float(r["prog_ns_per_pkt"]) > 0      # its own run-time statistics
        after = xdp_on_dut()
        assert after and after["prog"]["id"] == before["prog"]["id"], (before, after)
    finally:
        sh("ip", "-n", DUT_NS, "link", "set", "dev", DUT_IF, "xdpdrv", "off", check=False)
    # Nothing attached: the same run is refused before traffic, naming the interface.
    rc, text = snakemake(workdir, "experiment=attached2", "program=attached", *SHORT, check=False)
    assert rc != 0 and "has no XDP program attached" in text, text[-3000:]


@pytest.mark.parametrize("case", ["verifier", "name", "global", "range"])
def test_a_program_that_cannot_run_is_refused_before_traffic(workdir, tmp_path, case):
    config = {"verifier": ["program=" + str(tmp_path / "bad.bpf.c")],
              "name": ["program=programs/pass_all.bpf.c", "program_name=xdp_nope"],
              "global": ["program=programs/drop_rule.bpf.c", "program_globals={drop_evens: 1}"],
              "range": ["program=programs/drop_rule.bpf.c", "program_globals={drop_port: 70000}"]}
    (tmp_path / "bad.bpf.c").write_text(
        '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
        'SEC("xdp") int xdp_unchecked(struct xdp_md *ctx)\n'
        '{ unsigned char *p = (void *)(long)ctx->data; return p[20] ? XDP_PASS : XDP_DROP; }\n'
        'char LICENSE[] SEC("license") = "GPL";\n')
    expect = {"verifier": "verifier refused", "name": "xdp_nope is not a program of the object",
              "global": "no global 'drop_evens'", "range": "drop_port"}
    rc, text = snakemake(workdir, f"experiment=refused-{case}", *config[case], *SHORT, check=False)
    assert rc != 0, text[-3000:]
    assert expect[case] in text, text[-4000:]
    if case == "verifier":
        assert "invalid access to packet" in text or "R" in text   # the verifier's own words
    assert not list((workdir / "results" / f"refused-{case}").glob("trials/*/rep~0/arm.json"))
    assert xdp_on_dut() is None


def test_two_programs_of_different_cost_compared_over_five_repeats(workdir):
    shutil.copy(workdir / "programs" / "pass_all.bpf.c", workdir / "programs" / "pass_again.bpf.c")
    snakemake(workdir, "experiment=cmp", "repeats=5",
              "program=programs/pass_all.bpf.c,programs/busy_pass.bpf.c,programs/pass_again.bpf.c",
              *[c for c in SHORT if not c.startswith("target_pps=")], "target_pps=10000", timeout=900)
    # The three programs' trials ran interleaved (the seeded run order), not one after another.
    done = sorted((workdir / "results" / "cmp" / "trials").glob("*/rep~*/trial.json"),
                  key=lambda p: p.stat().st_mtime_ns)
    ran = [p.parent.parent.name.split("_prog~")[1].split("_cfg~")[0] for p in done]
    assert len(ran) == 15 and len(set(ran[:5])) > 1 and len(set(ran[-5:])) > 1, ran
    out = workdir / "results" / "cmp" / "compare"
    with open(out / "compare.csv") as f:
        table = [r for r in csv.DictReader(f) if r["metric"] == "xdp_ns_per_pkt"]
    busy = next(r for r in table if r["program_b"] == "programs/busy_pass.bpf.c")
    same = next(r for r in table if r["program_b"] == "programs/pass_again.bpf.c")
    assert int(busy["n_a"]) == int(busy["n_b"]) == 5
    assert busy["significant"] == "True" and float(busy["diff_ci95_lo"]) > 0, busy
    assert float(busy["p_value"]) < 0.05 and "more per packet" in busy["verdict"], busy
    assert same["significant"] == "False", same
    assert "no significant difference" in same["verdict"], same
    for ext in ("md", "tex", "svg", "png", "pdf"):
        assert (out / f"compare.{ext}").stat().st_size > 0
