"""The zero-loss rate search's logic (workflow/xdplab/ndr.py), against simulated devices:
a DUT that loses what exceeds its capacity, a source that cannot offer more than its own
peak, a DUT that keeps up for a short probe but not for a long trial."""

import math

import pytest

from xdplab import ndr
from xdplab.config import ConfigError, validate_config


def params(**kw):
    base = dict(min_pps=1000, max_pps=1_000_000, resolution_pct=1.0, loss_pct=0.0, probe_s=5,
                confirm_s=60)
    return ndr.Params(**{**base, **kw})


class Device:
    """Loses every packet above `capacity` pps (`long_capacity` for trials longer than the
    probe's); the source offers at most `source_pps`.  Records the trials asked for."""

    def __init__(self, capacity, long_capacity=None, source_pps=math.inf, probe_s=5):
        self.capacity, self.long_capacity = capacity, long_capacity or capacity
        self.source_pps, self.probe_s = source_pps, probe_s
        self.trials = []

    def __call__(self, kind, pps, duration_s):
        self.trials.append((kind, pps, duration_s))
        offered = min(pps, self.source_pps)
        cap = self.capacity if duration_s <= self.probe_s else self.long_capacity
        sent = int(offered * duration_s)
        lost = int(max(0, offered - cap) * duration_s)
        return {"sent": sent, "lost": lost, "rate_sustained": offered == pps,
                "not_offered": int((pps - offered) * duration_s),
                "loss_where": f"dut_nic {lost}" if lost else ""}


def test_binary_search_finds_the_capacity_to_the_resolution_then_confirms():
    p = params()
    dut = Device(capacity=123_456)
    result, history = ndr.run(p, dut)
    assert dut.trials[0] == ("probe", 1_000_000, 5), "RFC 2544: the first probe is at the maximum"
    assert dut.trials[1] == ("probe", 1000, 5), "then the minimum"
    # Every probe after those lies strictly between the best pass and the lowest failure.
    lo, hi = 1000, 1_000_000
    for kind, pps, _ in dut.trials[2:-1]:
        assert kind == "probe" and pps == ndr.midpoint(lo, hi)
        lo, hi = (pps, hi) if pps <= 123_456 else (lo, pps)
    assert dut.trials[-1] == ("confirm", result["ndr_pps"], 60)
    assert 123_456 / 1.01 <= result["ndr_pps"] <= 123_456
    assert result["fail_pps"] <= result["ndr_pps"] * 1.01
    assert result["limited_by"] == "dut" and result["fail_outcome"] == "loss"
    assert result["confirmations"] == 1 and result["confirm_lost"] == 0
    assert result["confirm_sent"] == result["ndr_pps"] * 60
    # Geometric steps: about log2(ln(1000) / ln(1.01)) probes after the two ends.
    assert result["probes"] == len(history) - 1 <= 2 + math.ceil(math.log2(math.log(1000) / math.log(1.01))) + 1


def test_midpoint_is_geometric_and_strictly_inside():
    assert ndr.midpoint(1000, 1_000_000) == 31623
    assert ndr.midpoint(10, 12) == 11
    assert ndr.converged(10, 11, 0.01) and ndr.converged(100, 101, 1.0)
    assert not ndr.converged(100, 102, 1.0)


@pytest.mark.parametrize("resolution", [0.1, 1, 5, 20])
def test_resolution_bounds_the_answer(resolution):
    p = params(resolution_pct=resolution)
    result, history = ndr.run(p, Device(capacity=50_000))
    assert 50_000 / (1 + resolution / 100) <= result["ndr_pps"] <= 50_000
    assert result["fail_pps"] <= result["ndr_pps"] * (1 + resolution / 100) + 1
    coarser = ndr.run(params(resolution_pct=resolution * 2), Device(capacity=50_000))[1]
    assert len(coarser) <= len(history)


