"""The search of `snakemake search` (xdplab.mlr: FD.io CSIT's MLRsearch 1.2.1 behind xdplab's
measurer) against simulated devices whose answer is known: a capacity, a source that falls
short, a loss band (loss inversion), occasional loss (the exceed ratio), a Min Load that loses."""

import random

import pytest

from xdplab import mlr

BASE = dict(search_loss_pct=[0, 0.5], search_exceed_pct=50, search_width_pct=0.5, search_initial_trial_s=1,
            search_final_trial_s=1, search_duration_sum_s=21, ndr_min_pps=1000, ndr_max_pps=1_000_000)


def params(**changes):
    return mlr.Params.from_settings(dict(BASE, **changes))


def device(capacity=50_000, source_max=10**9, lossy=lambda pps, rep: 0):
    """run_trial of a DUT forwarding up to `capacity` pps (the rest lost) behind a source that
    offers at most `source_max` pps; `lossy(pps, rep)` adds packets lost.  Counts the calls."""
    calls = []

    def run(pps, duration_s, rep):
        calls.append((pps, duration_s, rep))
        if pps > source_max:
            return {"sent": source_max * duration_s, "lost": 0, "rate_sustained": False,
                    "achieved_pps": source_max}, {}
        sent = pps * duration_s
        lost = min(sent, max(0, (pps - capacity) * duration_s) + lossy(pps, rep))
        return {"sent": sent, "lost": lost, "rate_sustained": True, "achieved_pps": pps,
                "loss_where": "dut_nic" if lost else ""}, {"cached": False}

    run.calls = calls
    return run


def goals(result):
    return {g["goal"]: g for g in result["goals"]}


def test_ndr_is_within_the_width_below_the_capacity_and_pdr_at_or_above_it():
    p = params()
    r = mlr.search(p, device(capacity=50_000))
    g = goals(r)
    ndr, pdr = g["NDR"], g["PDR"]
    for x in (ndr, pdr):
        assert x["result"] == "regular" and x["limited_by"] == "dut", x
        assert (x["upper_bound_pps"] - x["lower_bound_pps"]) / x["upper_bound_pps"] * 100 <= 0.5 + 1e-9, x
    assert 50_000 / 1.005 <= ndr["lower_bound_pps"] <= 50_000 < ndr["upper_bound_pps"], ndr
    assert pdr["lower_bound_pps"] >= ndr["lower_bound_pps"]
    # PDR allows 0.5 % loss: its bound lies above the capacity, below capacity / (1 - 0.005).
    assert pdr["lower_bound_pps"] <= 50_000 / (1 - 0.005) + 1
    # Every trial counts towards every goal: one list of trials, each a whole-pps, whole-second trial.
    assert all(isinstance(t["pps"], int) and t["duration_s"] == 1 for t in r["trials"])
    assert r["trials"][0]["pps"] == 1_000_000   # Max Load first, as CSIT's controller starts


def test_a_source_that_falls_short_limits_the_search_and_is_never_counted_as_dut_loss():
    run = device(capacity=50_000, source_max=30_000)
    r = mlr.search(params(), run)
    for g in r["goals"]:
        # Below the source's ceiling the DUT lost nothing: no upper bound, the source limited it.
        assert g["upper_bound_pps"] is None and g["limited_by"] == "source", g
        assert g["lower_bound_pps"] <= 30_000 and g["source_offered_pps"] == 30_000, g
        assert g["result"] == "irregular" and "the source limited the search" in g["irregular_why"]
    assert r["passes"] == 2 and r["max_pps_searched"] <= 30_000
    # The trials before the limit were read again, not run again: each trial ran once.
    assert len(run.calls) == len(set(run.calls))


def test_a_calibrated_source_ceiling_caps_max_load_and_no_trial_goes_above_it():
    # A pool's testbed whose source can send 30,000 pps (its calibration): the search starts
    # there, not at ndr_max_pps, and a DUT that forwards more is reported limited by the source.
    run = device(capacity=50_000, source_max=30_000)
    notes = []
    r = mlr.search(params(), run, notes.append, source_ceiling_pps=30_000.7)
    assert max(pps for pps, _, _ in run.calls) == 30_000 and r["passes"] == 1
    for g in r["goals"]:
        assert g["upper_bound_pps"] is None and g["lower_bound_pps"] == 30_000, g
        assert g["limited_by"] == "source" and "calibrated source ceiling" in g["irregular_why"], g
    assert r["source_ceiling_pps"] == 30_000.7 and any("calibrated source ceiling" in n for n in notes)
    # Below the ceiling the DUT's own limit is found as without one.
    g = goals(mlr.search(params(), device(capacity=20_000), source_ceiling_pps=30_000))["NDR"]
    assert g["limited_by"] == "dut" and 20_000 / 1.005 <= g["lower_bound_pps"] <= 20_000, g
    # A ceiling at or below Min Load: nothing is run, and the result says why.
    run = device()
    r = mlr.search(params(), run, source_ceiling_pps=900)
    assert run.calls == [] and all(g["limited_by"] == "source" and "at or below Min Load" in g["irregular_why"]
                                   for g in r["goals"])


def test_a_source_that_cannot_offer_even_min_load_says_so():
    r = mlr.search(params(), device(capacity=50_000, source_max=800))
    for g in r["goals"]:
        assert g["lower_bound_pps"] is None and g["limited_by"] == "source", g
        assert "could not offer" in g["irregular_why"]


