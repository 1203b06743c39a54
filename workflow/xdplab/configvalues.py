"""One configuration value against its spec in workflow/schemas/config.schema.yaml.

Snakemake's `--config` parses values loosely (`1e4` arrives as a float, `true`
as the string "true", a list as a list of strings), so every value is coerced
here and checked against its key's spec; a mistake is a ValueError whose message
names the key, the value and what is allowed (config.validate_config gathers them).
"""

from __future__ import annotations

import re
from typing import Any

# Linux allows almost any byte in an interface name; we allow what is safe to
# put anywhere (argv, file names, logs): 1-15 characters (IFNAMSIZ - 1).
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
IFNAME_RULE = ("a Linux interface name: 1-15 characters of letters, digits, '_', '.' or '-', "
               "starting with a letter or digit")


def show(value: Any) -> str:
    """A value as a message shows it: text quoted."""
    return repr(value) if isinstance(value, str) else str(value)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected an integer, got {show(value)} (a boolean)")
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
    raise ValueError(f"{key}: expected an integer, got {show(value)}")


def coerce_number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected a number, got {show(value)} (a boolean)")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", value):
        number = float(value)
    else:
        raise ValueError(f"{key}: expected a number, got {show(value)}")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{key}: expected a finite number, got {show(value)}")
    return number


def coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{key}: expected true or false, got {show(value)}")


IFNAME_REF = "#/$defs/ifname"


def _resolve(spec: dict, schema: dict) -> dict:
    """A property's spec with a local $ref ("#/$defs/name") replaced by what it names (its
    own keys, such as default and description, win)."""
    ref = spec.get("$ref")
    if not ref:
        return spec
    target = schema
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in spec.items() if k != "$ref"}, "x-ref": ref}


def item_spec(spec: dict, schema: dict) -> tuple[dict, bool]:
    """(the spec of one value, whether a list of such values is allowed): a list-or-scalar
    is oneOf [a scalar, an array of that scalar].  A third branch {type: "null"}
    (frame_size) lets the key be unset: the spec says so as "x-nullable"."""
    branches = spec.get("oneOf")
    values = [b for b in branches or [] if b.get("type") != "null"]
    nullable = len(values) == 2 and len(branches) == 3
    if len(values) == 2 and len(branches) in (2, 3) and any(b.get("type") == "array" for b in values):
        scalar = next(b for b in values if b.get("type") != "array")
        one = {**_resolve(scalar, schema), **{k: v for k, v in spec.items() if k != "oneOf"}}
        return ({**one, "x-nullable": True} if nullable else one), True
    return _resolve(spec, schema), False


def check_value(key: str, spec: dict, value: Any, bounds: dict) -> Any:
    """`value` coerced to what `spec` says; bounds: {key: a maximum that overrides the spec's}."""
    kind = spec.get("type")
    if kind in ("integer", "number"):
        value = coerce_int(key, value) if kind == "integer" else coerce_number(key, value)
        lo = spec.get("minimum")
        hi = bounds.get(key, spec.get("maximum"))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            allowed = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            why = f" ({spec['x-maximum-from']})" if key in bounds and "x-maximum-from" in spec else ""
            raise ValueError(f"{key}: {value} is out of range; allowed: {allowed}{why}")
        return value
    if kind == "boolean":
        return coerce_bool(key, value)
    if kind == "string":
        if isinstance(value, bool) and "enum" in spec and ("on" if value else "off") in spec["enum"]:
            value = "on" if value else "off"  # YAML 1.1 reads a bare off as false
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected text, got {show(value)}")
        if "enum" in spec and value not in spec["enum"]:
            raise ValueError(f"{key}: {show(value)} is not allowed; choose one of: {', '.join(spec['enum'])}")
        if spec.get("x-ref") == IFNAME_REF and (not IFNAME_RE.match(value) or value in (".", "..")):
            raise ValueError(f"{key}: {show(value)} is not valid; allowed: {IFNAME_RULE}")
        if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            raise ValueError(f"{key}: {show(value)} is not valid; allowed: {spec['description'].strip()}")
        return value
    raise AssertionError(f"schema type {kind} for {key} is not handled")


def as_list(key: str, value: Any) -> list:
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str) and "," in value:
        items = [v.strip() for v in value.strip("[]").split(",")]
    else:
        items = [value]
    if not items:
        raise ValueError(f"{key}: the list is empty; give at least one value")
    return items