def test_loss_threshold_lets_a_small_loss_pass():
    # 1 % loss allowed: a DUT of 100,000 pps passes up to 101,010 pps offered.
    result, _ = ndr.run(params(loss_pct=1.0, resolution_pct=0.5), Device(capacity=100_000))
    assert 100_000 < result["ndr_pps"] <= 101_011
    assert 0 < result["confirm_lost"] <= result["confirm_sent"] * 0.01
    assert result["loss_threshold_pct"] == 1.0


def test_a_failed_confirmation_steps_down_with_long_trials_and_confirms_again():
    dut = Device(capacity=100_000, long_capacity=80_000)
    result, history = ndr.run(params(), dut)
    kinds = [e["kind"] for e in history]
    first_confirm = kinds.index("confirm")
    assert set(kinds[first_confirm:]) == {"confirm"}, "after a failed confirmation, only long trials"
    assert history[first_confirm]["outcome"] == "loss"
    assert 80_000 / 1.01 <= result["ndr_pps"] <= 80_000
    last_pass = max((e for e in history if e["kind"] == "confirm" and e["outcome"] == "pass"),
                    key=lambda e: e["pps"])
    assert last_pass["pps"] == result["ndr_pps"] and result["confirm_lost"] == 0
    assert result["confirm_sent"] == last_pass["sent"] and result["confirm_s"] == 60
    assert result["fail_kind"] == "confirm" and result["fail_pps"] <= result["ndr_pps"] * 1.01
    assert result["limited_by"] == "dut"
    # The step down goes straight to what the failed trial delivered (80,000 pps here).
    # The step down goes straight to what the failed trial delivered (80,000 pps here), then
    # one resolution step up, which fails: three long trials in all.
    assert [e["pps"] for e in history[first_confirm + 1:]] == [80_000, 80_800]
    assert result["ndr_pps"] == 80_000 and result["confirmations"] == 3


def test_step_down_widens_until_a_long_trial_passes():
    # A DUT that delivers its rate in long trials but still loses 1 packet per second
    # above 50,000 pps: the delivered rate gives no hint, the step doubles.
    class Leaky(Device):
        def __call__(self, kind, pps, duration_s):
            r = super().__call__(kind, pps, duration_s)
            if duration_s > self.probe_s and pps > 50_000:
                r["lost"] = duration_s
            return r

    dut = Leaky(capacity=100_000)
    result, history = ndr.run(params(), dut)
    longs = [e["pps"] for e in history if e["kind"] == "confirm"]
    steps = [1 - b / a for a, b in zip(longs, longs[1:])]
    assert steps[0] == pytest.approx(0.01, abs=1e-4) and steps[1] == pytest.approx(0.02, abs=1e-4)
    assert 50_000 / 1.01 <= result["ndr_pps"] <= 50_000


def test_a_source_that_cannot_offer_the_rate_is_a_failure_of_the_source():
    dut = Device(capacity=10**9, source_pps=300_000)
    result, history = ndr.run(params(), dut)
    first = history[0]
    assert first["pps"] == 1_000_000 and first["outcome"] == "source" and first["lost"] == 0, \
        "lost nothing, yet not a pass: the rate was never offered"
    assert 300_000 / 1.01 <= result["ndr_pps"] <= 300_000
    assert result["limited_by"] == "source" and result["fail_outcome"] == "source"


def test_the_source_limit_is_reported_even_when_the_dut_would_lose_just_above():
    # Source and DUT both near 300,000 pps; the failure just above the answer decides.
    result, _ = ndr.run(params(), Device(capacity=400_000, source_pps=300_000))
    assert result["limited_by"] == "source"
    result, _ = ndr.run(params(), Device(capacity=200_000, source_pps=300_000))
    assert result["limited_by"] == "dut"


