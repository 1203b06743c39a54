"""Trials and the grid (workflow/xdplab/trials.py): directory names keyed by every setting
that changes numbers, the grid's dimensions, the seeded run order, trials on disk."""

import hashlib
import json
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
# directory (and so its results) across the change.  send_path udp was the default then;
# the default auto (issue 21) sends with the packet path where it can, a new name.
PINNED = [
    ({}, ["pps~10000_size~1458_dur~60_xdp~native_coll~features_pat~constant_cfg~8fe3e516"]),
    ({"send_path": "udp"}, ["pps~10000_size~1458_dur~60_xdp~native_coll~features_pat~constant_cfg~056aedeb"]),
    ({"target_pps": [1000, 20000], "packet_size": [18, 1458], "duration_s": 5, "send_path": "udp"},
     ["pps~1000_size~18_dur~5_xdp~native_coll~features_pat~constant_cfg~056aedeb",
      "pps~1000_size~1458_dur~5_xdp~native_coll~features_pat~constant_cfg~056aedeb",
      "pps~20000_size~18_dur~5_xdp~native_coll~features_pat~constant_cfg~056aedeb",
      "pps~20000_size~1458_dur~5_xdp~native_coll~features_pat~constant_cfg~056aedeb"]),
    ({"collector": ["counters", "off"], "xdp_mode": "generic", "pattern": "burst", "burst_size": 8,
      "send_path": "udp"},
     ["pps~10000_size~1458_dur~60_xdp~generic_coll~counters_pat~burst_cfg~5bb1e597",
      "pps~10000_size~1458_dur~60_xdp~generic_coll~off_pat~burst_cfg~5bb1e597"]),
    ({"pattern": "poisson", "seed": 7, "threads": 1, "port": 9999, "warmup_s": 0, "send_path": "packet",
      "mtu": 3000}, ["pps~10000_size~1458_dur~60_xdp~native_coll~features_pat~poisson_cfg~fa42da9c"]),
    ({"generator": "trafgen", "duration_s": 1, "send_path": "udp"},
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


# -- a lab's identity: what changes numbers, never credentials ------------------------------

def lab_config(tmp_path, creds="a", **over):
    """A lab of two sources and one DUT (as config/lab.example.yaml), its key, known_hosts
    and token files under tmp_path/<creds>/; `over` sets sources.<i>.<key> or dut.<key>."""
    d = tmp_path / creds
    d.mkdir(exist_ok=True)
    for name in ("id_ed25519", "known_hosts", "agent.token"):
        (d / name).write_text(f"{creds} {name}\n")
    lab = {"sources": [{"host": f"192.0.2.{20 + i}", "user": "root", "port": 22,
                        "key_file": str(d / "id_ed25519"), "known_hosts": str(d / "known_hosts"),
                        "iface": "eth1", "address": "auto", "python": "python3",
                        "dut_iface": f"enp5s{i}"} for i in range(2)],
           "dut": {"agent": "http://192.0.2.10:7717", "token_file": str(d / "agent.token"),
                   "ifaces": ["enp5s0", "enp5s1"]}}
    for path, value in over.items():
        part, *rest = path.split(".")
        where = lab["sources"][int(rest.pop(0))] if part == "sources" else lab["dut"]
        where[rest[0]] = value
    return settings(testbed="lab", lab=lab, target_pps=[1000, 2000])


def test_moving_or_replacing_credentials_keeps_a_lab_trials_name(tmp_path):
    base = trials.trials(lab_config(tmp_path))
    moved = lab_config(tmp_path, creds="elsewhere")   # every key, known_hosts and token file moved
    assert [t["point"] for t in trials.trials(moved)] == [t["point"] for t in base]
    # the same settings go to the steps (Snakemake's params): nothing reruns in place either
    assert [t["settings"] for t in trials.trials(moved)] == [t["settings"] for t in base]
    assert trials.settings_of_point(base[0]["point"], moved) == base[0]["settings"]
    (tmp_path / "a" / "agent.token").write_text("another token\n")   # a new token, same path
    assert [t["point"] for t in trials.trials(lab_config(tmp_path))] == [t["point"] for t in base]
    # and the settings a trial records hold no credential or path to one
    text = json.dumps(base[0]["settings"])
    assert "token" not in text and "key_file" not in text and "known_hosts" not in text
    assert str(tmp_path) not in text


@pytest.mark.parametrize("key,value", [
    ("sources.0.host", "192.0.2.99"), ("sources.1.iface", "eth2"), ("sources.0.address", "192.0.2.50"),
    ("sources.0.user", "xdp"), ("sources.0.port", 2222), ("sources.1.python", "/usr/bin/python3.12"),
    ("sources.0.dut_iface", "enp5s1"), ("dut.agent", "http://192.0.2.11:7717"),
    ("dut.ifaces", ["enp5s0", "enp5s1", "enp5s2"])])
def test_a_lab_host_interface_or_address_changes_the_name(tmp_path, key, value):
    a = trials.trials(lab_config(tmp_path))[0]["point"]
    b = trials.trials(lab_config(tmp_path, **{key: value}))[0]["point"]
    assert a != b and a.split("_cfg~")[0] == b.split("_cfg~")[0]


def test_every_lab_key_is_decided(tmp_path):
    """A key labconfig normalises is either in a trial's identity or a credential."""
    from xdplab import labconfig

    lab = lab_config(tmp_path)["lab"]
    source_keys = set(labconfig.SOURCE_KEYS) | {"name"}
    assert set(lab["sources"][0]) == source_keys
    assert source_keys == set(trials.LAB_SOURCE_IDENTITY) | set(trials.LAB_SOURCE_CREDENTIALS)
    assert set(lab["dut"]) == set(trials.LAB_DUT_IDENTITY) | set(trials.LAB_DUT_CREDENTIALS)
    with pytest.raises(ValueError, match=r"lab.sources\[0\]: password not decided"):
        trials.lab_identity({"sources": [dict(lab["sources"][0], password="x")], "dut": lab["dut"]})


def test_the_connectivity_check_gets_the_credentials_from_the_configuration(tmp_path):
    """check_connectivity's parameters hold the lab's identity; its step reads the
    credentials from the configuration, which must be the same lab."""
    raw = {"testbed": "lab", "lab": lab_config(tmp_path)["lab"]}
    raw["lab"] = {"sources": [{k: s[k] for k in ("host", "user", "port", "key_file", "known_hosts", "iface",
                                                 "address", "python", "dut_iface")} for s in raw["lab"]["sources"]],
                  "dut": {"agent": raw["lab"]["dut"]["agent_url"], "token_file": raw["lab"]["dut"]["token_file"],
                          "ifaces": raw["lab"]["dut"]["ifaces"]}}
    full = settings(**raw)["lab"]
    params = {"testbed": "lab", "lab": trials.lab_identity(full), "mtu": 1500}
    assert trials.lab_with_credentials(params, raw) == dict(params, lab=full)
    embedded = {"testbed": "embedded", "src_iface": "xl-src0"}
    assert trials.lab_with_credentials(embedded, {}) is embedded
    other = dict(raw, lab=dict(raw["lab"], dut=dict(raw["lab"]["dut"], ifaces=["enp5s0", "enp5s1", "enp5s2"])))
    with pytest.raises(ValueError, match="not the lab of this rule's parameters"):
        trials.lab_with_credentials(params, other)


def test_the_send_path_used_is_what_the_generators_took():
    from xdplab.trialrows import send_path_used
    assert send_path_used([{"send_path": "packet"}]) == "packet"
    assert send_path_used([{"send_path": "packet"}, {"send_path": "udp"}, {"send_path": "packet"}]) == "packet/udp"
    assert send_path_used([{}]) is None   # a report from before send_path was recorded
