"""Configuration validation: every mistake names the key, the value and what is allowed."""

import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from xdplab.config import ConfigError, load_schema, validate_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def problems(raw):
    with pytest.raises(ConfigError) as e:
        validate_config(raw)
    return e.value.problems


def test_defaults_follow_the_methodology():
    v = validate_config({}).values
    assert v["target_pps"] == [10000] and v["packet_size"] == [1458]
    assert (v["duration_s"], v["threads"], v["port"]) == (60, 2, 12345)
    assert v["xdp_mode"] == ["native"] and v["collector"] == ["features"] and v["keep_testbed"] is False


def test_config_file_is_valid_and_matches_schema_defaults():
    raw = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert validate_config(raw).values == validate_config({}).values


def test_every_key_is_described_with_a_default():
    for key, spec in load_schema()["properties"].items():
        assert spec.get("description"), key
        assert "default" in spec, key


def test_loose_cli_values_are_coerced():
    v = validate_config({"target_pps": "20000", "keep_testbed": "true", "packet_size": ["64", "512"],
                         "duration_s": 5}).values
    assert v["target_pps"] == [20000] and v["keep_testbed"] is True and v["packet_size"] == [64, 512]
    assert validate_config({"target_pps": "1000,2000"}).values["target_pps"] == [1000, 2000]


@pytest.mark.parametrize("raw, must_contain", [
    ({"target_pps": 0}, ["target_pps", "0", "1 to 10000000"]),
    ({"target_pps": -5}, ["target_pps", "-5"]),
    ({"target_pps": 1e4}, ["target_pps", "10000.0", "write 10000"]),
    ({"target_pps": "fast"}, ["target_pps", "'fast'", "integer"]),
    ({"packet_size": 17}, ["packet_size", "17", "18 to 1472", "mtu - 28"]),
    ({"packet_size": 1473}, ["packet_size", "1473", "18 to 1472"]),
    ({"packet_size": 3100, "mtu": 3100}, ["packet_size", "3100", "18 to 3072"]),
    ({"duration_s": 0}, ["duration_s", "0", "1 to 3600"]),
    ({"duration_s": 100000}, ["duration_s", "100000", "1 to 3600"]),
    ({"threads": 0}, ["threads", "0", "1 to 64"]),
    ({"port": 70000}, ["port", "70000", "1 to 65535"]),
    ({"xdp_mode": "offload"}, ["xdp_mode", "'offload'", "native, generic"]),
    ({"keep_testbed": "maybe"}, ["keep_testbed", "'maybe'", "true or false"]),
    ({"dut_iface": "averyveryverylongname0"}, ["dut_iface", "averyveryverylongname0", "1-15 characters"]),
    ({"dut_iface": "eth/0"}, ["dut_iface", "'eth/0'"]),
    ({"dut_iface": "eth 0"}, ["dut_iface", "'eth 0'"]),
    ({"src_iface": "x;rm -rf /"}, ["src_iface", "'x;rm -rf /'"]),
    ({"src_iface": "$(reboot)"}, ["src_iface", "'$(reboot)'"]),
    ({"experiment": "../etc"}, ["experiment", "'../etc'"]),
    ({"source_python": "python3; reboot"}, ["source_python", "'python3; reboot'"]),
    ({"target_pps": [1000, 1000]}, ["target_pps", "repeats a value"]),
    ({"duration_s": [5, 10]}, ["duration_s", "expected one value"]),
    ({"src_iface": "same0", "dut_iface": "same0"}, ["src_iface and dut_iface", "'same0'"]),
])
def test_bad_values_get_one_precise_message(raw, must_contain):
    found = problems(raw)
    assert len(found) == 1, found
    for text in must_contain:
        assert text in found[0], (text, found[0])


def test_unknown_key_suggests_the_key_meant():
    (msg,) = problems({"target_ppps": 100})
    assert "'target_ppps'" in msg and "did you mean 'target_pps'" in msg
    (msg,) = problems({"zzz": 1})
    assert "unknown key 'zzz'" in msg and "did you mean" not in msg


