"""check_connectivity's step: bring the testbed up (the embedded one) or take a lab's
hosts from the configuration, then check every host and name what is unreachable.

A testbed description (testbed.json) is the same for the embedded testbed and a lab:
  {"mode": "embedded"|"lab",
   "sources": [{"name", "host", "port", "user", "key_file", "known_hosts", "python",
                "iface", "address" ("auto" or IPv4), "dut_iface"}, ...],
   "dut": {"agent_url", "token_file", "ifaces": ["<if>", ...]}}
check_connectivity resolves it (addresses, MACs) into connectivity.json:
  {"testbed": <description>, "sources": [<source> + "address", "mac", "dut_address",
   "dut_mac"], "dut": {"agent_url", "token_file", "ifaces": {"<if>": {"address", "mac"}}},
   "agent": <health>, ...}
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

from .. import progress, source
from ..agentclient import AgentClient, AgentError
from .machinery import Log, StepError, read_json, write_json

def describe_embedded(desc: dict, source_python: str) -> dict:
    """The embedded testbed's own description (xdplab.testbed) as a testbed description."""
    if desc.get("sources"):
        sources = [dict(s, name=s.get("name") or f"src{i}", python=source_python)
                   for i, s in enumerate(desc["sources"])]
        ifaces = [i["name"] if isinstance(i, dict) else i for i in desc["dut"].get("ifaces", [])]
    else:  # one source, one DUT interface
        link = desc["test_link"]
        sources = [dict(desc["source"], name="src0", python=source_python, iface=link["src_iface"],
                        address=link["src_addr"], dut_iface=link["dut_iface"])]
        ifaces = [link["dut_iface"]]
    name = desc.get("name") or "xdplab"
    if name != "xdplab":   # an instance k >= 1 (xdplab<k>): its own generators' names (source.remote_prefix)
        sources = [dict(s, generator_prefix=f"/tmp/{name}-generator-") for s in sources]
    return {"mode": "embedded", "sources": sources,
            "dut": {"agent_url": desc["dut"]["agent_url"], "token_file": desc["dut"]["token_file"],
                    "ifaces": ifaces or [desc["dut"]["iface"]]},
            "embedded": {k: desc.get(k) for k in ("name", "state_dir", "cleared", "created")}}


def bring_up(params: dict, log: Log) -> dict:
    """Bring the embedded testbed up (idempotent: a healthy one is reused), or take a lab's
    hosts from the configuration; return the testbed description."""
    if params["testbed"] == "lab":
        lab = params["lab"]
        desc = {"mode": "lab", "sources": lab["sources"], "dut": lab["dut"]}
        log(f"lab: {len(desc['sources'])} source host(s) "
            f"({', '.join(source.where(s) for s in desc['sources'])}), DUT agent "
            f"{desc['dut']['agent_url']} on {', '.join(desc['dut']['ifaces'])}")
        return desc
    from ..testbed import EmbeddedTestbed

    tb = EmbeddedTestbed(src_iface=params["src_iface"], dut_iface=params["dut_iface"], mtu=params["mtu"],
                         instance=params.get("instance", 0))
    log("bringing up the embedded testbed", echo=True)
    raw = tb.up()
    for item in raw.get("cleared", []):
        log(f"cleared leftover: {item}", echo=True)
    if not raw.get("created"):
        log("reusing the testbed that is already up (left by an earlier run or by "
            "`python -m xdplab.testbed up`)", echo=True)
    desc = describe_embedded(raw, params["source_python"])
    log(f"testbed up: {json.dumps(desc)}")
    return desc


