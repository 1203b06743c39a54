"""Validate xdplab's configuration before anything privileged happens.

Snakemake's `--config` parses values loosely (`1e4` arrives as a float, `true`
as the string "true", a list as a list of strings), so every value is coerced
and checked here against workflow/schemas/config.schema.yaml.  Each mistake
becomes one message that names the key, the value and what is allowed; all
mistakes are reported together.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from urllib.parse import urlsplit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .trials import program_kind

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


def _coerce_number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected a number, got {_show(value)} (a boolean)")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", value):
        number = float(value)
    else:
        raise ValueError(f"{key}: expected a number, got {_show(value)}")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{key}: expected a finite number, got {_show(value)}")
    return number


def _coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{key}: expected true or false, got {_show(value)}")


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
    is oneOf [a scalar, an array of that scalar]."""
    branches = spec.get("oneOf")
    if branches and len(branches) == 2 and any(b.get("type") == "array" for b in branches):
        scalar = next(b for b in branches if b.get("type") != "array")
        return {**_resolve(scalar, schema), **{k: v for k, v in spec.items() if k != "oneOf"}}, True
    return _resolve(spec, schema), False


def _check_one(key: str, spec: dict, value: Any, bounds: dict) -> Any:
    kind = spec.get("type")
    if kind in ("integer", "number"):
        value = _coerce_int(key, value) if kind == "integer" else _coerce_number(key, value)
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
        if isinstance(value, bool) and "enum" in spec and ("on" if value else "off") in spec["enum"]:
            value = "on" if value else "off"  # YAML 1.1 reads a bare off as false
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected text, got {_show(value)}")
        if "enum" in spec and value not in spec["enum"]:
            raise ValueError(f"{key}: {_show(value)} is not allowed; choose one of: {', '.join(spec['enum'])}")
        if spec.get("x-ref") == IFNAME_REF and (not IFNAME_RE.match(value) or value in (".", "..")):
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


def validate_config(raw: dict, schema_path: Path = SCHEMA_PATH) -> Settings:
    """Coerce and check `raw` (Snakemake's `config`); raise ConfigError listing every mistake."""
    schema = load_schema(schema_path)
    props: dict = schema["properties"]
    problems: list[str] = []

    for key in raw:
        if key not in props:
            close = difflib.get_close_matches(str(key), props, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"unknown key {_show(key)}{hint}; known keys: {', '.join(sorted(props))}")

    merged = {k: spec.get("default") for k, spec in props.items()}
    merged.update({k: v for k, v in raw.items() if k in props})
    # `--config program_name=` arrives as None: the empty name, as in the file.
    if merged.get("program_name") is None:
        merged["program_name"] = ""

    values: dict = {}
    # Keys others depend on first (packet_size's maximum comes from mtu).
    order = sorted(props, key=lambda k: "x-maximum-from" in props[k])
    for key in order:
        if key in ("lab", "program_globals"):
            continue  # whole structures: check_lab() and check_program_globals(), below
        spec, listable = item_spec(props[key], schema)
        bounds = {}
        if "x-maximum-from" in spec and isinstance(values.get("mtu"), int):
            bounds[key] = values["mtu"] - IPV4_UDP_HEADERS
        try:
            if listable:
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

    if not problems and values["generator"] == "trafgen" and values["pattern"] != ["constant"]:
        problems.append(f"pattern: {values['pattern']} cannot be sent with generator trafgen, which "
                        "spaces packets only one way; use pattern constant (or generator python)")
    if not problems and values["src_iface"] == values["dut_iface"]:
        problems.append(f"src_iface and dut_iface: both are {values['src_iface']!r}; "
                        "the two ends of the test link need different names")
    program_problems = [p for p in map(check_program, values.get("program") or []) if p]
    problems += program_problems
    if not program_problems and values.get("program"):
        problems += _same_files(values["program"])
    values["program_globals"], globals_problems = check_program_globals(merged.get("program_globals"))
    problems += globals_problems
    kinds = [program_kind(p) for p in values.get("program") or [] if _kind_ok(p)]
    given = [k for k in ("program_name", "program_globals") if values.get(k)]
    if given and kinds and set(kinds) <= {"collector", "attached"}:
        one = len(given) == 1
        they, apply = ("it", "applies") if one else ("they", "apply")
        problems.append(f"{' and '.join(given)}: given, but program is only "
                        f"{', '.join(values['program'])}, where {they} would be ignored; {they} "
                        f"{apply} to a program given as a C source (.bpf.c, .c) or an ELF object (.o)")
    if values.get("testbed") == "lab":
        lab, lab_problems = check_lab(merged.get("lab"), values.get("source_python", "python3"))
        problems += lab_problems
        values["lab"] = lab
    else:
        values["lab"] = None
        if merged.get("lab") is not None:
            problems.append("lab: hosts are given but testbed is 'embedded'; set testbed: lab to "
                            "use them (or remove lab)")
    if problems:
        raise ConfigError(problems)
    # Last, the standard check against the schema itself, of the coerced values (and the
    # lab as given): the messages above are the ones a user reads; this one only speaks
    # if the schema and the checks above ever disagree.
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    as_given = dict(values, lab=merged.get("lab") if values.get("testbed") == "lab" else None)
    try:
        validate(as_given, str(schema_path), set_default=False)
    except WorkflowError as e:
        raise ConfigError([f"the configuration does not match {SCHEMA_PATH.name}: {e}"]) from None
    return Settings(values)