def test_all_mistakes_are_reported_together():
    assert len(problems({"target_pps": 0, "threads": 0, "pakcet_size": 64})) == 3


# -- lab ----------------------------------------------------------------------------------

def _lab(tmp_path, **over):
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key\n")
    token = tmp_path / "agent.token"
    token.write_text("secret\n")
    lab = {"sources": [{"host": "192.0.2.20", "user": "root", "port": 22, "key_file": str(key),
                        "iface": "eth1", "address": "auto", "python": "python3", "dut_iface": "enp5s0"}],
           "dut": {"agent": "http://192.0.2.10:7717", "token_file": str(token), "ifaces": ["enp5s0"]}}
    for path, value in over.items():
        where = lab
        *parts, last = path.split(".")
        for part in parts:
            where = where[int(part)] if part.isdigit() else where[part]
        if value is None:
            where.pop(last, None)
        else:
            where[last] = value
    return {"testbed": "lab", "lab": lab}


def test_a_lab_is_normalised(tmp_path):
    lab = validate_config(_lab(tmp_path)).values["lab"]
    (src,) = lab["sources"]
    assert src["name"] == "src0" and src["address"] == "auto" and src["dut_iface"] == "enp5s0"
    assert lab["dut"] == {"agent_url": "http://192.0.2.10:7717", "token_file": str(tmp_path / "agent.token"),
                          "ifaces": ["enp5s0"]}


def test_the_shipped_lab_example_names_only_known_keys():
    raw = yaml.safe_load((REPO / "config/lab.example.yaml").read_text())
    found = problems(raw)
    # Only the files of the example's hosts are missing on this machine.
    assert all("does not exist" in p for p in found), found


@pytest.mark.parametrize("over, must_contain", [
    ({"sources.0.address": "192.0.2.300"}, ["lab.sources[0].address", "'192.0.2.300'", "IPv4 address or 'auto'"]),
    ({"sources.0.addres": "auto"}, ["lab.sources[0]", "unknown key 'addres'", "did you mean 'address'"]),
    ({"sources.0.iface": "eth 1"}, ["lab.sources[0].iface", "'eth 1'"]),
    ({"sources.0.iface": "averyveryverylongname0"}, ["lab.sources[0].iface", "1-15 characters"]),
    ({"sources.0.key_file": "/nonexistent/key"}, ["lab.sources[0].key_file", "/nonexistent/key does not exist"]),
    ({"sources.0.dut_iface": "eth9"}, ["lab.sources[0].dut_iface", "'eth9' is not one of lab.dut.ifaces"]),
    ({"sources.0.port": 70000}, ["lab.sources[0].port", "70000", "1 to 65535"]),
    ({"sources.0.host": "a b"}, ["lab.sources[0].host", "'a b'"]),
    ({"dut.token_file": "/nonexistent/token"}, ["lab.dut.token_file", "/nonexistent/token does not exist"]),
    ({"dut.agent": "192.0.2.10:7717"}, ["lab.dut.agent", "http://HOST:PORT"]),
    ({"dut.ifaces": []}, ["lab.dut.ifaces", "one or more"]),
    ({"dut.iface": ["x"]}, ["lab.dut", "unknown key 'iface'", "did you mean 'ifaces'"]),
])
def test_lab_mistakes_name_the_key(tmp_path, over, must_contain):
    found = problems(_lab(tmp_path, **over))
    assert len(found) == 1, found
    for text in must_contain:
        assert text in found[0], (text, found[0])


def test_lab_mistakes_are_reported_together(tmp_path):
    found = problems(_lab(tmp_path, **{"sources.0.address": "x", "dut.agent": "ftp://a:1",
                                       "sources.0.iface": "a/b"}))
    assert len(found) == 3, found