def _dut_ifaces(health: dict, wanted: list[str]) -> tuple[dict, list[str]]:
    """{"<if>": {"address", "mac"}} for the DUT interfaces, from the agent's health."""
    found, problems = {}, []
    known = health.get("interfaces") or {}
    for name in wanted:
        info = known.get(name) if isinstance(known, dict) else None
        if info is None:
            problems.append(f"DUT: the agent was not started with --interface {name} (it has "
                            f"{', '.join(known) if known else 'none'})")
            continue
        if not info.get("exists", True):
            problems.append(f"DUT: interface {name} does not exist")
            continue
        addrs = [a.split("/")[0] for a in info.get("ipv4") or []]
        if not addrs:
            problems.append(f"DUT: interface {name} has no IPv4 address")
            continue
        found[name] = {"address": addrs[0], "mac": info.get("mac")}
    return found, problems


def check_connectivity(testbed, output: str, log: Log, timeout_s: float = 5.0,
                       sources_record: str | None = None, preflight_run: dict | None = None,
                       preflight_record: str | None = None, compile_meanwhile=()) -> None:
    """The agent's health (and the DUT interfaces' addresses), SSH to every source (and its
    address), a ping from each source to its DUT interface: name what is unreachable.  What
    an earlier, crashed run left on the hosts (an armed session on the agent, a generator
    on a source) is cleared here, and said so.  `testbed`: the description, or the path
    of a JSON file holding it.

    `sources_record`: where the invocation's first check keeps what it found of the
    sources.  A later check of the same invocation and testbed (the one before each trial)
    logs in nowhere: each source's SSH server must still answer (a TCP greeting, a few
    ms), and the facts, address and ping of the first check stand.  Logging in, the
    remote python and the ping cost ~0.2 s per trial, and the trial's generator logs in
    anyway (a failure there names the host).

    `compile_meanwhile`: (port, collector) of the collector builds the run will arm; the
    invocation's full check has the agent compile them while it checks the sources
    (`_compile_meanwhile`)."""
    desc = testbed if isinstance(testbed, dict) else read_json(testbed)
    earlier = _sources_checked(sources_record, desc)
    problems = []
    fixes, transient = [], []   # the agent's (an AgentError knows its cause); a source's say it themselves
    agent = AgentClient.from_description(desc["dut"], timeout_s=timeout_s)
    dut_ifaces = {}
    try:
        health = agent.health(timeout_s=timeout_s)
        log(f"agent healthy: {health.get('hostname')} kernel {health.get('kernel')} "
            f"bcc {health.get('bcc_version')}")
        stale = health.get("session")
        if stale:
            agent.reset()
            log(f"cleared leftover: session {stale.get('session')} (trial {stale.get('trial')}, "
                f"{stale.get('state')}) was armed on the DUT agent by an earlier run: disarmed",
                echo=True)
        dut_ifaces, bad = _dut_ifaces(health, desc["dut"]["ifaces"])
        problems += [f"DUT agent at {desc['dut']['agent_url']}: {p}" for p in bad]
    except AgentError as e:
        health = None
        problems.append(str(e))
        fixes.append(e.fix)
        transient.append(e.transient)

    compiling = None
    if earlier is not None:
        resolved = _sources_answer(desc, earlier, dut_ifaces, problems, log, timeout_s)
    else:
        if compile_meanwhile and health is not None:
            compiling = _compile_meanwhile(desc["dut"], list(compile_meanwhile), log)
        resolved = _sources_in_full(desc, dut_ifaces, problems, log, timeout_s)
    if problems:
        # Running again helps by itself only if every problem was a passing one.
        raise StepError("connectivity check failed:\n  " + "\n  ".join(problems),
                        fix="\n".join(f for f in fixes if f) or None,
                        transient=len(transient) == len(problems) and all(transient))
    # The pre-flight check (xdplab.preflight, docs/preflight.md), at the invocation's full
    # check: before any traffic, everything wrong with the hosts at once.
    if preflight_run is not None and earlier is None:
        from .. import preflight
        try:
            preflight.check(desc["dut"], health, agent, resolved, preflight_run, preflight_record, log)
        except preflight.Refused as e:
            raise StepError(str(e)) from None
    if compiling is not None:
        compiling.join()
    record = {"testbed": desc, "sources": resolved, "dut": dict(desc["dut"], ifaces=dut_ifaces),
              "agent": health, "checked_unix_s": time.time(),
              "sources_checked_unix_s": earlier["checked_unix_s"] if earlier else time.time()}
    write_json(output, record)
    if sources_record and earlier is None:
        write_json(sources_record, {"testbed": desc, "sources": resolved, "checked_unix_s": time.time()})
    log(f"testbed reachable: agent {desc['dut']['agent_url']}; " + "; ".join(
        f"{source.where(s)} {s['address']} -> {s['dut_iface']} {s['dut_address']}" for s in resolved),
        echo=True)