def test_a_maximum_that_passes_is_the_range_limit():
    dut = Device(capacity=10**9)
    result, history = ndr.run(params(max_pps=20_000), dut)
    assert dut.trials == [("probe", 20_000, 5), ("confirm", 20_000, 60)]
    assert result["ndr_pps"] == 20_000 and result["limited_by"] == "range"
    assert result["fail_pps"] is None and result["probes"] == 1 and result["confirmations"] == 1


def test_a_minimum_that_fails_means_no_rate():
    dut = Device(capacity=500)
    result, history = ndr.run(params(), dut)
    assert [t[:2] for t in dut.trials] == [("probe", 1_000_000), ("probe", 1000)]
    assert result["ndr_pps"] is None and result["limited_by"] == "range"
    assert result["fail_pps"] == 1000 and result["confirm_sent"] is None


def test_a_confirmation_that_fails_down_to_the_minimum_means_no_rate():
    dut = Device(capacity=2000, long_capacity=500)
    result, history = ndr.run(params(), dut)
    assert result["ndr_pps"] is None and result["limited_by"] == "range"
    longs = [e for e in history if e["kind"] == "confirm"]
    assert longs[-1]["pps"] == 1000 and longs[-1]["outcome"] == "loss"
    assert all(e["outcome"] != "pass" for e in longs)


def test_min_equal_to_max_is_one_probe_and_its_confirmation():
    result, history = ndr.run(params(min_pps=5000, max_pps=5000), Device(capacity=10_000))
    assert [(e["kind"], e["pps"]) for e in history] == [("probe", 5000), ("confirm", 5000)]
    assert result["ndr_pps"] == 5000 and result["limited_by"] == "range"
    result, history = ndr.run(params(min_pps=5000, max_pps=5000), Device(capacity=1000))
    assert len(history) == 1 and result["ndr_pps"] is None