def test_several_dut_interfaces_need_a_dut_iface_per_source(tmp_path):
    found = problems(_lab(tmp_path, **{"dut.ifaces": ["enp5s0", "enp6s0"], "sources.0.dut_iface": None}))
    assert found == ["lab.sources[0].dut_iface: required when the DUT has several ifaces (enp5s0, enp6s0)"]


def test_lab_mode_needs_a_lab_and_a_lab_needs_lab_mode(tmp_path):
    assert "lab: required when testbed is 'lab'" in problems({"testbed": "lab"})[0]
    raw = _lab(tmp_path)
    raw["testbed"] = "embedded"
    assert "set testbed: lab" in problems(raw)[0]


def test_the_schema_is_standard_json_schema():
    import jsonschema

    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    text = (REPO / "workflow/schemas/config.schema.yaml").read_text()
    assert "x-list" not in text and "x-ifname" not in text and "x-lab" not in text
    # The defaults pass the schema as snakemake.utils.validate sees them.
    values = validate_config({}).values
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(dict(values, lab=None)))


# -- the program under test ----------------------------------------------------------------

def _elf(ei_data: int, machine: int, order: str) -> bytes:
    """A 64-byte ELF header: EI_DATA and e_machine as given."""
    return b"\x7fELF\x02" + bytes([ei_data, 1]) + bytes(11) + machine.to_bytes(2, order) + bytes(44)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory (the repository, for the workflow) with a C source and objects."""
    monkeypatch.chdir(tmp_path)
    Path("programs").mkdir()
    Path("programs/a.bpf.c").write_text("// a\n")
    Path("programs/b.c").write_text("// b\n")
    Path("programs/le.o").write_bytes(_elf(1, 247, "little"))
    Path("programs/be.o").write_bytes(_elf(2, 247, "big"))
    return tmp_path


def test_program_defaults_are_the_collector_as_before():
    v = validate_config({}).values
    assert (v["program"], v["program_name"], v["program_globals"], v["observe"]) == (["collector"], "", {},
                                                                                   ["full"])


def test_every_form_of_program_is_accepted(workdir):
    progs = ["collector", "attached", "programs/a.bpf.c", "programs/b.c", "programs/le.o",
             str(workdir / "programs/be.o")]
    assert validate_config({"program": progs}).values["program"] == progs
    assert validate_config({"program": "programs/a.bpf.c,attached"}).values["program"] == \
        ["programs/a.bpf.c", "attached"]


def test_a_missing_program_names_the_key_and_the_path(workdir):
    (msg,) = problems({"program": "programs/nope.bpf.c"})
    assert msg.startswith("program: programs/nope.bpf.c does not exist") and str(workdir) in msg


@pytest.mark.parametrize("program", ["a.py", "programs/a.bpf", "programs/lb.so", "xdp"])
def test_a_program_of_another_form_is_refused_naming_the_allowed_ones(program):
    (msg,) = problems({"program": program})
    assert msg.startswith(f"program: '{program}' is not a program")
    for form in ("collector", "attached", ".bpf.c", ".c", ".o"):
        assert form in msg


def test_an_object_must_be_a_bpf_elf_object(workdir):
    Path("text.o").write_text("not an object at all, just text\n")
    (msg,) = problems({"program": "text.o"})
    assert msg.startswith("program: text.o does not start with the ELF magic")
    shutil.copy("/bin/true", "true.o")  # an ELF object, for this machine's CPU
    (msg,) = problems({"program": "true.o"})
    assert msg.startswith("program: true.o is an ELF object for machine ") and "not BPF" in msg
    assert "e_machine 247" in msg and "clang -target bpf" in msg
    # EM_BPF written in the other byte order than EI_DATA says is not EM_BPF.
    Path("swapped.o").write_bytes(_elf(2, 247, "little"))
    (msg,) = problems({"program": "swapped.o"})
    assert "machine 63232" in msg
    Path("order.o").write_bytes(_elf(7, 247, "little"))
    (msg,) = problems({"program": "order.o"})
    assert "unknown byte order (EI_DATA 7" in msg
    Path("dir.o").mkdir()
    (msg,) = problems({"program": "dir.o"})
    assert msg.startswith("program: dir.o is not a file")


def test_each_program_is_listed_once(workdir):
    (msg,) = problems({"program": ["programs/a.bpf.c", "programs/a.bpf.c"]})
    assert msg.startswith("program:") and "repeats a value" in msg
    (msg,) = problems({"program": ["programs/a.bpf.c", "./programs/a.bpf.c"]})
    assert msg == "program: programs/a.bpf.c and ./programs/a.bpf.c are the same file; list each program once"


def test_a_program_path_is_safe_to_pass_on(workdir):
    Path("my prog.bpf.c").write_text("// spaced\n")
    (msg,) = problems({"program": "my prog.bpf.c"})
    assert msg.startswith("program: 'my prog.bpf.c' is not allowed") and "letters, digits" in msg


def _from_command_line(*entries):
    """What Snakemake's --config makes of these entries."""
    from snakemake.cli import parse_config

    return parse_config(list(entries))


