"""Trials and the grid (workflow/xdplab/trials.py): directory names keyed by every setting
that changes numbers, the grid's dimensions, the seeded run order, trials on disk."""

import hashlib
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


# -- the program under test ----------------------------------------------------------------

# Names computed with trials.py before `program` existed: a collector trial keeps its
# directory (and so its results) across the change.
PINNED = [
    ({}, ["pps~10000_size~1458_dur~60_xdp~native_coll~features_pat~constant_cfg~056aedeb"]),
    ({"target_pps": [1000, 20000], "packet_size": [18, 1458], "duration_s": 5},
     ["pps~1000_size~18_dur~5_xdp~native_coll~features_pat~constant_cfg~056aedeb",
      "pps~1000_size~1458_dur~5_xdp~native_coll~features_pat~constant_cfg~056aedeb",
      "pps~20000_size~18_dur~5_xdp~native_coll~features_pat~constant_cfg~056aedeb",
      "pps~20000_size~1458_dur~5_xdp~native_coll~features_pat~constant_cfg~056aedeb"]),
    ({"collector": ["counters", "off"], "xdp_mode": "generic", "pattern": "burst", "burst_size": 8},
     ["pps~10000_size~1458_dur~60_xdp~generic_coll~counters_pat~burst_cfg~5bb1e597",
      "pps~10000_size~1458_dur~60_xdp~generic_coll~off_pat~burst_cfg~5bb1e597"]),
    ({"pattern": "poisson", "seed": 7, "threads": 1, "port": 9999, "warmup_s": 0, "send_path": "packet",
      "mtu": 3000}, ["pps~10000_size~1458_dur~60_xdp~native_coll~features_pat~poisson_cfg~fa42da9c"]),
    ({"generator": "trafgen", "duration_s": 1},
     ["pps~10000_size~1458_dur~1_xdp~native_coll~features_pat~constant_cfg~a690e5b7"]),
]


@pytest.mark.parametrize("raw,names", PINNED)
def test_collector_trials_keep_their_names(raw, names):
    assert [t["point"] for t in trials.trials(settings(**raw))] == names
    # Whatever observe says: it does not apply to the collector.
    assert [t["point"] for t in trials.trials(settings(**raw, observe=["verdicts", "off"]))] == names


@pytest.fixture
def programs(tmp_path, monkeypatch):
    """A working directory with programs/a.bpf.c, programs/b.bpf.c, other/a.bpf.c and an object."""
    monkeypatch.chdir(tmp_path)
    for path, text in (("programs/a.bpf.c", "// a\n"), ("programs/b.bpf.c", "// b\n"),
                       ("other/a.bpf.c", "// another a\n")):
        Path(path).parent.mkdir(exist_ok=True)
        Path(path).write_text(text)
    head = b"\x7fELF\x02\x01\x01" + bytes(11) + (247).to_bytes(2, "little")
    Path("programs/lb.o").write_bytes(head + bytes(44))
    return tmp_path


def test_program_kinds():
    assert [trials.program_kind(p) for p in ("collector", "attached", "x/a.bpf.c", "a.c", "/x/lb.o")] == \
        ["collector", "attached", "source", "source", "object"]
    with pytest.raises(ValueError, match=r"'a\.py' is not a program.*\.bpf\.c or \.c.*\.o"):
        trials.program_kind("a.py")


@pytest.mark.parametrize("program,slug", [
    ("programs/drop_rule.bpf.c", "drop-rule"), ("x.c", "x"), ("/opt/lb.v2.o", "lb-v2"),
    ("attached", "attached"), ("a_very_long_program_name_indeed.bpf.c", "a-very-long-program-name"),
    ("__.o", "program")])
def test_a_program_slug_is_readable_and_short(program, slug):
    assert trials.program_slug(program) == slug
    assert re.fullmatch(trials.SLUG_RE, slug)


def test_a_program_point_name_has_its_slug_and_parses_back(programs):
    s = settings(program="programs/a.bpf.c")
    (t,) = trials.trials(s)
    assert t["point"].startswith("pps~10000_size~1458_dur~60_xdp~native_coll~features_pat~constant"
                                 "_prog~a_cfg~")
    assert re.fullmatch(trials.POINT_PATTERN, t["point"])
    assert trials.parse_point(t["point"])["program_slug"] == "a"
    assert trials.settings_of_point(t["point"], s) == t["settings"]
    assert t["settings"]["program_sha256"] == hashlib.sha256(b"// a\n").hexdigest()
    assert (t["settings"]["program_name"], t["settings"]["program_globals"], t["settings"]["observe"]) == \
        ("", {}, "full")
    collector_point = trials.trials(settings())[0]["point"]
    assert trials.parse_point(collector_point)["program_slug"] is None


def test_collector_and_attached_points_carry_no_file_name_or_globals(programs):
    s = settings(program=["collector", "attached"], observe="verdicts")
    collector, attached = (t["settings"] for t in trials.trials(s))
    assert {k: collector[k] for k in trials.PROGRAM_SETTINGS} == {
        "program": "collector", "program_sha256": None, "program_name": None, "program_globals": None,
        "observe": None}
    assert {k: attached[k] for k in trials.PROGRAM_SETTINGS} == {
        "program": "attached", "program_sha256": None, "program_name": None, "program_globals": None,
        "observe": "off"}      # the user's loader holds the interface: observed from outside only
    assert attached["collector"] == "off"