def test_every_rate_is_tried_once_and_the_search_ends():
    for cap in (1001, 1500, 99_999, 999_999, 3_000_000):
        for long_cap in (cap, cap // 2, 900):
            result, history = ndr.run(params(), Device(capacity=cap, long_capacity=long_cap))
            tried = [(e["kind"], e["pps"]) for e in history]
            assert len(tried) == len(set(tried)), (cap, long_cap, tried)
            if result["ndr_pps"] is not None:
                assert result["ndr_pps"] <= min(cap, long_cap, 1_000_000)


def test_judge_reads_summary_rows_as_written_to_csv_or_json():
    assert ndr.judge({"sent": 100, "lost": 0, "rate_sustained": True}, 0) == "pass"
    assert ndr.judge({"sent": "100", "lost": "0", "rate_sustained": "True"}, 0) == "pass"
    assert ndr.judge({"sent": 100, "lost": 1, "rate_sustained": True}, 0) == "loss"
    assert ndr.judge({"sent": 100, "lost": 1, "rate_sustained": True}, 1.0) == "pass"
    assert ndr.judge({"sent": 100, "lost": 0, "rate_sustained": False}, 0) == "source"
    assert ndr.judge({"sent": 0, "lost": 0, "rate_sustained": True}, 0) == "source"
    e = ndr.entry("probe", 1000, 2, {"sent": 2000, "lost": 20, "rate_sustained": True}, 0)
    assert e["loss_pct"] == 1.0 and e["delivered_pps"] == 990.0 and e["outcome"] == "loss"


def test_search_names_and_trial_points_follow_the_configuration():
    from xdplab import trials

    s = validate_config({"packet_size": [18, 1458], "warmup_s": 0}).values
    p = ndr.Params.from_settings(s)
    names = ndr.searches(s, p)
    assert len(names) == 2 and all(__import__("re").fullmatch(ndr.SEARCH_PATTERN, n) for n in names)
    for name, base in names.items():
        point = ndr.trial_point(base, 5000, p.probe_s)
        assert point == trials.point_name(trials.point_settings_of(
            dict(s, duration_s=p.probe_s), {"target_pps": 5000, "packet_size": base["packet_size"]}))
        assert trials.settings_of_point(point, s)["duration_s"] == p.probe_s
    # keep_pcap does not change the trials' numbers: same searches; the resolution does.
    assert ndr.searches(dict(s, keep_pcap=False), p) == names
    other = ndr.Params.from_settings(dict(s, ndr_resolution_pct=2))
    assert set(ndr.searches(s, other)).isdisjoint(names)


def test_searches_of_users_programs_are_named_by_program_and_need_the_collector_counting():
    import re

    from xdplab import trials

    s = validate_config({"program": ["programs/pass_all.bpf.c", "programs/busy_pass.bpf.c"],
                         "observe": ["full", "off"], "warmup_s": 0}).values
    p = ndr.Params.from_settings(s)
    names = ndr.searches(s, p)
    assert len(names) == 4 and all(re.fullmatch(ndr.SEARCH_PATTERN, n) for n in names)
    assert sorted(n.split("_prog~")[1].split("_cfg~")[0] for n in names) == [
        "busy-pass", "busy-pass", "pass-all", "pass-all"]
    for name, base in names.items():
        # A search's trials are the program's trials: the same point name as the grid's.
        point = ndr.trial_point(base, 5000, p.probe_s)
        assert trials.parse_point(point)["program_slug"] in name
        why = ndr.unsearchable(base)
        assert (why is None) == (base["observe"] == "full"), (name, why)
        if why:
            assert "observe: off" in why and base["program"] in why
        row = ndr.table_row({"result": {"ndr_pps": 1000}, "settings": base, "params": p.as_dict(),
                             "search": name})
        assert row["program"] == base["program"] and row["observe"] == base["observe"]
    assert "collector: off" in ndr.unsearchable({"collector": "off", "program": "collector"})
    assert ndr.unsearchable({"collector": "features", "program": "collector"}) is None


def test_config_keys_take_decimals_and_refuse_nonsense():
    v = validate_config({"ndr_loss_pct": "0.5", "ndr_resolution_pct": 0.25}).values
    assert v["ndr_loss_pct"] == 0.5 and v["ndr_resolution_pct"] == 0.25
    assert validate_config({}).values["ndr_loss_pct"] == 0.0
    for bad in ({"ndr_loss_pct": "lots"}, {"ndr_loss_pct": 101}, {"ndr_resolution_pct": 0},
                {"ndr_probe_s": 0}, {"ndr_loss_pct": True}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            validate_config(bad)
    assert ndr.Params.from_settings(dict(validate_config({}).values, ndr_min_pps=5000,
                                         ndr_max_pps=4000)).problems()


def test_table_rows_carry_the_result_its_settings_and_units():
    p = params(max_pps=200_000)
    result, history = ndr.run(p, Device(capacity=150_000))
    settings = {"packet_size": 18, "xdp_mode": "native", "collector": "features", "pattern": "constant"}
    step = {"search": "s", "params": p.as_dict(), "settings": settings, "history": history, "result": result}
    row = ndr.table_row(step)
    assert list(row) == ndr.COLUMNS and row["ndr_pps"] == result["ndr_pps"]
    assert row["ndr_wire_mbps"] == round(row["ndr_pps"] * 84 * 8 / 1e6, 3)  # 64-byte frames: L1
    assert row["ndr_l2_mbps"] == round(row["ndr_pps"] * 64 * 8 / 1e6, 3)  # L2: the frame alone
    assert row["min_pps"] == 1000 and row["probe_s"] == 5 and row["packet_size"] == 18
    assert row["frame_size"] == 64 and list(row)[:3] == ["packet_size", "frame_size", "ndr_pps"]
    probes = ndr.probe_rows(step)
    assert [r["target_pps"] for r in probes] == [e["pps"] for e in history]
    assert all(list(r) == ndr.PROBE_COLUMNS for r in probes)
    assert {r["frame_size"] for r in probes} == {64}
