"""Trials and the grid: which trials a configuration asks for, what each one's
directory is called, and in which order they run.

A trial's directory is keyed by every setting that changes its numbers, so that a
changed setting runs new trials next to the old ones instead of overwriting them:

    results/<experiment>/trials/<point>/rep~<n>
    <point> = pps~10000_size~1458_dur~60_xdp~native_coll~features_pat~constant_cfg~1a2b3c4d

The grid's dimensions and the duration are readable in the name; `cfg~` is a short
digest of the other settings that change numbers (warm-up, threads, port, send path,
the pattern's own knobs, the testbed: for a lab its hosts, interfaces and addresses,
never credentials or their paths, lab_identity).  Each trial's trial.json holds all of its
settings.  Settings that do not change the numbers (keep_pcap, keep_features,
watchdog_grace_s, stability_pct) are not in the name: changing them reruns the trial
in place.

The program under test is a grid dimension too (`program`): xdplab's own collector
(the default; its trials' names are exactly what they were before programs existed),
or a user's program, whose point gets a readable `_prog~<slug>` after `pat~` and whose
digest also covers the program (its path as given and its file's sha256, so an edited
program gets new trial directories beside the old ones), program_name,
program_globals and `observe` (how xdplab observes a user's program; it does not
apply to the collector, whose points carry observe None and appear once whatever
`observe` lists):

    pps~10000_size~1458_dur~60_xdp~native_coll~features_pat~constant_prog~drop-rule_cfg~5e6f7a8b

Pure functions but for reading a program's file for its sha256; no Snakemake here (tests
and the archive's ./reaggregate use them).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re

# (name in the directory, setting, what it may be): the grid's dimensions and the
# duration, readable in a trial's directory name.
READABLE = (("pps", "target_pps", r"\d+"), ("size", "packet_size", r"\d+"),
            ("dur", "duration_s", r"\d+"), ("xdp", "xdp_mode", "[a-z]+"),
            ("coll", "collector", "[a-z]+"), ("pat", "pattern", "[a-z]+"))
# The grid: each may be one value or a list in the configuration.  program and observe
# last, so that a collector-only grid is in the order it always was (and runs in it).
GRID = ("target_pps", "packet_size", "xdp_mode", "collector", "pattern", "program", "observe")
# What a point says about the program under test; a collector point holds None in all but
# program, a program attached by the user's loader has no file, name or globals.
PROGRAM_SETTINGS = ("program", "program_sha256", "program_name", "program_globals", "observe")
# The program's readable part of a point name: a slug of its file's name.
SLUG_RE = r"[A-Za-z0-9-]{1,24}"
SLUG_MAX = 24
INTEGER = {"target_pps", "packet_size", "duration_s"}
# What the collector does around a user's program, for each `observe`.
OBSERVED_BY = {"full": "features", "verdicts": "counters", "off": "off"}
# Settings that change a trial's numbers but are not readable in its name (cfg~ digest).
DIGESTED = ("warmup_s", "threads", "port", "send_path", "generator", "mtu")
# The testbed a trial ran on: the embedded one, or a lab's hosts (a trial's settings hold
# the lab's identity, lab_identity below: no credentials, no paths to them).
TESTBED_KEYS = {"embedded": ("testbed", "src_iface", "dut_iface", "source_python"),
                "lab": ("testbed", "lab")}
# A lab's keys (as labconfig.check_lab normalises them) in a trial's identity: what changes
# its numbers, i.e. which machine, which interface, which address, which interpreter.
# Credentials and where they are kept are not in it: moving or replacing a key, a token or
# a known_hosts file measures nothing again.  Each key is decided here; a lab key in neither
# tuple is an error (lab_identity), so a new one cannot slip in unnoticed.
LAB_SOURCE_IDENTITY = (
    "name",       # src<i>, the source's place in the list: its rows in sources.csv
    "host",       # which machine sends (an address, a name or an ~/.ssh/config alias as given)
    "user",       # who runs the generator there: its privileges (send_path packet needs
                  # root), its PATH (which `python` runs), its limits
    "port",       # the SSH port: behind one address (a NAT, a jump host's forwards) the port
                  # can be what tells two machines apart
    "iface",      # the source's test interface: its NIC, driver, queues
    "address",    # the address it sends from (or auto, resolved on the source per trial)
    "python",     # the interpreter that runs the generator: its speed is the source's rate
    "dut_iface",  # the DUT interface this source sends to
)
LAB_SOURCE_CREDENTIALS = (
    "key_file",     # an SSH private key's path: how we log in, not what is measured
    "known_hosts",  # the file holding the host's key: how the host is trusted, likewise
)
LAB_DUT_IDENTITY = (
    "agent_url",  # http://HOST:PORT of the DUT agent: which machine is the DUT (the port for
                  # the same reason as a source's SSH port)
    "ifaces",     # the DUT interfaces measured, in order
)
LAB_DUT_CREDENTIALS = (
    "token_file",  # the agent token's path (the token itself is never in the settings)
)
# Settings that a trial records and follows but that do not change its numbers.
FOLLOWED = ("keep_pcap", "keep_features", "watchdog_grace_s", "stability_pct")
# A pattern's own knob, where it changes the traffic.
PATTERN_KNOBS = {"burst": ("burst_size",), "poisson": ("seed",)}


TESTBED_NAME_RE = r"[a-z0-9][a-z0-9_-]{0,31}"


def _name_regex(named: bool) -> str:
    fields = "_".join(f"{short}~" + (f"(?P<{key}>{rx})" if named else f"(?:{rx})")
                      for short, key, rx in READABLE)
    prog = f"(?:_prog~(?P<program_slug>{SLUG_RE}))?" if named else f"(?:_prog~{SLUG_RE})?"
    # the testbed of a pool, with testbed_as_dimension only (config.POOL_NAME_RE)
    tb = f"(?:_tb~(?P<testbed_name>{TESTBED_NAME_RE}))?" if named else f"(?:_tb~{TESTBED_NAME_RE})?"
    return fields + prog + tb + ("_cfg~(?P<cfg>[0-9a-f]{8})" if named else "_cfg~[0-9a-f]{8}")


_NAME_RE = re.compile(_name_regex(named=True))
# For Snakemake's wildcard_constraints.
POINT_PATTERN = _name_regex(named=False)


class UnknownPoint(ValueError):
    """A directory name that is not a point of this configuration."""


# -- the program under test -------------------------------------------------------------

def program_kind(program: str) -> str:
    """"collector" (xdplab's own), "attached" (what the user's loader attached), "source"
    (C, built by the workflow) or "object" (an ELF object built elsewhere)."""
    if program in ("collector", "attached"):
        return program
    if isinstance(program, str) and program.endswith(".c"):
        return "source"  # .bpf.c included
    if isinstance(program, str) and program.endswith(".o"):
        return "object"
    raise ValueError(f"{program!r} is not a program: give collector, attached, a C source "
                     "(ending .bpf.c or .c) or an ELF object (ending .o)")


def program_slug(program: str) -> str:
    """The program's readable part of a point name: its file's base name without .bpf.c,
    .c or .o, other characters than [A-Za-z0-9-] made '-', at most 24 characters
    ("attached" for the attached program).  Two programs may share a slug; the digest
    tells them apart."""
    if program_kind(program) == "attached":
        return "attached"
    base = os.path.basename(program)
    for ext in (".bpf.c", ".c", ".o"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", base).strip("-")[:SLUG_MAX].strip("-")
    return slug or "program"


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int, inode: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def program_sha256(program: str) -> str | None:
    """sha256 of the program's file (a C source's own text, its headers not included),
    None for the collector and an attached program.  Cached by the file's identity and
    modification time: the Snakefile asks for every job's settings."""
    if program_kind(program) in ("collector", "attached"):
        return None
    st = os.stat(program)
    return _file_sha256(os.path.abspath(program), st.st_mtime_ns, st.st_size, st.st_ino)