def test_collector_and_one_program_under_two_observers_are_three_points(programs):
    s = settings(program=["collector", "programs/a.bpf.c"], observe=["full", "off"], repeats=2)
    points = trials.grid_points(s)
    assert [(p["program"], p["observe"]) for p in points] == [
        ("collector", None), ("programs/a.bpf.c", "full"), ("programs/a.bpf.c", "off")]
    names = [trials.point_name(p) for p in points]
    assert len(set(names)) == 3 and len(trials.trials(s)) == 6
    assert names[0] == PINNED[0][1][0]
    for name, p in zip(names, points):
        assert trials.settings_of_point(name, s) == p


def test_two_programs_get_their_own_directories(programs):
    s = settings(program=["programs/a.bpf.c", "programs/b.bpf.c", "other/a.bpf.c", "programs/lb.o"])
    names = [t["point"] for t in trials.trials(s)]
    assert len(set(names)) == 4
    assert [trials.parse_point(n)["program_slug"] for n in names] == ["a", "b", "a", "lb"]
    # Two programs of one slug are told apart by their digests.
    assert [trials.settings_of_point(n, s)["program"] for n in names] == s["program"]


@pytest.mark.parametrize("key,value", [("program_name", "xdp_main"), ("program_globals", {"drop_port": 1}),
                                       ("program_globals", {"drop_port": True}), ("observe", "verdicts")])
def test_a_program_setting_changes_the_digest(programs, key, value):
    a = trials.trials(settings(program="programs/a.bpf.c"))[0]["point"]
    b = trials.trials(settings(program="programs/a.bpf.c", **{key: value}))[0]["point"]
    if key == "observe":   # what the collector does around the program: readable as coll~
        assert "_coll~features_" in a and "_coll~counters_" in b
        b_readable = b.split("_cfg~")[0].replace("_coll~counters_", "_coll~features_")
    else:
        b_readable = b.split("_cfg~")[0]
    assert a != b and a.split("_cfg~")[0] == b_readable
    with pytest.raises(trials.UnknownPoint, match="belongs to other settings"):
        trials.settings_of_point(a, settings(program="programs/a.bpf.c", **{key: value}))


def test_a_program_is_not_multiplied_by_the_collector_dimension(programs):
    s = settings(program=["collector", "programs/a.bpf.c", "attached"],
                 collector=["features", "counters"], observe=["full", "off"])
    names = [t["point"] for t in trials.trials(s)]
    assert len(names) == len(set(names))
    progs = [trials.parse_point(n) for n in names]
    # the collector twice (its two collectors), the program once per observe, attached once
    assert sorted((p["program_slug"] or "", p["collector"]) for p in progs) == [
        ("", "counters"), ("", "features"), ("a", "features"), ("a", "off"), ("attached", "off")]


def test_program_settings_leave_the_collector_points_alone(programs):
    plain = trials.trials(settings())[0]["point"]
    s = settings(program=["collector", "programs/a.bpf.c"], program_name="xdp_main",
                 program_globals={"drop_port": 1}, observe="off")
    assert trials.trials(s)[0]["point"] == plain


def test_editing_a_program_gives_its_trials_a_new_directory(programs):
    s = settings(program="programs/a.bpf.c")
    before = trials.trials(s)[0]["point"]
    Path("programs/a.bpf.c").write_text("// a, version 2: another length\n")
    after = trials.trials(s)[0]["point"]
    assert before != after and before.split("_cfg~")[0] == after.split("_cfg~")[0]
    assert trials.settings_of_point(after, s)["program_sha256"] == \
        hashlib.sha256(b"// a, version 2: another length\n").hexdigest()
    with pytest.raises(trials.UnknownPoint, match="belongs to other settings"):
        trials.settings_of_point(before, s)


def test_a_program_point_of_another_configuration_is_refused(programs):
    name = trials.trials(settings(program="programs/b.bpf.c"))[0]["point"]
    with pytest.raises(trials.UnknownPoint, match="no program of this configuration has the slug 'b'"):
        trials.settings_of_point(name, settings(program="programs/a.bpf.c"))


def test_the_trial_record_names_the_program_and_observer(programs):
    s = settings(program=["collector", "programs/a.bpf.c"])
    records = [trials.trial_record("e", t["settings"], t["rep"]) for t in trials.trials(s)]
    assert [(r["program"], r["observe"]) for r in records] == [("collector", None),
                                                               ("programs/a.bpf.c", "full")]


def test_a_probe_of_a_program_is_a_point_of_the_same_settings(programs):
    s = settings(program="programs/a.bpf.c", duration_s=60)
    (base,) = trials.grid_points(dict(s, target_pps=[1]))
    name = trials.point_name(dict(base, target_pps=12345, duration_s=5))
    assert "_prog~a_" in name and trials.settings_of_point(name, s)["target_pps"] == 12345


def test_program_trials_on_disk_are_listed(programs, capsys):
    s = settings(program=["collector", "programs/a.bpf.c"])
    for t in trials.trials(s):
        d = Path(trials.trial_dir("res", t["point"], t["rep"]))
        d.mkdir(parents=True)
        (d / "trial.json").write_text("{}")
    assert [r["program_slug"] for r in trials.on_disk("res")] == [None, "a"]
    assert trials.main(["res"]) == 0
    out = capsys.readouterr().out
    assert "(collector)" in out and "2 trial(s)" in out
