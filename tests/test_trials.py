"""Trials and the grid (workflow/xdplab/trials.py): directory names keyed by every setting
that changes numbers, the grid's dimensions, the seeded run order, trials on disk."""

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab import trials  # noqa: E402
from xdplab.config import validate_config  # noqa: E402


def settings(**kw):
    return validate_config(kw).values


def test_a_point_name_is_readable_and_parses_back():
    s = settings(target_pps=20000, packet_size=64, duration_s=5)
    (t,) = trials.trials(s)
    assert t["point"].startswith("pps~20000_size~64_dur~5_xdp~native_coll~features_pat~constant_cfg~")
    assert re.fullmatch(trials.POINT_PATTERN, t["point"])
    parsed = trials.parse_point(t["point"])
    assert (parsed["target_pps"], parsed["packet_size"], parsed["duration_s"]) == (20000, 64, 5)
    assert trials.settings_of_point(t["point"], s) == t["settings"]


@pytest.mark.parametrize("key,value", [("threads", 1), ("port", 9999), ("warmup_s", 0),
                                       ("send_path", "packet"), ("mtu", 3000)])
def test_a_setting_that_changes_numbers_changes_the_name(key, value):
    a = trials.trials(settings())[0]["point"]
    b = trials.trials(settings(**{key: value}))[0]["point"]
    assert a != b and a.split("_cfg~")[0] == b.split("_cfg~")[0]


@pytest.mark.parametrize("key,value", [("keep_pcap", False), ("keep_features", False),
                                       ("watchdog_grace_s", 30), ("stability_pct", 10),
                                       ("repeats", 3), ("experiment", "other")])
def test_a_setting_that_does_not_change_numbers_keeps_the_name(key, value):
    assert trials.trials(settings())[0]["point"] == trials.trials(settings(**{key: value}))[0]["point"]


def test_a_pattern_knob_counts_only_for_its_pattern():
    base = trials.trials(settings())[0]["point"]
    assert trials.trials(settings(burst_size=8))[0]["point"] == base
    assert trials.trials(settings(pattern="burst", burst_size=8))[0]["point"] != \
        trials.trials(settings(pattern="burst", burst_size=16))[0]["point"]


def test_the_grid_is_every_combination_times_repeats():
    s = settings(target_pps=[1000, 2000], packet_size=[64, 1458], xdp_mode=["native", "generic"],
                 collector=["features", "counters", "off"], pattern=["constant", "poisson"], repeats=2)
    ts = trials.trials(s)
    assert len(ts) == 2 * 2 * 2 * 3 * 2 * 2
    assert len({(t["point"], t["rep"]) for t in ts}) == len(ts)
    assert {t["settings"]["collector"] for t in ts} == {"features", "counters", "off"}


def test_a_point_of_other_settings_is_refused():
    point = trials.trials(settings(threads=1))[0]["point"]
    with pytest.raises(trials.UnknownPoint, match="belongs to other settings"):
        trials.settings_of_point(point, settings(threads=2))


def test_a_probe_of_another_duration_is_a_point_of_the_same_settings():
    s = settings(duration_s=60)
    probe = trials.point_settings_of(dict(s, duration_s=5), {"target_pps": 12345, "packet_size": 64})
    name = trials.point_name(probe)
    assert "_dur~5_" in name and trials.settings_of_point(name, s)["target_pps"] == 12345


def test_the_run_order_is_shuffled_by_the_seed_and_repeatable():
    s = settings(target_pps=[1000, 2000, 3000, 4000], repeats=3)
    ts = trials.trials(s)
    a, b = trials.run_order(ts, 1), trials.run_order(ts, 1)
    assert a == b and sorted(map(str, a)) == sorted(map(str, ts))
    assert a != ts, "twelve trials in their grid order: the shuffle did nothing"
    assert trials.run_order(ts, 2) != a


def test_every_trial_on_disk_is_listed_with_its_state(tmp_path, capsys):
    s = settings(target_pps=[1000, 2000])
    for t, state in zip(trials.trials(s), ("trial.json", "failed.json")):
        d = Path(trials.trial_dir(str(tmp_path), t["point"], t["rep"]))
        d.mkdir(parents=True)
        (d / state).write_text("{}")
    (tmp_path / "trials" / "not-a-point" / "rep~0").mkdir(parents=True)
    found = trials.on_disk(str(tmp_path))
    assert [(r["target_pps"], r["state"]) for r in found] == [(1000, "done"), (2000, "failed")]
    assert trials.main([str(tmp_path)]) == 0
    assert "2 trial(s)" in capsys.readouterr().out