@pytest.mark.parametrize("entries,expected", [
    (["program_globals={drop_odd_seq: 1}"], {"drop_odd_seq": 1}),
    (['program_globals={"drop_port": 12345}'], {"drop_port": 12345}),
    (["program_globals={drop_port: 0x3039, on: true, off: false, neg: -1}"],
     {"drop_port": 12345, "on": True, "off": False, "neg": -1}),
    (["program_globals={}"], {}),
    (["program_globals="], {}),
])
def test_program_globals_from_the_command_line(workdir, entries, expected):
    raw = _from_command_line("program=programs/a.bpf.c", *entries)
    assert validate_config(raw).values["program_globals"] == expected


def test_program_globals_as_a_string_or_a_mapping(workdir):
    for given in ("{drop_odd_seq: 1}", '{"drop_port": 12345, "strict": true}',
                  {"drop_port": 7, "strict": False}):
        v = validate_config({"program": "programs/a.bpf.c", "program_globals": given}).values
        assert v["program_globals"] in ({"drop_odd_seq": 1}, {"drop_port": 12345, "strict": True},
                                        {"drop_port": 7, "strict": False})
        assert all(type(x) in (int, bool) for x in v["program_globals"].values())


@pytest.mark.parametrize("given,must_contain", [
    ({"ratio": 1.5}, ["program_globals: ratio: 1.5 is a decimal number", "integer"]),
    ({"name": "eth0"}, ["program_globals: name: 'eth0' is text"]),
    ({"ports": [1, 2]}, ["program_globals: ports: [1, 2] is a list"]),
    ({"nested": {"a": 1}}, ["program_globals: nested: {'a': 1} is a mapping"]),
    ({"empty": None}, ["program_globals: empty: None is empty"]),
    ({"big": 2 ** 64}, ["program_globals: big: 18446744073709551616 does not fit in 64 bits"]),
    ({"1st": 1}, ["program_globals: '1st' is not a global's name", "C identifier"]),
    ({"drop-port": 1}, ["program_globals: 'drop-port' is not a global's name"]),
    ("[1, 2]", ["program_globals: expected a mapping", "[1, 2]"]),
    ("drop_port", ["program_globals: expected a mapping", "'drop_port'"]),
    ("{drop_port: 1", ["program_globals: '{drop_port: 1' is not a YAML mapping"]),
])
def test_bad_program_globals_name_the_key_and_the_entry(workdir, given, must_contain):
    (msg,) = problems({"program": "programs/a.bpf.c", "program_globals": given})
    for text in must_contain:
        assert text in msg, (text, msg)


def test_program_name_is_a_c_identifier_or_empty(workdir):
    assert validate_config({"program": "programs/a.bpf.c", "program_name": "xdp_main"}).values[
        "program_name"] == "xdp_main"
    raw = _from_command_line("program=programs/a.bpf.c", "program_name=")
    assert validate_config(raw).values["program_name"] == ""
    (msg,) = problems({"program": "programs/a.bpf.c", "program_name": "xdp main"})
    assert msg.startswith("program_name: 'xdp main' is not valid") and "C function name" in msg


