"""Validate xdplab's configuration before anything privileged happens.

Snakemake's `--config` parses values loosely (`1e4` arrives as a float, `true`
as the string "true", a list as a list of strings), so every value is coerced
and checked against workflow/schemas/config.schema.yaml (one value: configvalues.py;
the lab's hosts: labconfig.py; the program under test: here).  Each mistake
becomes one message that names the key, the value and what is allowed; all
mistakes are reported together.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .configvalues import as_list, check_value, item_spec, show
from .frames import ETHERNET_BYTES, FRAME_OVERHEAD_BYTES, IPV4_UDP_BYTES, MIN_PAYLOAD_BYTES, payload_bytes
from .labconfig import check_lab, lab_as_config  # noqa: F401  (xdplab.report reads lab_as_config here)
from .trials import program_kind

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

IPV4_UDP_HEADERS = IPV4_UDP_BYTES  # 28 (xdplab.preflight reads it here)
# A key's maximum that depends on the MTU (the schema's annotation x-maximum-from).
MAXIMUM_FROM = {"mtu - 28": lambda mtu: mtu - IPV4_UDP_BYTES, "mtu + 18": lambda mtu: mtu + ETHERNET_BYTES}


class ConfigError(ValueError):
    """One or more configuration mistakes; str() lists each on its own line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


@dataclass(frozen=True)
class Settings:
    """The validated configuration: plain Python values, defaults filled in."""

    values: dict


def validate_config(raw: dict, schema_path: Path = SCHEMA_PATH) -> Settings:
    """Coerce and check `raw` (Snakemake's `config`); raise ConfigError listing every mistake."""
    schema = load_schema(schema_path)
    props: dict = schema["properties"]
    problems = _unknown_keys(raw, props)
    merged = {k: spec.get("default") for k, spec in props.items()}
    merged.update({k: v for k, v in raw.items() if k in props})
    # `--config program_name=` arrives as None: the empty name, as in the file.
    if merged.get("program_name") is None:
        merged["program_name"] = ""
    # packet_size null: not given (a run given frame_size records it so), its default.
    if merged.get("packet_size") is None:
        merged["packet_size"] = props["packet_size"].get("default")
    values, value_problems = _check_values(merged, schema)
    problems += value_problems
    problems += _frame_sizes(values, raw)
    if not problems:
        problems += _check_combinations(values)
    problems += _check_programs(values, merged)
    problems += _check_testbed(values, merged)
    problems += check_pool(values, merged)
    if problems:
        raise ConfigError(problems)
    _check_against_schema(values, merged, schema_path)
    return Settings(values)


def _unknown_keys(raw: dict, props: dict) -> list[str]:
    problems = []
    for key in raw:
        if key not in props:
            close = difflib.get_close_matches(str(key), props, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"unknown key {show(key)}{hint}; known keys: {', '.join(sorted(props))}")
    return problems


def _check_values(merged: dict, schema: dict) -> tuple[dict, list[str]]:
    """(each key's value coerced and checked against its own spec, problems); `lab` and
    `program_globals` are whole structures, checked by check_lab and check_program_globals."""
    props: dict = schema["properties"]
    values: dict = {}
    problems: list[str] = []
    # Keys others depend on first (packet_size's maximum comes from mtu).
    order = sorted(props, key=lambda k: "x-maximum-from" in props[k])
    for key in order:
        if key in ("lab", "program_globals", "testbeds"):
            continue
        spec, listable = item_spec(props[key], schema)
        bounds = {}
        if "x-maximum-from" in spec and isinstance(values.get("mtu"), int):
            bounds[key] = MAXIMUM_FROM[spec["x-maximum-from"]](values["mtu"])
        if spec.get("x-nullable") and merged[key] is None:
            values[key] = None
            continue
        try:
            if listable:
                items = as_list(key, merged[key])
                checked = [check_value(key, spec, v, bounds) for v in items]
                if len(set(checked)) != len(checked):
                    raise ValueError(f"{key}: {checked} repeats a value; list each value once "
                                     "(use 'repeats' for repeated trials)")
                values[key] = checked
            else:
                if isinstance(merged[key], (list, tuple)):
                    raise ValueError(f"{key}: expected one value, got a list {merged[key]}")
                values[key] = check_value(key, spec, merged[key], bounds)
        except ValueError as e:
            problems.append(str(e) + (_frame_size_reason(values) if key == "frame_size" and "out of range" in str(e)
                                      else ""))
    return values, problems


