"""Latency at fractions of the found rate (workflow/xdplab/latency.py, docs/latency.md):
percentiles read back from the agent's saved histogram, merged over interfaces, the
loads planned from a search's PDR and NDR, a row per trial (with the n/a clock cases),
the table, and the rules' scripts on synthetic inputs.  Pure: no testbed."""

import csv
import json
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xdplab import latency
from xdplab.agent.hist import EXACT_BELOW, SUB, Histogram

REPO = Path(__file__).resolve().parents[1]
BOOT = "ce05b290-5a15-423a-b623-61e9120f9eaf"


def block(values):
    """A latency block as trial.json holds it (agent.interfaces.<iface>.features.latency_ns)."""
    h = Histogram()
    h.record_many(list(values))
    return json.loads(json.dumps(h.summary()))   # as saved: through JSON


def nearest_rank(values, q):
    s = sorted(values)
    return s[max(1, math.ceil(q * len(s) / 100 - 1e-9)) - 1]


# -- percentiles -------------------------------------------------------------------------

def test_percentiles_below_exact_below_are_exact_and_the_agents_own():
    rng = random.Random(1)
    values = [rng.randrange(0, EXACT_BELOW) for _ in range(5000)]
    b = block(values)
    for q in (0.1, 1, 25, 50, 90, 99, 99.9, 100):
        assert latency.percentile(b, q) == nearest_rank(values, q), q
        assert latency.percentile(b["histogram"], q) == nearest_rank(values, q), q
    for q, key in ((50, "p50"), (90, "p90"), (99, "p99"), (99.9, "p999")):
        assert latency.percentile(b, q) == b[key]


def test_percentiles_above_exact_below_are_within_the_stated_relative_error():
    rng = random.Random(2)
    values = [int(rng.lognormvariate(10, 1.5)) + EXACT_BELOW for _ in range(20000)]
    b = block(values)
    for q in (1, 10, 50, 90, 99, 99.9, 99.99):
        true, got = nearest_rank(values, q), latency.percentile(b, q)
        assert true <= got <= true * (1 + 1 / SUB), (q, true, got)
    assert latency.percentile(b, 100) == max(values)
    assert latency.percentile(b, 99.9) == b["p999"]


def test_ninety_nine_point_nine_of_a_thousand_is_the_999th_value():
    values = list(range(1, 1001))                    # 99.9 % of 1,000 in floats is 999.0000000000001
    assert latency.percentile(block(values), 99.9) == 999


def test_a_percentile_outside_zero_to_a_hundred_is_refused_and_no_samples_is_none():
    with pytest.raises(ValueError):
        latency.percentile(block([1, 2, 3]), 0)
    with pytest.raises(ValueError):
        latency.percentile(block([1, 2, 3]), 101)
    assert latency.percentile(block([]), 50) is None
    assert latency.percentile([], 50) is None
    assert latency.merge([None, block([])]) is None


def test_merged_histograms_give_the_percentiles_of_all_their_samples():
    rng = random.Random(3)
    a = [rng.randrange(3000, 40000) for _ in range(3000)]
    b = [rng.randrange(500, 200000) for _ in range(1000)]
    merged = latency.merge([block(a), block(b)])
    union = block(a + b)
    assert merged["count"] == 4000
    assert merged["min"] == min(a + b) and merged["max"] == max(a + b)
    assert merged["histogram"]["buckets"] == union["histogram"]["buckets"]
    assert abs(merged["mean"] - sum(a + b) / 4000) < 0.1
    for q in latency.PERCENTILES + (100,):
        assert latency.percentile(merged, q) == latency.percentile(union, q) == \
            latency.percentile([block(a), block(b)], q), q


def test_histograms_of_two_schemes_do_not_merge():
    other = block([5000, 6000])
    other["histogram"]["buckets_per_octave"] = 512
    with pytest.raises(ValueError, match="two schemes"):
        latency.merge([block([5000]), other])


# -- the loads ---------------------------------------------------------------------------