def _program_settings(config: dict, program: str, observe) -> dict:
    kind = program_kind(program)
    if kind == "collector":
        return {"program": program, "program_sha256": None, "program_name": None,
                "program_globals": None, "observe": None}
    if kind == "attached":
        return {"program": program, "program_sha256": None, "program_name": None,
                "program_globals": None, "observe": observe}
    return {"program": program, "program_sha256": program_sha256(program),
            "program_name": config.get("program_name") or "",
            "program_globals": dict(config.get("program_globals") or {}), "observe": observe}


def _testbed_keys(config: dict) -> tuple:
    return TESTBED_KEYS["lab" if config.get("testbed") == "lab" else "embedded"]


def _decided(part: dict, where: str, identity: tuple, credentials: tuple) -> dict:
    undecided = [k for k in part if k not in identity + credentials]
    if undecided:
        raise ValueError(f"{where}: {', '.join(map(str, undecided))} not decided in xdplab.trials "
                         "(LAB_*_IDENTITY or LAB_*_CREDENTIALS): whether it changes a trial's numbers")
    return {k: part.get(k) for k in identity}


def lab_identity(lab: dict | None) -> dict | None:
    """What of a lab (labconfig.check_lab's, normalised) changes a trial's numbers: the hosts,
    users, ports, interfaces, addresses and interpreters of its sources, the DUT agent's URL
    and interfaces; never credentials or their paths (LAB_*_CREDENTIALS).  A trial's settings
    hold this, so its directory name (cfg~) and its steps' parameters stay the same when a key
    or token file moves."""
    if not lab:
        return lab
    sources = [_decided(s, f"lab.sources[{i}]", LAB_SOURCE_IDENTITY, LAB_SOURCE_CREDENTIALS)
               for i, s in enumerate(lab.get("sources") or [])]
    dut = lab.get("dut")
    dut = _decided(dut, "lab.dut", LAB_DUT_IDENTITY, LAB_DUT_CREDENTIALS) if dut else dut
    return {"sources": sources, "dut": dut}


