"""Configuration validation: every mistake names the key, the value and what is allowed."""

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
    assert v["xdp_mode"] == "native" and v["keep_testbed"] is False


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