def test_min_load_that_loses_is_an_irregular_result_not_an_error():
    r = mlr.search(params(), device(capacity=500))
    for g in r["goals"]:
        assert g["lower_bound_pps"] is None and g["upper_bound_pps"] == 1000, g
        assert g["result"] == "irregular" and g["limited_by"] == "range", g


def test_max_load_that_meets_the_goal_is_an_irregular_result():
    r = mlr.search(params(ndr_max_pps=20_000), device(capacity=50_000))
    for g in r["goals"]:
        assert g["lower_bound_pps"] == 20_000 and g["upper_bound_pps"] is None, g
        assert g["limited_by"] == "range" and "Max Load (20000 pps) met the goal" in g["irregular_why"]


def test_loss_inversion_keeps_the_lower_bound_below_the_relevant_upper_bound():
    """A DUT that forwards 80,000 pps for the search's first 8 trials and 70,000 after (a
    neighbour woke up): loads near 80,000 passed, and later loads near 70,000 lose, a higher
    load having lost less than a lower one.  As RFC 9971 says, the relevant upper bound is
    the lowest upper bound and the relevant lower bound is below it: the loads that passed
    above it are not reported."""
    calls = []

    def run(pps, duration_s, rep):
        calls.append(pps)
        capacity = 80_000 if len(calls) <= 8 else 70_000
        return {"sent": pps * duration_s, "lost": max(0, (pps - capacity) * duration_s), "rate_sustained": True,
                "achieved_pps": pps}, {}

    r = mlr.search(params(), run)
    ndr = goals(r)["NDR"]
    inverted = [t for t in r["trials"] if t["pps"] > ndr["upper_bound_pps"] and t["lost"] == 0]
    assert inverted, "the search never met the inversion"
    assert 70_000 / 1.005 <= ndr["lower_bound_pps"] < ndr["upper_bound_pps"] <= 70_000 * 1.01, ndr


def test_the_exceed_ratio_tolerates_occasional_loss():
    """Below its capacity the device loses one packet in one trial out of four: with the
    exceed ratio at 50 % the NDR stays near the capacity; at 0 % a single bad trial at a load
    makes it an upper bound, so the NDR falls far below."""
    rnd = random.Random(7)
    flaky = {}

    def lossy(pps, rep):
        return flaky.setdefault((pps, rep), 1 if rnd.random() < 0.25 else 0)

    tolerant = goals(mlr.search(params(search_loss_pct=[0]), device(capacity=50_000, lossy=lossy)))["NDR"]
    strict = goals(mlr.search(params(search_loss_pct=[0], search_exceed_pct=0),
                              device(capacity=50_000, lossy=lossy)))["NDR"]
    assert tolerant["lower_bound_pps"] >= 50_000 / 1.02, tolerant
    assert strict["lower_bound_pps"] is None or strict["lower_bound_pps"] < tolerant["lower_bound_pps"], (strict,
                                                                                                         tolerant)


def test_longer_final_trials_are_whole_seconds_and_the_bounds_rest_on_them():
    r = mlr.search(params(search_final_trial_s=5, search_duration_sum_s=10), device(capacity=50_000))
    durations = {t["duration_s"] for t in r["trials"]}
    assert durations <= {1, 2, 3, 4, 5} and 5 in durations and 1 in durations, durations
    ndr = goals(r)["NDR"]
    assert any(t["pps"] == ndr["lower_bound_pps"] and t["duration_s"] == 5 for t in r["trials"])


@pytest.mark.parametrize("d, whole", [(1.0, 1), (1.0000000001, 1), (2.236, 3), (0.2, 1), (5, 5)])
def test_trial_seconds_round_up(d, whole):
    assert mlr.trial_seconds(d) == whole


def test_goal_names_and_refusals():
    assert [g.name for g in params().goals] == ["NDR", "PDR"]
    assert [g.name for g in params(search_loss_pct=[0, 0.1, 0.5]).goals] == ["NDR", "PDR 0.1 %", "PDR 0.5 %"]
    assert [g.name for g in params(search_loss_pct=0.5).goals] == ["PDR"]
    assert params(ndr_min_pps=5000, ndr_max_pps=5000).problems()
    assert params(search_initial_trial_s=5, search_final_trial_s=1).problems()
    assert params(search_duration_sum_s=2, search_final_trial_s=5).problems()
    assert params().problems() == []


def test_table_rows_carry_the_rfc_terms_and_bit_rates():
    p = params()
    r = mlr.search(p, device(capacity=50_000))
    record = {"search": "s", "settings": {"packet_size": 1458, "xdp_mode": "native", "collector": "features",
                                          "pattern": "constant", "program": "collector", "observe": "full"},
              "params": p.as_dict(), "result": r, "wall_s": 12.5}
    rows = mlr.table_rows(record)
    assert [row["goal"] for row in rows] == ["NDR", "PDR"]
    ndr = rows[0]
    assert ndr["frame_size"] == 1504 and ndr["trials"] == len(r["trials"]) and ndr["search_wall_s"] == 12.5
    assert ndr["lower_bound_l2_mbps"] == pytest.approx(ndr["lower_bound_pps"] * 1504 * 8 / 1e6, rel=1e-3)
    assert set(rows[0]) == set(mlr.COLUMNS)
    trials = mlr.trial_rows(record)
    assert len(trials) == len(r["trials"]) and set(trials[0]) == set(mlr.TRIAL_COLUMNS)