def lab_with_credentials(testbed: dict, config: dict) -> dict:
    """check_connectivity's testbed parameters, whose lab is its identity only (lab_identity),
    with the lab's credentials again, read from the configuration (Snakemake's `config` as a
    step script sees it).  No rule has the credentials as a parameter: Snakemake reruns a job
    whose parameters changed, and a rerun connectivity check reruns every trial after it."""
    if testbed.get("testbed") != "lab":
        return testbed
    from .config import validate_config

    lab = validate_config(config).values["lab"]
    if lab_identity(lab) != testbed.get("lab"):
        raise ValueError("the configuration's lab is not the lab of this rule's parameters: "
                         "was the configuration changed while the workflow ran?")
    return dict(testbed, lab=lab)


def _one(value):
    return value[0] if isinstance(value, list) else value


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _is_collector(settings: dict) -> bool:
    return settings.get("program", "collector") == "collector"


def _digested(settings: dict) -> dict:
    keys = DIGESTED + _testbed_keys(settings) + PATTERN_KNOBS.get(settings.get("pattern"), ())
    if not _is_collector(settings):
        keys += PROGRAM_SETTINGS  # a collector point's digest is what it always was
    return {k: settings.get(k) for k in keys}


def config_digest(settings: dict) -> str:
    """Short digest of the settings that change numbers but are not readable in the name."""
    text = json.dumps(_digested(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def point_settings_of(config: dict, point: dict) -> dict:
    """The full settings of one grid point: the configuration's scalars, the point's values."""
    s = {k: config.get(k) for k in ("duration_s",) + DIGESTED + _testbed_keys(config) + FOLLOWED}
    if "lab" in s:
        s["lab"] = lab_identity(s["lab"])
    for k in GRID:
        s[k] = point[k] if k in point else _one(config.get(k))
    for k in PATTERN_KNOBS.get(s["pattern"], ()):
        s[k] = config.get(k)
    s.update(_program_settings(config, s["program"] or "collector", s["observe"] or "full"))
    if not _is_collector(s):
        # A user's program is observed as `observe` says, which the collector carries out
        # (full: features, verdicts: counters, off: none; an attached program: none), so its
        # points do not multiply by the `collector` dimension.
        if s["program"] == "attached":   # the user's loader holds the interface alone
            s["observe"] = "off"
        s["collector"] = OBSERVED_BY[s["observe"]]
    return s


def point_name(settings: dict) -> str:
    """The directory name of a grid point (its settings as point_settings_of gives)."""
    readable = "_".join(f"{short}~{settings[key]}" for short, key, _ in READABLE)
    prog = "" if _is_collector(settings) else f"_prog~{program_slug(settings['program'])}"
    tb = f"_tb~{settings['testbed_name']}" if settings.get("testbed_name") else ""
    return f"{readable}{prog}{tb}_cfg~{config_digest(settings)}"


def parse_point(name: str) -> dict:
    """The readable settings of a point's name, its program's slug (None: the collector)
    and its cfg digest."""
    m = _NAME_RE.fullmatch(name)
    if not m:
        raise UnknownPoint(f"{name!r} is not a trial point name "
                           "(pps~N_size~N_dur~N_xdp~M_coll~C_pat~P[_prog~SLUG][_tb~TESTBED]_cfg~D)")
    d = m.groupdict()
    if d.get("testbed_name") is None:   # a point of one testbed, or of a pool without the dimension
        d.pop("testbed_name", None)
    return {k: int(v) if k in INTEGER else v for k, v in d.items()}


def settings_of_point(name: str, config: dict) -> dict:
    """The settings of the point named `name` under this configuration: its readable values
    from the name, the rest from the configuration, which must give the same digest (a point
    of another configuration is not run with this one's settings).  A user's program is
    the configuration's program of that slug, and its observe the configuration's, whose
    digest matches (two programs of one slug differ in their digests)."""
    parsed = parse_point(name)
    point = {k: parsed[k] for k in GRID if k in parsed}
    config = dict(config, duration_s=parsed["duration_s"])
    slug = parsed["program_slug"]
    if slug is None:
        candidates = [dict(point, program="collector")]
    else:
        programs = [p for p in _listed(config.get("program", "collector"))
                    if p != "collector" and program_slug(p) == slug]
        if not programs:
            raise UnknownPoint(f"{name}: no program of this configuration has the slug {slug!r} "
                               f"(program: {', '.join(map(str, _listed(config.get('program'))))}): "
                               "the trial belongs to other settings")
        candidates = [dict(point, program=p, observe=o) for p in programs
                      for o in _listed(config.get("observe", "full"))]
    tried = []
    testbed = parsed.get("testbed_name")
    if testbed is not None and testbed not in dimension_testbeds(config):
        raise UnknownPoint(f"{name}: testbed {testbed!r} is not a dimension of this configuration "
                           "(testbed_as_dimension and a testbed of that name in testbeds)")
    for candidate in candidates:
        s = point_settings_of(config, candidate)
        if config_digest(s) == parsed["cfg"]:
            return dict(s, testbed_name=testbed) if testbed else s
        tried.append(config_digest(s))
    raise UnknownPoint(f"{name}: its settings digest {parsed['cfg']} is not this configuration's "
                       f"({', '.join(tried)}): the trial belongs to other settings")


def grid_points(config: dict) -> list[dict]:
    """Every point of the configuration's grid, in canonical order, each once (observe does
    not apply to the collector: its points would repeat across observe's values)."""
    defaults = {"program": "collector", "observe": "full"}
    lists = {k: _listed(config[k] if k in config else defaults[k]) for k in GRID}
    points = [{}]
    for k in GRID:
        points = [dict(p, **{k: v}) for p in points for v in lists[k]]
    out, seen = [], set()
    for p in points:
        s = point_settings_of(config, p)
        name = point_name(s)
        if name not in seen:
            seen.add(name)
            out.append(s)
    testbeds = dimension_testbeds(config)
    return [dict(s, testbed_name=t) for s in out for t in testbeds] if testbeds else out


def dimension_testbeds(config: dict) -> list[str]:
    """The pool's testbed names when the testbed is a grid dimension (testbed_as_dimension:
    each point once per testbed, `_tb~<name>` in its name); else none."""
    if not config.get("testbed_as_dimension"):
        return []
    return [e["name"] for e in config.get("testbeds") or []]


def trials(config: dict) -> list[dict]:
    """{"point": name, "rep": n, "settings": {...}} for every trial of the configuration,
    in canonical order (grid order, then repeat)."""
    out = []
    for s in grid_points(config):
        name = point_name(s)
        for rep in range(config["repeats"]):
            out.append({"point": name, "rep": rep, "settings": s})
    return out


def run_order(trial_list: list[dict], seed: int) -> list[dict]:
    """The trials in the order they run: shuffled across the whole grid by `seed`, so that
    a slow drift of the machine does not line up with a parameter."""
    order = list(trial_list)
    random.Random(seed).shuffle(order)
    return order


def trial_dir(results: str, point: str, rep: int) -> str:
    """The one place a trial's directory is spelled (all_trial_dirs finds them all)."""
    return f"{results}/trials/{point}/rep~{rep}"


def all_trial_dirs(results: str):
    """Every trial directory under results/<experiment>/trials, as trial_dir names them."""
    from pathlib import Path

    return sorted(Path(results, "trials").glob("*/rep~*"))


def trial_record(experiment: str, settings: dict, rep: int) -> dict:
    """What identifies a trial in its records and in summary.csv's first columns."""
    return {"experiment": experiment, "target_pps": settings["target_pps"],
            "packet_size": settings["packet_size"], "repeat": rep,
            **{k: settings[k] for k in GRID if k not in ("target_pps", "packet_size")}}


# -- every trial on disk --------------------------------------------------------------

def on_disk(results: str) -> list[dict]:
    """Every trial directory under results/<experiment>/trials, of any settings: its point's
    readable settings, its repeat, and whether it finished (trial.json), failed (failed.json)
    or stopped half-way."""
    out = []
    for d in all_trial_dirs(results):
        try:
            point = parse_point(d.parent.name)
        except UnknownPoint:
            continue
        state = ("done" if (d / "trial.json").exists() else "failed" if (d / "failed.json").exists()
                 else "partial")
        out.append({**point, "repeat": int(d.name.split("~", 1)[1]), "state": state, "dir": str(d)})
    return out


def main(argv=None) -> int:
    """python -m xdplab.trials results/<experiment>: list every trial on disk, whatever the
    settings it ran with (summary.csv holds only the current configuration's)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m xdplab.trials", description=main.__doc__)
    ap.add_argument("results", help="results/<experiment>")
    args = ap.parse_args(argv)
    rows = on_disk(args.results)
    for r in rows:
        r["program"] = r["program_slug"] or "(collector)"
    keys = [k for _, k, _ in READABLE] + ["program", "cfg", "repeat", "state"]
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) if rows else len(k) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(str(r[k]).ljust(widths[k]) for k in keys))
    print(f"{len(rows)} trial(s) in {args.results}/trials", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