def _frame_sizes(values: dict, raw: dict) -> list[str]:
    """`frame_size`, when given, converted to `packet_size` (frame - 46 bytes, exact: no
    xdplab frame is padded), by which trials are named; given with `packet_size`, refused.
    A frame that cannot hold xdplab's payload header or whose IP packet exceeds the MTU
    was refused by its range (64 to mtu + 18); its message says why."""
    if raw.get("frame_size") is None:
        return []
    if raw.get("packet_size") is not None:
        return [f"packet_size and frame_size: both are given (packet_size {show(raw['packet_size'])}, "
                f"frame_size {show(raw['frame_size'])}); give one of them: frame_size is the Ethernet "
                f"frame in bytes and packet_size its UDP payload, frame_size - {FRAME_OVERHEAD_BYTES} "
                "(config/config.yaml sets neither)"]
    if values.get("frame_size") is None:
        return []  # its value was refused
    values["packet_size"] = [payload_bytes(f) for f in values["frame_size"]]
    return []


def _frame_size_reason(values: dict) -> str:
    """Why frame_size's range is what it is, for its message."""
    mtu = values.get("mtu") if isinstance(values.get("mtu"), int) else None
    top = f"{mtu + ETHERNET_BYTES} at mtu {mtu}" if mtu else "mtu + 18"
    return (f" (a frame carries a UDP payload of frame_size - {FRAME_OVERHEAD_BYTES} bytes: Ethernet header "
            f"14, IPv4 20, UDP 8, FCS 4; the payload holds at least xdplab's {MIN_PAYLOAD_BYTES}-byte header, "
            f"so the smallest frame is {MIN_PAYLOAD_BYTES + FRAME_OVERHEAD_BYTES}, and its IPv4 packet, "
            f"frame_size - {ETHERNET_BYTES}, at most the mtu, so the largest is {top})")


def _check_combinations(values: dict) -> list[str]:
    """Values each allowed on its own that do not go together."""
    problems = []
    if values["generator"] == "trafgen" and values["pattern"] != ["constant"]:
        problems.append(f"pattern: {values['pattern']} cannot be sent with generator trafgen, which "
                        "spaces packets only one way; use pattern constant (or generator python)")
    if not problems and values["src_iface"] == values["dut_iface"]:
        problems.append(f"src_iface and dut_iface: both are {values['src_iface']!r}; "
                        "the two ends of the test link need different names")
    return problems


def _check_programs(values: dict, merged: dict) -> list[str]:
    """The programs under test, their globals and name (sets values["program_globals"])."""
    problems = [p for p in map(check_program, values.get("program") or []) if p]
    if not problems and values.get("program"):
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
    return problems


def _check_testbed(values: dict, merged: dict) -> list[str]:
    """The lab's hosts with testbed lab, none with the embedded testbed (sets values["lab"])."""
    if values.get("testbed") == "lab":
        values["lab"], problems = check_lab(merged.get("lab"), values.get("source_python", "python3"))
        return problems
    values["lab"] = None
    if merged.get("lab") is not None:
        return ["lab: hosts are given but testbed is 'embedded'; set testbed: lab to "
                "use them (or remove lab)"]
    return []


POOL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
POOL_ENTRY_KEYS = ("name", "testbed", "instance", "lab")