def collector_builds(settings: dict) -> list[tuple[int, str]]:
    """(port, collector) of each collector build the configuration's trials arm (none for a
    user's program or collector off)."""
    from .. import trials

    return sorted({(settings["port"], t["settings"]["collector"]) for t in trials.trials(settings)
                   if trials.program_kind(t["settings"].get("program") or "collector") == "collector"
                   and t["settings"]["collector"] != "off"})


def _compile_meanwhile(dut: dict, builds: list, log: Log) -> threading.Thread:
    """Have the agent compile the collector builds (POST /build: compiled once, kept in its
    program cache) in a thread while the full check logs in to the sources: BCC's ~2.5 s
    here, which a testbed just brought up would otherwise spend in build_collector or in
    the first trial's arm, after this check.  Best effort: a compile that fails here fails
    again where it is needed, with its reason."""
    agent = AgentClient.from_description(dut)

    def run():
        for port, collector in builds:
            try:
                built = agent.build(port, collector)
                log(f"the DUT compiled the collector ({collector}, port {port}) meanwhile: tag "
                    f"{built.get('prog_tag')}, {built.get('compile_s')} s"
                    + (" (it had it already)" if built.get("reused") else ""))
            except Exception as e:   # said where it is needed: the build or arm step
                log(f"compiling the collector ({collector}, port {port}) meanwhile failed: {e}")

    t = threading.Thread(target=run, name="compile", daemon=True)
    t.start()
    return t


def _sources_checked(path: str | None, desc: dict) -> dict | None:
    """The invocation's full check of the sources (at `path`), if it was made by this
    invocation (its plan, progress.PLAN_FILE) on this testbed; else None."""
    started = _invocation_started()
    if not path or not started:
        return None
    try:
        earlier = read_json(path)
    except (OSError, ValueError, StepError):
        return None
    if not isinstance(earlier, dict) or _hosts(earlier.get("testbed")) != _hosts(desc) \
            or (earlier.get("checked_unix_s") or 0) < started:
        return None
    # An embedded testbed this check had to bring up again is new hosts: check them in full.
    if (desc.get("embedded") or {}).get("created"):
        return None
    return earlier


def _hosts(desc) -> dict | None:
    """A description's hosts, without what the embedded testbed's bring-up did this time
    (its cleared and created lists): the build's check of a run that brought the testbed
    up would otherwise not match the first trial's, which found it up, and that check would
    log in to every source and run the pre-flight again (0.9 s here)."""
    if not isinstance(desc, dict):
        return None
    embedded = desc.get("embedded")
    return dict(desc, embedded={k: v for k, v in embedded.items() if k not in ("cleared", "created")}
                if isinstance(embedded, dict) else embedded)


def _invocation_started() -> float:
    """When the running Snakemake invocation started (its plan, progress.PLAN_FILE); 0 if
    unknown."""
    try:
        return json.loads(progress.PLAN_FILE.read_text()).get("started_unix_s") or 0
    except (OSError, ValueError, AttributeError):
        return 0