# -- the program under test ----------------------------------------------------------

# A program's path goes into argv and file names on the controller and the DUT: the
# characters that are safe everywhere (as for source_python), no spaces.
PROGRAM_PATH_RE = re.compile(r"[A-Za-z0-9_./+-]{1,400}")
C_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ELF_MAGIC = b"\x7fELF"
EM_BPF = 247
# e_machine values a wrong object most likely has, to say what it is.
ELF_MACHINES = {3: "x86", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "s390", 40: "ARM",
                62: "x86-64", 183: "AArch64", 243: "RISC-V", 258: "LoongArch"}


def _kind_ok(program) -> bool:
    try:
        program_kind(program)
        return True
    except ValueError:
        return False


def bpf_object_problem(head: bytes) -> str | None:
    """What keeps an object file whose first bytes are `head` from being a BPF object
    (ELF, e_machine EM_BPF in the byte order EI_DATA says), or None."""
    if len(head) < 20 or head[:4] != ELF_MAGIC:
        return "does not start with the ELF magic (7f 45 4c 46): it is not an ELF object"
    order = {1: "little", 2: "big"}.get(head[5])
    if order is None:
        return f"has an unknown byte order (EI_DATA {head[5]}, expected 1 or 2): not a valid ELF object"
    machine = int.from_bytes(head[18:20], order)
    if machine != EM_BPF:
        name = f" ({ELF_MACHINES[machine]})" if machine in ELF_MACHINES else ""
        return (f"is an ELF object for machine {machine}{name}, not BPF (e_machine {EM_BPF}, "
                "EM_BPF): build it with clang -target bpf")
    return None


def check_program(program: str) -> str | None:
    """What is wrong with one value of `program`, or None: its form, and for a file that
    it exists, is readable, and (an object) is a BPF ELF object.  Relative paths are from
    the working directory, the repository."""
    try:
        kind = program_kind(program)
    except ValueError as e:
        return f"program: {e}"
    if kind in ("collector", "attached"):
        return None
    if not PROGRAM_PATH_RE.fullmatch(program):
        return (f"program: {program!r} is not allowed; a program's path may hold letters, digits, "
                "'_', '.', '/', '+', '-' (1-400 characters)")
    where = "" if os.path.isabs(program) else f" (relative to {os.getcwd()})"
    what = "a C source" if kind == "source" else "an ELF object"
    if not os.path.exists(program):
        return f"program: {program} does not exist{where}; expected {what}"
    if not os.path.isfile(program):
        return f"program: {program} is not a file{where}; expected {what}"
    if not os.access(program, os.R_OK):
        return f"program: {program} is not readable{where}"
    if kind == "object":
        with open(program, "rb") as f:
            problem = bpf_object_problem(f.read(20))
        if problem:
            return f"program: {program} {problem}"
    return None


def _same_files(programs: list) -> list[str]:
    """Two names of one file in `program` (a.bpf.c and ./a.bpf.c) would measure it twice."""
    seen: dict = {}
    problems = []
    for p in programs:
        if program_kind(p) in ("collector", "attached"):
            continue
        real = os.path.realpath(p)
        if real in seen:
            problems.append(f"program: {seen[real]} and {p} are the same file; list each program once")
        else:
            seen[real] = p
    return problems


INT64_MIN, UINT64_MAX = -(2 ** 63), 2 ** 64 - 1