def check_pool(values: dict, merged: dict) -> list[str]:
    """The pool of testbeds (`testbeds`), each entry normalised in values["testbeds"]:
    {"name", "testbed": "embedded" or "lab", "instance" (embedded), "lab" (check_lab's)}.
    Every mistake names the key and the entry, before anything privileged runs."""
    raw = merged.get("testbeds")
    values["testbeds"] = []
    if raw in (None, "", []):
        return (["testbed_as_dimension: true needs a pool of testbeds (testbeds)"]
                if values.get("testbed_as_dimension") else [])
    if not isinstance(raw, list):
        return [f"testbeds: expected a list of testbeds (each a name and `testbed: embedded` or `lab:`), "
                f"got {show(raw)}"]
    problems, names, pool = [], {}, []
    for i, entry in enumerate(raw):
        where = f"testbeds[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping with name and `testbed: embedded` or `lab:`, "
                            f"got {show(entry)}")
            continue
        name = entry.get("name")
        if isinstance(name, str) and POOL_NAME_RE.fullmatch(name):
            where = f"testbeds[{i}] ({name})"
            if name in names:
                problems.append(f"{where}: name {show(name)} is also testbeds[{names[name]}]'s; "
                                "each testbed of the pool has its own name")
            names.setdefault(name, i)
        else:
            problems.append(f"{where}.name: {'required' if name is None else show(name) + ' is not allowed'}: "
                            "1-32 lowercase letters, digits, '_' or '-', starting with a letter or digit")
        for key in entry:
            if key not in POOL_ENTRY_KEYS:
                close = difflib.get_close_matches(str(key), POOL_ENTRY_KEYS, n=1, cutoff=0.6)
                problems.append(f"{where}: unknown key {show(key)}"
                                + (f" (did you mean '{close[0]}'?)" if close else "")
                                + f"; known keys: {', '.join(POOL_ENTRY_KEYS)}")
        if ("lab" in entry) == ("testbed" in entry):
            problems.append(f"{where}: give either `testbed: embedded` or `lab:` (the lab's sources and dut), "
                            "not " + ("both" if "lab" in entry else "neither"))
            continue
        if "testbed" in entry:
            instance = entry.get("instance", 0)
            if entry["testbed"] != "embedded":
                problems.append(f"{where}.testbed: {show(entry['testbed'])} is not allowed: only 'embedded' "
                                "(a lab is described under `lab:`)")
            elif isinstance(instance, bool) or not isinstance(instance, int) or not 0 <= instance <= 15:
                problems.append(f"{where}.instance: {show(instance)} is not allowed: an integer 0 to 15")
            else:
                pool.append({"name": name, "testbed": "embedded", "instance": instance, "lab": None})
            continue
        if "instance" in entry:
            problems.append(f"{where}.instance: only an embedded testbed has instances")
        lab, lab_problems = check_lab(entry["lab"], values.get("source_python", "python3"))
        problems += [f"{where}.{p}" for p in lab_problems]
        if not lab_problems:
            pool.append({"name": name, "testbed": "lab", "instance": None, "lab": lab})
    problems += _shared_in_pool(pool)
    if values.get("testbed") == "lab" or merged.get("lab") is not None:
        problems.append("testbeds: a pool replaces `testbed: lab` and `lab:`; describe each lab as an entry "
                        "of testbeds (`- name: rack1` with `lab: {sources: ..., dut: ...}`)")
    if values.get("testbed_as_dimension") and not raw:
        problems.append("testbed_as_dimension: true needs a pool of testbeds (testbeds)")
    if not problems:
        values["testbeds"] = pool
    return problems


def _shared_in_pool(pool: list[dict]) -> list[str]:
    """Two entries of a pool that are one testbed: two trials would share it."""
    problems, seen = [], {}
    for e in pool:
        key = ("embedded", e["instance"]) if e["testbed"] == "embedded" else ("lab", e["lab"]["dut"]["agent_url"])
        if key in seen:
            what = f"instance {e['instance']}" if key[0] == "embedded" else f"DUT agent {key[1]}"
            problems.append(f"testbeds: {seen[key]} and {e['name']} are one testbed ({what}): two trials "
                            "would share it")
        seen.setdefault(key, e["name"])
    # A source host in two labs: a full check of one stops the other's running generator.
    hosts = {}
    for e in pool:
        for src in (e["lab"] or {}).get("sources") or []:
            where = (src.get("host"), src.get("port"))
            other = hosts.setdefault(where, e["name"])
            if other != e["name"]:
                problems.append(f"testbeds: {other} and {e['name']} share the source host {where[0]} (port "
                                f"{where[1]}): a trial on one would stop the other's generator; give each lab "
                                "its own source host")
    return problems


def _check_against_schema(values: dict, merged: dict, schema_path: Path) -> None:
    """Last, the standard check against the schema itself, of the coerced values (and the
    lab as given): the messages above are the ones a user reads; this one only speaks
    if the schema and the checks above ever disagree."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    as_given = dict(values, lab=merged.get("lab") if values.get("testbed") == "lab" else None,
                    testbeds=merged.get("testbeds") or [])
    try:
        validate(as_given, str(schema_path), set_default=False)
    except WorkflowError as e:
        raise ConfigError([f"the configuration does not match {SCHEMA_PATH.name}: {e}"]) from None


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
                    f"{{drop_port: 12345}}, got {show(raw)}"]
    out, problems = {}, []
    for name, value in raw.items():
        if not isinstance(name, str) or not C_IDENTIFIER_RE.fullmatch(name):
            problems.append(f"{key}: {show(name)} is not a global's name; a C identifier (letters, "
                            "digits and '_', not starting with a digit)")
            continue
        try:
            out[name] = _global_value(name, value)
        except ValueError as e:
            problems.append(f"{key}: {name}: {e}; a global's value is an integer of at most "
                            "64 bits, or true/false")
    return out, problems
