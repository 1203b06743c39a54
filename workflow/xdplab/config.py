"""Validate xdplab's configuration before anything privileged happens.

Snakemake's `--config` parses values loosely (`1e4` arrives as a float, `true`
as the string "true", a list as a list of strings), so every value is coerced
and checked here against workflow/schemas/config.schema.yaml.  Each mistake
becomes one message that names the key, the value and what is allowed; all
mistakes are reported together.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

# Linux allows almost any byte in an interface name; we allow what is safe to
# put anywhere (argv, file names, logs): 1-15 characters (IFNAMSIZ - 1).
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
IFNAME_RULE = ("a Linux interface name: 1-15 characters of letters, digits, '_', '.' or '-', "
               "starting with a letter or digit")

IPV4_UDP_HEADERS = 28


class ConfigError(ValueError):
    """One or more configuration mistakes; str() lists each on its own line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected an integer, got {_show(value)} (a boolean)")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            hint = f"; write {int(value)}"
        else:
            hint = ""
        raise ValueError(f"{key}: expected an integer, got {value} (a decimal number{hint})")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValueError(f"{key}: expected an integer, got {_show(value)}")


def _coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{key}: expected true or false, got {_show(value)}")


def _check_one(key: str, spec: dict, value: Any, bounds: dict) -> Any:
    kind = spec["type"]
    if kind == "integer":
        value = _coerce_int(key, value)
        lo = spec.get("minimum")
        hi = bounds.get(key, spec.get("maximum"))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            allowed = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            why = f" ({spec['x-maximum-from']})" if key in bounds and "x-maximum-from" in spec else ""
            raise ValueError(f"{key}: {value} is out of range; allowed: {allowed}{why}")
        return value
    if kind == "boolean":
        return _coerce_bool(key, value)
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected text, got {_show(value)}")
        if "enum" in spec and value not in spec["enum"]:
            raise ValueError(f"{key}: {_show(value)} is not allowed; choose one of: {', '.join(spec['enum'])}")
        if spec.get("x-ifname") and (not IFNAME_RE.match(value) or value in (".", "..")):
            raise ValueError(f"{key}: {_show(value)} is not valid; allowed: {IFNAME_RULE}")
        if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            raise ValueError(f"{key}: {_show(value)} is not valid; allowed: {spec['description'].strip()}")
        return value
    raise AssertionError(f"schema type {kind} for {key} is not handled")


def _as_list(key: str, value: Any) -> list:
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str) and "," in value:
        items = [v.strip() for v in value.strip("[]").split(",")]
    else:
        items = [value]
    if not items:
        raise ValueError(f"{key}: the list is empty; give at least one value")
    return items


@dataclass(frozen=True)
class Settings:
    """The validated configuration: plain Python values, defaults filled in."""

    values: dict

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError as e:
            raise AttributeError(name) from e


def validate_config(raw: dict, schema: dict | None = None) -> Settings:
    """Coerce and check `raw` (Snakemake's `config`); raise ConfigError listing every mistake."""
    schema = schema or load_schema()
    props: dict = schema["properties"]
    problems: list[str] = []

    for key in raw:
        if key not in props:
            close = difflib.get_close_matches(str(key), props, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"unknown key {_show(key)}{hint}; known keys: {', '.join(sorted(props))}")

    merged = {k: spec.get("default") for k, spec in props.items()}
    merged.update({k: v for k, v in raw.items() if k in props})

    values: dict = {}
    # Keys others depend on first (packet_size's maximum comes from mtu).
    order = sorted(props, key=lambda k: "x-maximum-from" in props[k])
    for key in order:
        spec = props[key]
        bounds = {}
        if "x-maximum-from" in spec and isinstance(values.get("mtu"), int):
            bounds[key] = values["mtu"] - IPV4_UDP_HEADERS
        try:
            if spec.get("x-list"):
                items = _as_list(key, merged[key])
                checked = [_check_one(key, spec, v, bounds) for v in items]
                if len(set(checked)) != len(checked):
                    raise ValueError(f"{key}: {checked} repeats a value; list each value once "
                                     "(use 'repeats' for repeated trials)")
                values[key] = checked
            else:
                if isinstance(merged[key], (list, tuple)):
                    raise ValueError(f"{key}: expected one value, got a list {merged[key]}")
                values[key] = _check_one(key, spec, merged[key], bounds)
        except ValueError as e:
            problems.append(str(e))

    if not problems and values["src_iface"] == values["dut_iface"]:
        problems.append(f"src_iface and dut_iface: both are {values['src_iface']!r}; "
                        "the two ends of the test link need different names")
    if problems:
        raise ConfigError(problems)
    return Settings(values)


def describe_keys(schema: dict | None = None) -> list[tuple[str, str, str]]:
    """(key, default, description) for documentation."""
    schema = schema or load_schema()
    out = []
    for key, spec in schema["properties"].items():
        out.append((key, str(spec.get("default")), " ".join(spec["description"].split())))
    return out