def _global_value(name: str, value):
    """An int or bool, from YAML or from --config (whose YAML reader leaves every value text)."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        if re.fullmatch(r"[+-]?0[xX][0-9A-Fa-f]+", text):
            value = int(text, 16)
        elif re.fullmatch(r"[+-]?\d+", text):
            value = int(text, 10)
        else:
            raise ValueError(f"{value!r} is text")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= UINT64_MAX:
            raise ValueError(f"{value} does not fit in 64 bits")
        return value
    kind = ("empty" if value is None else "a decimal number" if isinstance(value, float)
            else "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict)
            else f"of type {type(value).__name__}")
    raise ValueError(f"{value!r} is {kind}")


def check_program_globals(raw) -> tuple[dict, list[str]]:
    """(the globals as {name: int or bool}, problems).  From the configuration file a
    mapping; from --config a string (parsed as YAML) or the mapping Snakemake's own YAML
    reader made of it, with every value as text."""
    key = "program_globals"
    if raw is None:
        return {}, []
    if isinstance(raw, str):
        try:
            raw = yaml.safe_load(raw) if raw.strip() else {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else "not YAML"
            return {}, [f"{key}: {raw!r} is not a YAML mapping ({first}); write it as "
                        "'{name: 1, other: true}'"]
        if raw is None:
            raw = {}
    if not isinstance(raw, dict):
        return {}, [f"{key}: expected a mapping of global names to integers or booleans, such as "
                    f"{{drop_port: 12345}}, got {_show(raw)}"]
    out, problems = {}, []
    for name, value in raw.items():
        if not isinstance(name, str) or not C_IDENTIFIER_RE.fullmatch(name):
            problems.append(f"{key}: {_show(name)} is not a global's name; a C identifier (letters, "
                            "digits and '_', not starting with a digit)")
            continue
        try:
            out[name] = _global_value(name, value)
        except ValueError as e:
            problems.append(f"{key}: {name}: {e}; a global's value is an integer of at most "
                            "64 bits, or true/false")
    return out, problems


# -- lab ---------------------------------------------------------------------------

SOURCE_KEYS = {
    "host": "SSH target: an address, a host name or a ~/.ssh/config alias",
    "user": "SSH user (optional; ~/.ssh/config or the current user otherwise)",
    "port": "SSH port (optional)",
    "key_file": "SSH private key (optional)",
    "known_hosts": "known_hosts file holding the host's key (optional)",
    "iface": "the source's test interface",
    "address": "IPv4 address to send from, or auto (the address on iface)",
    "python": "Python interpreter on the source (optional)",
    "dut_iface": "the DUT interface this source sends to (optional with one)",
}
DUT_KEYS = {
    "agent": "the DUT agent's URL, http://HOST:PORT",
    "token_file": "file holding the agent's token",
    "ifaces": "the DUT interfaces to collect on",
}
HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$")
PYTHON_RE = re.compile(r"^[A-Za-z0-9_./-]{1,200}$")


def _unknown(where: str, key, known) -> str:
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{where}: unknown key {_show(key)}{hint}; known keys: {', '.join(known)}"


def _readable_file(where: str, value, problems: list, what: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: expected the path of {what}, got {_show(value)}")
        return None
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        problems.append(f"{where}: {value} does not exist ({what})")
    elif not os.access(path, os.R_OK):
        problems.append(f"{where}: {value} is not readable ({what})")
    return path


def _ifname(where: str, value, problems: list) -> str | None:
    if not isinstance(value, str) or not IFNAME_RE.match(value) or value in (".", ".."):
        problems.append(f"{where}: {_show(value)} is not valid; allowed: {IFNAME_RULE}")
        return None
    return value


def _ipv4_or_auto(where: str, value, problems: list) -> str | None:
    if value is None or value == "auto":
        return "auto"
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        problems.append(f"{where}: {_show(value)} is not an IPv4 address or 'auto'")
        return None


def check_lab(raw, default_python: str = "python3") -> tuple[dict | None, list[str]]:
    """Validate the `lab` section (testbed: lab); return (normalised lab, problems).

    Paths are expanded (~) and made absolute; key and token files must exist and be
    readable; a source's address is an IPv4 address or 'auto' (resolved on the source
    over SSH before any traffic); each source's dut_iface is one of the DUT's ifaces.
    Reading files is all this does: nothing is contacted."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        return None, ["lab: required when testbed is 'lab': a mapping with 'sources' and 'dut' "
                      "(see config/lab.example.yaml)"]
    for key in raw:
        if key not in ("sources", "dut"):
            problems.append(_unknown("lab", key, ["sources", "dut"]))
    dut_raw = raw.get("dut")
    dut = None
    if not isinstance(dut_raw, dict):
        problems.append("lab.dut: required: a mapping with agent, token_file and ifaces")
    else:
        for key in dut_raw:
            if key not in DUT_KEYS:
                problems.append(_unknown("lab.dut", key, list(DUT_KEYS)))
        url = dut_raw.get("agent")
        parts = urlsplit(url) if isinstance(url, str) else None
        try:
            port_ok = parts is not None and parts.port is not None
        except ValueError:
            port_ok = False
        if not (parts and parts.scheme == "http" and parts.hostname and port_ok
                and parts.path in ("", "/") and not parts.query and not parts.username):
            problems.append(f"lab.dut.agent: {_show(url)} is not valid; expected http://HOST:PORT "
                            "(the address the agent was started with --listen)")
            url = None
        token = _readable_file("lab.dut.token_file", dut_raw.get("token_file"), problems,
                               "the agent's token")
        if token and os.path.isfile(token) and os.access(token, os.R_OK):
            with open(token) as f:
                if not f.read().strip():
                    problems.append(f"lab.dut.token_file: {dut_raw.get('token_file')} is empty")
        ifaces_raw = dut_raw.get("ifaces")
        if isinstance(ifaces_raw, str):
            ifaces_raw = [ifaces_raw]
        ifaces = []
        if not isinstance(ifaces_raw, list) or not ifaces_raw:
            problems.append(f"lab.dut.ifaces: expected a list of one or more interface names, "
                            f"got {_show(ifaces_raw)}")
        else:
            for i, name in enumerate(ifaces_raw):
                ok = _ifname(f"lab.dut.ifaces[{i}]", name, problems)
                if ok in ifaces:
                    problems.append(f"lab.dut.ifaces: {ok!r} is listed twice")
                elif ok:
                    ifaces.append(ok)
        dut = {"agent_url": url.rstrip("/") if url else None, "token_file": token, "ifaces": ifaces}

    sources_raw = raw.get("sources")
    sources = []
    if not isinstance(sources_raw, list) or not sources_raw:
        problems.append(f"lab.sources: expected a list of one or more source hosts, got "
                        f"{_show(sources_raw)}")
        sources_raw = []
    for i, s in enumerate(sources_raw):
        where = f"lab.sources[{i}]"
        if not isinstance(s, dict):
            problems.append(f"{where}: expected a mapping with host and iface, got {_show(s)}")
            continue
        for key in s:
            if key not in SOURCE_KEYS:
                problems.append(_unknown(where, key, list(SOURCE_KEYS)))
        src = {"name": f"src{i}"}
        host = s.get("host")
        if not isinstance(host, str) or not HOST_RE.match(host):
            problems.append(f"{where}.host: {_show(host)} is not a host name, address or "
                            "~/.ssh/config alias")
        src["host"] = host
        user = s.get("user")
        if user is not None and (not isinstance(user, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}", user)):
            problems.append(f"{where}.user: {_show(user)} is not a user name")
        src["user"] = user
        port = s.get("port")
        if port is not None:
            try:
                port = _coerce_int(f"{where}.port", port)
                if not 1 <= port <= 65535:
                    raise ValueError(f"{where}.port: {port} is out of range; allowed: 1 to 65535")
            except ValueError as e:
                problems.append(str(e))
                port = None
        src["port"] = port
        src["key_file"] = (_readable_file(f"{where}.key_file", s["key_file"], problems, "an SSH key")
                           if s.get("key_file") is not None else None)
        src["known_hosts"] = (_readable_file(f"{where}.known_hosts", s["known_hosts"], problems,
                                             "a known_hosts file")
                              if s.get("known_hosts") is not None else None)
        src["iface"] = _ifname(f"{where}.iface", s.get("iface"), problems)
        src["address"] = _ipv4_or_auto(f"{where}.address", s.get("address", "auto"), problems)
        python = s.get("python", default_python)
        if not isinstance(python, str) or not PYTHON_RE.match(python):
            problems.append(f"{where}.python: {_show(python)} is not valid; allowed: a command "
                            "or path of letters, digits, '_', '.', '/', '-'")
        src["python"] = python
        dut_iface = s.get("dut_iface")
        if dut is not None and dut["ifaces"]:
            if dut_iface is None:
                if len(dut["ifaces"]) > 1:
                    problems.append(f"{where}.dut_iface: required when the DUT has several ifaces "
                                    f"({', '.join(dut['ifaces'])})")
                dut_iface = dut["ifaces"][0]
            elif _ifname(f"{where}.dut_iface", dut_iface, problems) and dut_iface not in dut["ifaces"]:
                problems.append(f"{where}.dut_iface: {dut_iface!r} is not one of lab.dut.ifaces "
                                f"({', '.join(dut['ifaces'])})")
        src["dut_iface"] = dut_iface
        sources.append(src)
    return {"sources": sources, "dut": dut}, problems


def lab_as_config(lab: dict | None) -> dict | None:
    """A normalised lab (check_lab) written back in the configuration's own keys, so
    that --configfile gives the same lab again."""
    if not lab:
        return None
    keys = [k for k in SOURCE_KEYS]
    sources = [{k: s[k] for k in keys if s.get(k) is not None} for s in lab["sources"]]
    dut = {"agent": lab["dut"]["agent_url"], "token_file": lab["dut"]["token_file"],
           "ifaces": list(lab["dut"]["ifaces"])}
    return {"sources": sources, "dut": dut}


def describe_keys(schema: dict | None = None) -> list[tuple[str, str, str]]:
    """(key, default, description) for documentation."""
    schema = schema or load_schema()
    out = []
    for key, spec in schema["properties"].items():
        out.append((key, str(spec.get("default")), " ".join(spec["description"].split())))
    return out