def test_plan_runs_idle_the_fractions_of_the_pdr_and_the_ndr():
    p = latency.plan(200_000, 150_001.4)
    assert [e["load"] for e in p] == list(latency.LOAD_NAMES)
    assert [e["target_pps"] for e in p] == [1000, 20000, 100000, 180000, 150001]
    assert [e["fraction_of_pdr"] for e in p] == pytest.approx([0.005, 0.1, 0.5, 0.9, 150001 / 200000])
    assert all(e["why"] is None and e["pdr_pps"] == 200_000 and e["ndr_pps"] == 150_001.4 for e in p)


def test_plan_idle_is_one_percent_of_a_small_pdr_and_every_rate_at_least_one_pps():
    assert [e["target_pps"] for e in latency.plan(20_000, 20_000)] == [200, 2000, 10000, 18000, 20000]
    assert [e["target_pps"] for e in latency.plan(5, 3)] == [1, 1, 2, 4, 3]
    assert latency.plan(200_000, 1, idle_pps=100)[0]["target_pps"] == 100


def test_plan_without_a_pdr_or_an_ndr_says_why_instead_of_a_rate():
    no_pdr = latency.plan(None, 90_000)
    assert [e["target_pps"] for e in no_pdr] == [None, None, None, None, 90000]
    assert all("no PDR" in e["why"] for e in no_pdr[:4]) and no_pdr[4]["why"] is None
    assert no_pdr[4]["fraction_of_pdr"] is None
    no_ndr = latency.plan(100_000, None)
    assert [e["target_pps"] for e in no_ndr] == [1000, 10000, 50000, 90000, None]
    assert "no NDR" in no_ndr[4]["why"]
    assert all(e["target_pps"] is None and e["why"] for e in latency.plan(0, None))


# -- rows --------------------------------------------------------------------------------

def trial_json(ifaces, gen_boots=(BOOT,), dut_boot=BOOT, pps=10000, size=1458, backend="python",
               lost=0, sustained=True):
    """A synthetic trial.json with what latency.row reads."""
    return {
        "trial": {"experiment": "x", "target_pps": pps, "packet_size": size, "repeat": 0,
                  "collector": "features", "point": f"pps~{pps}_size~{size}"},
        "summary": {"packet_size": size, "target_pps": pps, "achieved_pps": float(pps), "lost": lost,
                    "rate_sustained": sustained, "frame_size": size + 46, "latency_method": "..."},
        "generators": [{"boot_id": b, "backend": backend} for b in gen_boots],
        "agent": {"boot_id": dut_boot,
                  "interfaces": {name: {"features": {"latency_ns": b}} for name, b in ifaces.items()}},
    }


def test_a_row_of_one_kernel_merges_the_interfaces_in_microseconds():
    a, b = list(range(4000, 14000)), [100_000] * 10
    t = trial_json({"xl-dut0": block(a), "xl-dut1": block(b)})
    r = latency.row(t, "50% pdr", 0.5, target_pps=10000, pdr_pps=20000, ndr_pps=19000, trial_dir="t/rep~0",
                    search="s1")
    assert list(r) == latency.COLUMNS
    m = latency.merge([block(a), block(b)])
    assert r["packets"] == 10010 and r["clock"] == latency.CLOCK_ONE
    assert r["min_us"] == 4.0 and r["max_us"] == 100.0
    assert r["p50_us"] == latency.percentile(m, 50) / 1000
    assert r["p999_us"] == latency.percentile(m, 99.9) / 1000
    assert r["pdv_us"] == round(r["p999_us"] - r["min_us"], 3)
    assert r["frame_size"] == 1504 and r["packet_size"] == 1458 and r["fraction_of_pdr_pct"] == 50.0
    assert (r["target_pps"], r["achieved_pps"], r["pdr_pps"], r["ndr_pps"]) == (10000, 10000.0, 20000, 19000)
    assert r["trial"] == "t/rep~0" and r["search"] == "s1" and r["note"] == ""
    assert "one kernel, one clock" in r["latency_method"]