@pytest.mark.parametrize("program", ["collector", "attached", ["collector", "attached"]])
def test_program_name_and_globals_that_would_be_ignored_are_refused(program):
    (msg,) = problems({"program": program, "program_name": "xdp_main"})
    assert msg.startswith("program_name: given, but program is only") and "ignored" in msg
    (msg,) = problems({"program": program, "program_name": "xdp_main", "program_globals": {"a": 1}})
    assert msg.startswith("program_name and program_globals: given, but program is only")
    (msg,) = problems({"program": program, "program_globals": "{a: 1}"})
    assert msg.startswith("program_globals: given")


def test_program_name_and_globals_apply_to_any_built_or_given_object(workdir):
    v = validate_config({"program": ["collector", "programs/le.o"], "program_name": "xdp_main",
                         "program_globals": {"a": 1}}).values
    assert (v["program_name"], v["program_globals"]) == ("xdp_main", {"a": 1})


def test_observe_is_one_value_or_a_list(workdir):
    assert validate_config({"observe": "verdicts"}).values["observe"] == ["verdicts"]
    assert validate_config({"observe": "full,off"}).values["observe"] == ["full", "off"]
    # YAML 1.1 reads a bare off as false.
    assert validate_config(yaml.safe_load("observe: [full, off]")).values["observe"] == ["full", "off"]
    assert validate_config(_from_command_line("observe=off")).values["observe"] == ["off"]
    (msg,) = problems({"observe": "some"})
    assert msg == "observe: 'some' is not allowed; choose one of: full, verdicts, off"
    (msg,) = problems({"observe": ["full", "full"]})
    assert "repeats a value" in msg


def test_a_program_configuration_is_written_back_and_read_again(workdir):
    v = validate_config({"program": ["collector", "programs/a.bpf.c"], "program_globals": "{a: 1, b: true}",
                         "observe": ["full", "off"]}).values
    again = validate_config(yaml.safe_load(yaml.safe_dump(dict(v)))).values
    assert again == v


# -- frame_size: the Ethernet frame, as RFC 2544 counts it ------------------------------

RFC2544_FRAMES = [64, 128, 256, 512, 1024, 1280, 1518]


def test_frame_size_converts_exactly_to_packet_size():
    """frame = payload + 46 (Ethernet 14, IPv4 20, UDP 8, FCS 4), both ways, for every size."""
    from xdplab import frames

    v = validate_config(_from_command_line("frame_size=" + ",".join(map(str, RFC2544_FRAMES)))).values
    assert v["packet_size"] == [18, 82, 210, 466, 978, 1234, 1472]
    assert v["frame_size"] == RFC2544_FRAMES
    assert validate_config({"frame_size": 1518}).values["packet_size"] == [1472]
    assert all(frames.payload_bytes(frames.frame_bytes(p)) == p for p in range(18, 65508))
    assert frames.frame_bytes(frames.MIN_PAYLOAD_BYTES) == frames.MIN_FRAME_BYTES == 64  # never padded
    assert (frames.l2_bits_per_s(1, 18), frames.l1_bits_per_s(1, 18)) == (64 * 8, 84 * 8)
    assert frames.mbps(1_000_000, 1472, 2) == 12144.0 and frames.mbps(1_000_000, 1472, 1) == 12304.0
    assert validate_config({}).values["frame_size"] is None


def test_frame_size_names_the_same_trials_as_its_packet_size():
    """Trials stay keyed by packet_size: frame_size 64 is packet_size 18's trial directory."""
    from xdplab import trials

    def names(raw):
        return [trials.point_name(p) for p in trials.grid_points(validate_config(raw).values)]

    assert names({"frame_size": [64, 1518]}) == names({"packet_size": [18, 1472]})