def _sources_answer(desc: dict, earlier: dict, dut_ifaces: dict, problems: list, log: Log,
                    timeout_s: float) -> list[dict]:
    """Each source's SSH server answers; its facts as the invocation's full check found them."""
    found = {s.get("name"): s for s in earlier.get("sources") or []}
    answers = _in_parallel(lambda src: source.ssh_answers(src, timeout_s), desc["sources"])
    resolved = []
    for src, answer in zip(desc["sources"], answers):
        if isinstance(answer, source.SourceError):
            problems.append(str(answer))
            continue
        if isinstance(answer, BaseException):
            raise answer
        dut = dut_ifaces.get(src["dut_iface"], {})
        resolved.append(dict(found[src.get("name")], dut_address=dut.get("address"), dut_mac=dut.get("mac")))
        log(f"{source.where(src)} answers on SSH; its address, python and test link as checked at "
            f"this run's first connectivity check")
    return resolved


def _sources_in_full(desc: dict, dut_ifaces: dict, problems: list, log: Log, timeout_s: float) -> list[dict]:
    """Log in to each source: its facts and address, leftover generators stopped, a ping to
    its DUT interface."""
    def check_source(src):
        dut = dut_ifaces.get(src["dut_iface"], {})
        return source.preflight(src, dut.get("address"), timeout_s=timeout_s)

    resolved = []
    for src, found in zip(desc["sources"], _in_parallel(check_source, desc["sources"])):
        if isinstance(found, source.SourceError):
            problems.append(str(found))
            continue
        if isinstance(found, BaseException):
            raise found
        for proc in found.get("stopped", []):
            log(f"cleared leftover: generator still running on the {source.where(src)} "
                f"from an earlier run: stopped ({proc})", echo=True)
        try:
            address = source.resolve_address(src, found)
        except source.SourceError as e:
            problems.append(str(e))
            continue
        log(f"{source.where(src)} reachable over SSH: {found['hostname']}, python {found['python']}, "
            f"{found.get('system')}; {src['iface']} has {address}")
        dut = dut_ifaces.get(src["dut_iface"], {})
        ping = found.get("ping")
        if ping is not None and not ping.get("ok"):
            problems.append(f"test link: ping from the {source.where(src)} ({src['iface']}, {address}) "
                            f"to the DUT ({src['dut_iface']}, {dut.get('address')}) failed: "
                            f"{' / '.join(ping.get('said') or [])}")
        elif ping is not None:
            log(f"ping {address} ({src['name']}, {src['iface']}) -> {dut.get('address')} "
                f"({src['dut_iface']}) over the test link: ok")
        resolved.append(dict(src, address=address, mac=found.get("mac"), system=found.get("system"),
                             facts=found.get("facts"),  # for the pre-flight (xdplab.preflight)
                             hostname=found.get("hostname"), python_version=found.get("python"),
                             dut_address=dut.get("address"), dut_mac=dut.get("mac")))
    return resolved


ENVIRONMENT_FILE = "environment.json"


def record_environment(desc: dict, path: Path, log: Log) -> None:
    """Each host's environment (xdplab.hostenv: kernel and its BPF options, CPU, NIC driver
    and offloads, tool versions) as the run found it, for an archive made after the
    testbed is gone.  Best effort: a host that cannot say is recorded with the reason."""
    from .. import hostenv

    hosts = hostenv.collect([desc], log=log)
    write_json(str(path), {"recorded_unix_s": time.time(),
                           "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "hosts": hosts})


def record_environment_once(desc: dict, path: str, log: Log) -> None:
    """record_environment, at the first connectivity check of an invocation only."""
    started = _invocation_started()
    with contextlib.suppress(OSError):
        if Path(path).stat().st_mtime >= started:
            return
    record_environment(desc, Path(path), log)


def _in_parallel(fn, items) -> list:
    """fn(item) for every item at once (threads); each result, or the exception it raised."""
    out = [None] * len(items)

    def run(i, item):
        try:
            out[i] = fn(item)
        except BaseException as e:  # handed back to the caller, who decides
            out[i] = e

    threads = [threading.Thread(target=run, args=(i, item), daemon=True) for i, item in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out