def test_a_row_across_two_clocks_is_n_a_with_why_and_no_number():
    t = trial_json({"xl-dut0": block(range(4000, 5000))}, gen_boots=("other-boot",))
    r = latency.row(t, "idle", 0.01)
    assert r["clock"] == "n/a" and r["latency_method"].startswith("n/a: ")
    assert "do not share a clock" in r["latency_method"]
    assert all(r[c] is None for c in ("packets", "min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
                                      "pdv_us"))
    assert r["target_pps"] == 10000 and r["lost"] == 0             # the rest of the trial still says what it did
    # the pre-flight's decision is quoted, and n/a stays n/a
    na = {"latency": "n/a", "reported": False, "why": "src0 (chrony: not synchronised)"}
    assert "pre-flight: src0 (chrony: not synchronised)" in latency.row(t, "idle", 0.01, clock=na)["latency_method"]
    # a missing boot id is not one clock either
    assert latency.row(trial_json({"i": block([5000])}, gen_boots=(None,)), "idle", 0.01)["clock"] == "n/a"
    assert latency.row(trial_json({"i": block([5000])}, dut_boot=None), "idle", 0.01)["p50_us"] is None


def test_a_row_with_synchronised_clocks_states_their_bound():
    t = trial_json({"xl-dut0": block(range(4000, 5000))}, gen_boots=("other-boot",))
    sync = {"latency": "synchronised", "reported": True, "offset_bound_ns": 1500, "why": "ptp"}
    r = latency.row(t, "ndr", 0.95, clock=sync)
    assert r["clock"] == "synchronised" and r["p50_us"] is not None
    assert "+/- 1.5 us" in r["latency_method"]


def test_a_row_without_a_send_time_or_records_is_n_a():
    r = latency.row(trial_json({"xl-dut0": block([5000])}, backend="trafgen"), "idle", 0.01)
    assert r["clock"] == "n/a" and "trafgen" in r["latency_method"] and r["p50_us"] is None
    only_outside = dict(block([]), out_of_range=5)
    r = latency.row(trial_json({"i": only_outside}), "idle", 0.01)
    assert r["p50_us"] is None and "all 5 sample(s) out of the histogram's range" in r["latency_method"]
    r = latency.row(trial_json({}), "idle", 0.01)
    assert r["clock"] == latency.CLOCK_ONE and r["p50_us"] is None
    assert r["latency_method"] == "n/a: no feature records received"


def test_a_row_notes_a_source_that_could_not_offer_the_load_and_samples_out_of_range():
    b = block([5000, 6000])
    b["out_of_range"] = 3
    r = latency.row(trial_json({"i": b}, sustained=False), "90% pdr", 0.9, target_pps=12000)
    assert "could not offer the load" in r["note"] and "3 sample(s) out of" in r["note"]
    assert "planned 12000 pps, the trial ran 10000 pps" in r["note"]


def test_the_table_gives_units_and_n_a():
    ok = latency.row(trial_json({"i": block(range(4000, 9000))}), "10% pdr", 0.1, pdr_pps=100000,
                     ndr_pps=90000, trial_dir="results/x/trials/p/rep~0")
    na = latency.row(trial_json({"i": block([5000])}, gen_boots=("b",)), "50% pdr", 0.5)
    skipped = latency.skipped_row("ndr", "not run: the search found no NDR", packet_size=1458)
    md = latency.table([ok, na, skipped], title="t")
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| frame B"))
    for h in ("payload B", "% of PDR", "offered pps", "p50 µs", "p99.9 µs", "PDV µs", "clock"):
        assert f"| {h} |" in header, h
    body = [line for line in lines if line.startswith("| 1504")]
    assert len(body) == 3
    assert "| n/a |" in body[1] and "| the source and the DUT do not share a clock" in body[1]
    assert body[2].endswith("| not run: the search found no NDR |") and body[0].endswith("| - |")
    assert "do not share a clock" in md and "`results/x/trials/p/rep~0`" in md
    assert latency.COLUMNS == list(dict.fromkeys(latency.COLUMNS))
    assert set(latency.HEADERS) == set(latency.COLUMNS)


# -- the rules' scripts ------------------------------------------------------------------

RUN_SCRIPT = textwrap.dedent("""
    import json, runpy, sys
    from types import SimpleNamespace
    sys.path.insert(0, sys.argv[1])
    spec = json.loads(sys.argv[3])
    sm = SimpleNamespace(rule=spec["rule"], input=SimpleNamespace(**spec["input"]),
                         output=SimpleNamespace(**spec["output"]), log=[spec["log"]],
                         params=SimpleNamespace(**spec.get("params", {})))
    runpy.run_path(sys.argv[2], init_globals={"snakemake": sm}, run_name="__main__")
""")