@pytest.mark.parametrize("raw, must_contain", [
    ({"frame_size": 63}, ["frame_size: 63 is out of range", "64 to 1518", "18-byte header"]),
    ({"frame_size": 18}, ["frame_size: 18 is out of range", "frame_size - 46"]),
    ({"frame_size": [64, 1519]}, ["frame_size: 1519 is out of range", "64 to 1518", "1518 at mtu 1500"]),
    ({"frame_size": 3519, "mtu": 3500}, ["frame_size: 3519", "64 to 3518"]),
    ({"frame_size": "big"}, ["frame_size", "'big'", "integer"]),
    ({"frame_size": [64, 64]}, ["frame_size", "repeats a value"]),
])
def test_a_frame_size_that_does_not_fit_is_refused(raw, must_contain):
    (msg,) = problems(raw)
    for text in must_contain:
        assert text in msg, (text, msg)


def test_frame_size_and_packet_size_together_are_refused_naming_both():
    (msg,) = problems({"frame_size": [64, 128], "packet_size": 18})
    assert msg.startswith("packet_size and frame_size: both are given (packet_size 18, frame_size [64, 128])")
    assert "give one of them" in msg
    (msg,) = problems(_from_command_line("frame_size=64", "packet_size=18"))
    assert "both are given" in msg
    # config/config.yaml sets neither, so --config frame_size=... works with it
    raw = dict(yaml.safe_load((REPO / "config/config.yaml").read_text()), frame_size=[64, 1518])
    assert validate_config(raw).values["packet_size"] == [18, 1472]


def test_a_run_given_frame_sizes_is_recorded_and_read_again():
    """results/<experiment>/config.yaml records frame_size as given (and packet_size null):
    --configfile of it gives the same configuration."""
    from xdplab.report import config_as_run

    v = validate_config({"frame_size": [64, 1518]}).values
    again = validate_config(yaml.safe_load(config_as_run(dict(v), "e"))).values
    assert again == v
    recorded = yaml.safe_load(config_as_run(dict(validate_config({}).values), "e"))
    assert recorded["packet_size"] == [1458] and recorded["frame_size"] is None


# -- a pool of testbeds (testbeds) --------------------------------------------------------

def test_a_pool_of_labs_is_checked_entry_by_entry(tmp_path):
    rack1 = _lab(tmp_path)["lab"]
    rack2 = _lab(tmp_path, **{"sources.0.host": "192.0.2.21", "dut.agent": "http://192.0.2.11:7717"})["lab"]
    pool = validate_config({"testbeds": [{"name": "rack1", "lab": rack1}, {"name": "rack2", "lab": rack2}]})
    assert [(e["name"], e["testbed"], e["lab"]["dut"]["agent_url"]) for e in pool.values["testbeds"]] == [
        ("rack1", "lab", "http://192.0.2.10:7717"), ("rack2", "lab", "http://192.0.2.11:7717")]
    problems = _problems({"testbeds": [{"name": "rack1", "lab": rack1}, {"name": "rack2", "lab": rack1}]})
    assert any("rack1 and rack2 are one testbed (DUT agent http://192.0.2.10:7717)" in p for p in problems)
    assert any("share the source host 192.0.2.20" in p for p in problems)
    bad = _lab(tmp_path, **{"sources.0.port": 70000})["lab"]
    problems = _problems({"testbeds": [{"name": "rack1", "lab": bad}]})
    assert any(p.startswith("testbeds[0] (rack1).lab.sources[0].port") for p in problems), problems
    problems = _problems({"testbed": "lab", "lab": rack1, "testbeds": [{"name": "rack2", "lab": rack2}]})
    assert any("a pool replaces `testbed: lab`" in p for p in problems)
    # A user's program runs over a pool too (checked on each testbed's DUT by its first job).
    assert validate_config({"testbeds": [{"name": "rack1", "lab": rack1}],
                            "program": "programs/pass_all.bpf.c"}).values["testbeds"][0]["name"] == "rack1"


def _problems(raw):
    with pytest.raises(ConfigError) as e:
        validate_config(raw)
    return e.value.problems