def run_script(name, tmp_path, **spec):
    spec = dict(spec, rule=name, log=str(tmp_path / f"logs/{name}.log"))
    (tmp_path / "logs").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(REPO / "workflow"),
                           str(REPO / f"workflow/scripts/{name}.py"), json.dumps(spec)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + (tmp_path / f"logs/{name}.log").read_text()
    return proc


def write_search(tmp_path, search, size, pdr, ndr, boots=(BOOT,)):
    """results/x/search/<search>/latency.json and a trial per load planned from (pdr, ndr)."""
    exp = tmp_path / "results/x"
    entries = []
    rng = random.Random(size)
    for e in latency.plan(pdr, ndr):
        if e["target_pps"] is None:
            entries.append({"trial": None, **e})
            continue
        point = f"pps~{e['target_pps']}_size~{size}"
        d = exp / "trials" / point / "rep~0"
        d.mkdir(parents=True, exist_ok=True)
        scale = 1 + 4 * (e["fraction_of_pdr"] or 1)
        values = [int(rng.lognormvariate(9, 0.6) * scale) for _ in range(2000)]
        (d / "trial.json").write_text(json.dumps(trial_json({"xl-dut0": block(values)}, gen_boots=boots,
                                                            pps=e["target_pps"], size=size)))
        entries.append({"trial": f"results/x/trials/{point}/rep~0", **{k: e[k] for k in
                        ("load", "fraction_of_pdr", "target_pps", "pdr_pps", "ndr_pps")}})
    plan = exp / "search" / search / "latency.json"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps({"search": search, "settings": {"packet_size": size}, "trials": entries}))
    return str(plan.relative_to(tmp_path))


def test_the_table_and_figure_scripts_on_synthetic_searches(tmp_path):
    plans = [write_search(tmp_path, "size~1458", 1458, 200_000, 190_000),
             write_search(tmp_path, "size~18", 18, 300_000, None),
             write_search(tmp_path, "size~82", 82, 50_000, 40_000, boots=("another-kernel",))]
    out = {"csv": "results/x/latency.csv", "md": "results/x/latency.md"}
    run_script("latency_table", tmp_path, input={"plan": plans}, output=out, params={"experiment": "x"})
    with open(tmp_path / out["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == latency.COLUMNS
    assert len(rows) == 15
    assert [r["frame_size"] for r in rows] == ["64"] * 5 + ["128"] * 5 + ["1504"] * 5
    by = {(r["frame_size"], r["load"]): r for r in rows}
    assert by[("1504", "50% pdr")]["target_pps"] == "100000" and by[("1504", "50% pdr")]["p50_us"]
    assert by[("64", "ndr")]["p50_us"] == "" and by[("64", "ndr")]["target_pps"] == ""
    assert by[("64", "ndr")]["latency_method"] == "n/a: not run: the search found no NDR"
    assert all(by[("128", load)]["p50_us"] == "" and by[("128", load)]["clock"] == "n/a"
               for load in latency.LOAD_NAMES)
    md = (tmp_path / out["md"]).read_text()
    assert md.startswith("# xdplab experiment `x`") and "p99.9 µs" in md

    # one plan file (a str, not a list) works too
    run_script("latency_table", tmp_path, input={"plan": plans[0]},
               output={"csv": "one.csv", "md": "one.md"})
    assert len((tmp_path / "one.csv").read_text().splitlines()) == 6

    fig = {"svg": "results/x/latency.svg", "png": "results/x/latency.png"}
    run_script("latency_figure", tmp_path, input={"csv": out["csv"]}, output=fig, params={"experiment": "x"})
    for f in fig.values():
        assert (tmp_path / f).stat().st_size > 1000, f
    assert (tmp_path / fig["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / fig["svg"]).read_text()[:2000]


def test_the_figure_of_no_latency_at_all_is_still_drawn(tmp_path):
    (tmp_path / "empty.csv").write_text(",".join(latency.COLUMNS) + "\n")
    fig = {"svg": "e.svg", "png": "e.png"}
    run_script("latency_figure", tmp_path, input={"csv": "empty.csv"}, output=fig)
    assert all((tmp_path / f).stat().st_size > 0 for f in fig.values())
