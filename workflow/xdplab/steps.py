"""What each Snakemake rule of xdplab does; the scripts in workflow/scripts/ call these.

A trial is four rules that must run in order without another trial's steps
in between: arm_collector, launch_generator, verify_capture, gather_results.
The rules share the testbed resource (limit 1) and rising priorities, so
Snakemake runs a trial's steps back to back; on top of that every step
checks with the agent that the session it continues is the one its trial
armed, so a stale record from an earlier invocation is detected and never
trusted.
"""

from __future__ import annotations

import json
import os
import random
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

from . import accounting, featurefile, progress, source, timeseries
from .agentclient import AgentClient, AgentError

# tcpdump keeps the first bytes of every frame: Ethernet 14 + IPv4 20 + UDP 8 +
# our 18-byte payload header = 60; 64 leaves room for alignment, not for IP options.
SNAPLEN_BYTES = 64
# How long the agent keeps a session armed beyond the traffic, before its
# watchdog disarms by itself: covers SSH setup, upload, verification, gathering.
DEADLINE_MARGIN_S = 120
# The four rules of a trial; a failure of one is recorded in the trial's failed.json.
TRIAL_STEPS = ("arm_collector", "launch_generator", "verify_capture", "gather_results")
FAILED_FILE = "failed.json"
# Cleanup after a failure talks to the agent with this timeout per call.
CLEANUP_AGENT_TIMEOUT_S = 20.0
# While the generator runs, the agent is asked every WATCH_INTERVAL_S whether the
# session is still armed; this many unanswered questions in a row mean it is gone.
WATCH_INTERVAL_S = 1.0
WATCH_MISSES = 3


class StepError(RuntimeError):
    """A step failed for a reason the user can act on; the message says which."""


class Log:
    """Writes timestamped lines to the rule's log file, and progress to stderr.

    A log that cannot be written (disk full, read-only) never hides the step's own
    error: it says so once on stderr and from then on everything goes to stderr."""

    def __init__(self, path: str, step: str):
        self.path = path
        self.step = step
        self._f = None
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "a", buffering=1)
        except OSError as e:
            self._broken(e)

    def _broken(self, e: OSError) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
        self._f = None
        print(f"[{self.step}] cannot write the log {self.path}: {e.strerror or e}; "
              f"logging to stderr only", file=sys.stderr, flush=True)

    def __call__(self, msg: str, echo: bool = False):
        if self._f is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            try:
                self._f.write(f"{stamp} {msg}\n")
            except OSError as e:
                self._broken(e)
        if echo or self._f is None:
            print(f"[{self.step}] {msg}", file=sys.stderr, flush=True)

    def write(self, text: str):  # a stream, for the generator's progress lines
        for line in text.splitlines():
            if line.strip():
                self(line.strip(), echo=True)

    def flush(self):
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.flush()


class Interrupted(Exception):
    """SIGTERM, SIGINT or SIGHUP arrived (Ctrl-C, or Snakemake stopping the job)."""


class OutputError(StepError):
    """A result could not be written; the message names the path and the OS's reason."""


# Signals: the first one stops the step (raises Interrupted); once the step is
# stopping, later ones (Ctrl-C pressed twice, Snakemake forwarding the signal the
# terminal already sent) are only noted, so that cleanup runs to its end.
_STOP = {"stopping": False, "signals": []}
# What to undo when the step fails or is interrupted: (description, function).
_CLEANUPS: list = []


def _interrupt(signum, frame):
    name = signal.Signals(signum).name
    _STOP["signals"].append(name)
    if not _STOP["stopping"]:
        _STOP["stopping"] = True
        raise Interrupted(name)


def on_failure(description: str, fn) -> None:
    """Run fn (bounded, best effort) if this step fails or is interrupted."""
    _CLEANUPS.append((description, fn))


def _run_cleanups(log: "Log") -> list[str]:
    notes = []
    while _CLEANUPS:
        description, fn = _CLEANUPS.pop()
        try:
            result = fn()
            notes.append(f"{description}: {result}" if result else description)
            log(f"cleanup: {notes[-1]}", echo=bool(result))
        except Exception as e:  # cleanup is best effort; say what did not work
            notes.append(f"{description} failed: {e}")
            log(f"cleanup: {notes[-1]}", echo=True)
    return notes


def _os_reason(e: OSError) -> str:
    if e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return f"{type(e).__name__}: {e.strerror or e}"


def run_step(sm, fn) -> None:
    """Run one rule's step: log to the rule's log, turn signals into an orderly exit, and
    report a failure as one clear line instead of a traceback.

    On failure or interruption the step's cleanups run (disarm the trial's session,
    stop the generator), and for the four trial steps the failure is recorded in the
    trial directory's failed.json, which is not a Snakemake output and so survives."""
    log = Log(sm.log[0], sm.rule)
    _STOP.update(stopping=False, signals=[])
    _CLEANUPS.clear()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    unexpected = None
    try:
        fn(sm, log)
        _leave(log)
    except Interrupted as e:
        reason, status = f"interrupted by {e}", 130
    except (StepError, AgentError, source.SourceError) as e:
        reason, status = str(e), 1
    except OSError as e:
        reason, status = _os_reason(e), 1
    except BaseException as e:
        import traceback

        reason, status = f"unexpected error: {type(e).__name__}: {e}", 1
        unexpected = e
        log("FAILED with an unexpected error:\n" + traceback.format_exc())
    _STOP["stopping"] = True
    notes = _run_cleanups(log)
    if sm.rule in TRIAL_STEPS:
        record_failure(sm, reason, notes, log)
    log(f"FAILED: {reason}")
    print(f"xdplab {sm.rule}: {reason}", file=sys.stderr, flush=True)
    if unexpected is not None:
        raise unexpected
    sys.exit(status)


def _leave(log: "Log") -> None:
    """A step that succeeded has written and closed its outputs: its process ends here,
    without the interpreter's teardown (10 to 100 ms with numpy, pyarrow or matplotlib
    loaded, once per job: about 0.1 s per trial of a sweep).  Only the log and the
    standard streams are still open: flushed first."""
    log.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def record_failure(sm, reason: str, cleanup: list[str], log: "Log") -> None:
    """Write the trial's failed.json: this failure on top, earlier ones under "earlier"."""
    path = Path(sm.output[0]).parent / FAILED_FILE
    earlier = previous_failures(path)
    entry = {"trial": trial_id(sm.params.trial), "step": sm.rule, "reason": reason,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unix_s": round(time.time(), 3),
             "interrupted": reason.startswith("interrupted by "), "cleanup": cleanup,
             "earlier": earlier}
    try:
        write_json(str(path), entry)
    except (OSError, StepError) as e:
        log(f"could not record the failure: {e}", echo=True)


def previous_failures(path) -> list[dict]:
    """The failures recorded in a failed.json, oldest first (empty if none or unreadable)."""
    try:
        latest = read_json(path)
    except (OSError, ValueError):
        return []
    if not isinstance(latest, dict):
        return []
    earlier = latest.pop("earlier", [])
    return [e for e in earlier if isinstance(e, dict)] + [latest]


@contextlib.contextmanager
def writing(path):
    """Turn an OSError while writing `path` into an OutputError naming the path and reason."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e


def write_json(path: str, data) -> None:
    """Write atomically: a reader sees the old file, or the whole new one, never half."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    with writing(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "w") as f:
                json.dump(data, f, indent=1, sort_keys=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def trial_id(trial: dict) -> str:
    """<experiment>/<point>/rep~<n>: the trial's directory under results/<experiment>/trials."""
    return f"{trial['experiment']}/{trial['point']}/rep~{trial['repeat']}"


def place_in_run(trial_dir: str) -> dict | None:
    """Where this trial stands in the invocation's run order (shuffled by seed)."""
    try:
        plan = json.loads(progress.PLAN_FILE.read_text())
        return {"index": plan["trials"].index(trial_dir), "of": len(plan["trials"]),
                "seed": plan.get("seed"), "started_unix_s": plan.get("started_unix_s")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def agent_for(connectivity: dict) -> AgentClient:
    return AgentClient.from_description(connectivity["testbed"]["dut"])


# -- testbed and connectivity ------------------------------------------------
#
# A testbed description (testbed.json) is the same for the embedded testbed and a lab:
#   {"mode": "embedded"|"lab",
#    "sources": [{"name", "host", "port", "user", "key_file", "known_hosts", "python",
#                 "iface", "address" ("auto" or IPv4), "dut_iface"}, ...],
#    "dut": {"agent_url", "token_file", "ifaces": ["<if>", ...]}}
# check_connectivity resolves it (addresses, MACs) into connectivity.json:
#   {"testbed": <description>, "sources": [<source> + "address", "mac", "dut_address",
#    "dut_mac"], "dut": {"agent_url", "token_file", "ifaces": {"<if>": {"address", "mac"}}},
#    "agent": <health>, ...}

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
    from .testbed import EmbeddedTestbed

    tb = EmbeddedTestbed(src_iface=params["src_iface"], dut_iface=params["dut_iface"], mtu=params["mtu"])
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
                       sources_record: str | None = None) -> None:
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
    anyway (a failure there names the host)."""
    desc = testbed if isinstance(testbed, dict) else read_json(testbed)
    earlier = _sources_checked(sources_record, desc)
    problems = []
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

    if earlier is not None:
        resolved = _sources_answer(desc, earlier, dut_ifaces, problems, log, timeout_s)
    else:
        resolved = _sources_in_full(desc, dut_ifaces, problems, log, timeout_s)
    if problems:
        raise StepError("connectivity check failed:\n  " + "\n  ".join(problems))
    record = {"testbed": desc, "sources": resolved, "dut": dict(desc["dut"], ifaces=dut_ifaces),
              "agent": health, "checked_unix_s": time.time(),
              "sources_checked_unix_s": earlier["checked_unix_s"] if earlier else time.time()}
    write_json(output, record)
    if sources_record and earlier is None:
        write_json(sources_record, {"testbed": desc, "sources": resolved, "checked_unix_s": time.time()})
    log(f"testbed reachable: agent {desc['dut']['agent_url']}; " + "; ".join(
        f"{source.where(s)} {s['address']} -> {s['dut_iface']} {s['dut_address']}" for s in resolved),
        echo=True)


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
    if not isinstance(earlier, dict) or earlier.get("testbed") != desc \
            or (earlier.get("checked_unix_s") or 0) < started:
        return None
    return earlier


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
                             hostname=found.get("hostname"), python_version=found.get("python"),
                             dut_address=dut.get("address"), dut_mac=dut.get("mac")))
    return resolved


ENVIRONMENT_FILE = "environment.json"


def record_environment(desc: dict, path: Path, log: Log) -> None:
    """Each host's environment (xdplab.hostenv: kernel and its BPF options, CPU, NIC driver
    and offloads, tool versions) as the run found it, for an archive made after the
    testbed is gone.  Best effort: a host that cannot say is recorded with the reason."""
    from . import hostenv

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


# -- build ---------------------------------------------------------------------

def build_collector(source_path: str, header_path: str, connectivity_path: str, port: int,
                    output: str, log: Log, collector: str = "features") -> None:
    import hashlib

    conn = read_json(connectivity_path)
    agent = agent_for(conn)
    log(f"building the collector ({collector}) for port {port} on the DUT agent", echo=True)
    manifest = agent.build(port, collector)
    ours = {"source_sha256": hashlib.sha256(Path(source_path).read_bytes()).hexdigest(),
            "header_sha256": hashlib.sha256(Path(header_path).read_bytes()).hexdigest()}
    for key, value in ours.items():
        if manifest.get(key) != value:
            raise StepError(f"the DUT agent compiled a different {key.split('_')[0]} file than this "
                            f"workflow's ({manifest.get(key)} != {value}): deploy this workflow's "
                            f"dist/xdplab-agent.pyz (make agent) to the DUT")
    manifest["port"] = port
    write_json(output, manifest)
    log(f"built: tag {manifest['prog_tag']}, {manifest['insn_count']} instructions, "
        f"{manifest.get('verified_insns')} verified", echo=True)


# -- the four steps of a trial ----------------------------------------------

def _disarm_on_failure(conn: dict, trial: str, session_id: str | None = None):
    """A cleanup: disarm this trial's session (by id, or whichever session the agent has
    armed for this trial), with short timeouts; returns what it did."""
    def cleanup():
        agent = AgentClient.from_description(conn["dut"], timeout_s=CLEANUP_AGENT_TIMEOUT_S)
        sid = session_id
        if sid is None:
            armed = agent.health().get("session") or {}
            if armed.get("trial") != trial:
                return None
            sid = armed.get("session")
        try:
            result = agent.disarm(sid, timeout_s=CLEANUP_AGENT_TIMEOUT_S)
        except AgentError as e:
            if e.status == 404:
                return None
            raise
        return (f"disarmed session {sid}" + (" (the agent's watchdog had disarmed it already)"
                                              if result.get("watchdog") else ""))
    return cleanup


def source_shares(total_pps: int, n: int) -> list[int]:
    """Each source's share of the offered rate: equal parts, the remainder spread over the
    first ones, summing to the total."""
    base, extra = divmod(int(total_pps), n)
    return [base + (1 if k < extra else 0) for k in range(n)]


# Bytes a trial writes per packet: a pcap record header and the captured bytes (at most
# the snaplen: Ethernet + IPv4 + UDP + the payload header); JSON records are small.
PCAP_RECORD_HEADER_BYTES = 16
PCAP_FILE_HEADER_BYTES = 24
FIXED_TRIAL_BYTES = 1 << 20     # step records, logs
FEATURE_RECORD_BYTES = featurefile.RECORD_SIZE
DISK_MARGIN = 1.25              # the estimate is refused when it would leave less than this


def disk_estimate(trial: dict, params: dict) -> dict:
    """What a trial will write, in bytes, on the DUT (its captures, while it runs) and in
    results/ (the captures again if kept, the records)."""
    measured = trial["target_pps"] * params["duration_s"]
    packets = trial["target_pps"] * (params.get("warmup_s", 0) + params["duration_s"])
    frame = min(SNAPLEN_BYTES, 14 + 28 + trial["packet_size"])
    pcap = PCAP_FILE_HEADER_BYTES + packets * (PCAP_RECORD_HEADER_BYTES + frame)
    keep_features = params.get("keep_features") and params.get("collector", "features") == "features"
    features = measured * FEATURE_RECORD_BYTES if keep_features else 0
    # results/: the raw records while they are converted, then the Parquet file beside them
    return {"expected_packets": packets, "pcap_bytes_per_packet": PCAP_RECORD_HEADER_BYTES + frame,
            "feature_bytes_per_packet": FEATURE_RECORD_BYTES if keep_features else 0,
            "keep_pcap": bool(params.get("keep_pcap", True)),
            "dut_bytes": pcap + features, "results_bytes": FIXED_TRIAL_BYTES + 2 * features
            + (pcap if params.get("keep_pcap", True) else 0)}


def check_disk(estimate: dict, results_dir: str, dut_free: int | None, dut_dir: str | None) -> None:
    """Refuse a trial whose files would not fit, before any traffic, naming the path, the
    estimate and the free space."""
    def mib(n):
        return f"{n / (1 << 20):,.1f} MiB"

    packets = estimate["expected_packets"]
    capture = f"{packets:,} packets x {estimate['pcap_bytes_per_packet']} bytes of capture"
    feature_bpp = estimate.get("feature_bytes_per_packet") or 0
    features = f"{feature_bpp} bytes per packet of feature records" if feature_bpp else ""
    st = os.statvfs(results_dir)
    free = st.f_bavail * st.f_frsize
    need = int(estimate["results_bytes"] * DISK_MARGIN)
    if need > free:
        what = ", ".join(w for w in ((capture + ", keep_pcap=true") if estimate.get("keep_pcap", True)
                                     else "keep_pcap=false",
                                     features and features + " (raw, then Parquet)") if w)
        raise StepError(f"not enough space in {results_dir}: the trial will write about "
                        f"{mib(estimate['results_bytes'])} ({what}), {mib(free)} are free; free space, "
                        f"shorten the trial, or set keep_pcap=false"
                        + (" or keep_features=false" if features else ""))
    if dut_free is not None and int(estimate["dut_bytes"] * DISK_MARGIN) > dut_free:
        what = ", ".join(w for w in (capture, features) if w)
        raise StepError(f"not enough space on the DUT in {dut_dir}: the trial's captures"
                        f"{' and feature records' if features else ''} need about "
                        f"{mib(estimate['dut_bytes'])} ({what}), {mib(dut_free)} are free")


def arm_collector(trial: dict, params: dict, build_path: str, connectivity_path: str,
                  output: str, log: Log) -> None:
    conn = read_json(connectivity_path)
    # collector off loads no program: there is no build to check against
    build = read_json(build_path) if build_path else {}
    # check_connectivity, at the start of the invocation, disarmed any session an earlier
    # run left; the agent's health is asked again here (it may have gone since).
    agent = agent_for(conn)
    health = agent.health()
    from .program import arm_fields, upload_again   # (program imports this module)

    # A user's program: which object (by sha256) or "attached", and how it is observed.
    prog_fields = arm_fields(params, build)
    if prog_fields:
        params = dict(params, collector=prog_fields["collector"])
        if isinstance(prog_fields["program"], dict):
            upload_again(agent, health, build)
    estimate = disk_estimate(trial, params)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    check_disk(estimate, str(Path(output).parent), health.get("state_dir_free_bytes"),
               health.get("state_dir"))
    nsrc = len(conn["sources"])
    warmup = params.get("warmup_s", 0)
    # Source k sends its measured window as run_id + k and its warm-up as run_id + nsrc + k.
    run_ids = nsrc * 2 if warmup else nsrc
    run_id = random.SystemRandom().randrange(1, 65536 - run_ids)
    duration = params["duration_s"]
    shares = source_shares(trial["target_pps"], nsrc)
    collector = params.get("collector", "features")
    request = {
        "trial": trial_id(trial), "run_id": run_id, "run_ids": run_ids,
        "interfaces": list(conn["dut"]["ifaces"]), "xdp_mode": params["xdp_mode"],
        "port": params["port"], "expected_tag": build.get("prog_tag"), "snaplen": SNAPLEN_BYTES,
        "deadline_s": warmup + duration + params.get("watchdog_grace_s", DEADLINE_MARGIN_S),
        "expected_packets": max(shares) * (warmup + duration),
        "collector": collector,
    }
    request.update(prog_fields)
    if warmup:
        request["measured_run_ids"] = nsrc
    if collector == "features" and params.get("keep_features"):
        request["keep_features"] = True
    banner = progress.banner(str(Path(output).parent), trial, warmup + duration)
    if banner:
        log(banner)
        print(banner, file=sys.stderr, flush=True)
    # Interrupted while the agent arms, or arm.json not written: leave nothing armed.
    on_failure("disarm the trial's session", _disarm_on_failure(conn, request["trial"]))
    log(f"arming: {json.dumps(request)}")
    armed = agent.arm(request)
    armed["request"] = request
    armed["run_id"] = run_id
    armed["disk_estimate"] = estimate
    armed["armed_unix_s"] = time.time()
    armed["place_in_run"] = place_in_run(str(Path(output).parent))
    write_json(output, armed)
    modes = sorted({(i or {}).get("xdp_mode_in_effect") for i in (armed.get("interfaces") or {}).values()}
                   - {None})
    log(f"armed session {armed['session']} on {', '.join(request['interfaces'])}: "
        f"{'/'.join(modes) or 'no XDP'} mode, tag {armed.get('prog_tag')}", echo=True)


def _continue_session(conn: dict, agent: AgentClient, arm: dict, arm_path: str, step: str) -> dict:
    """The agent's view of the session this trial armed (a stale record is removed and the
    step fails); from here on, a failure of the step disarms that session."""
    try:
        state = agent.session(arm["session"])
    except AgentError as e:
        if e.status != 404:
            raise
        state = None
    if state is None or state.get("trial") != arm["request"]["trial"]:
        Path(arm_path).unlink(missing_ok=True)
        why = "left by an earlier, interrupted invocation"
        armed_by = arm.get("agent_instance")
        if armed_by:
            with contextlib.suppress(AgentError):
                now = agent.health().get("agent_instance")
                if now and now != armed_by:
                    why = f"the DUT agent was restarted since the trial was armed (instance {armed_by}, now {now})"
        raise StepError(f"{step}: the agent has no session {arm['session']} for trial "
                        f"{arm['request']['trial']} ({why}); "
                        f"removed {arm_path} so that the next run repeats the whole trial")
    on_failure(f"disarm session {arm['session']}", _disarm_on_failure(conn, arm["request"]["trial"],
                                                                      arm["session"]))
    return state


class _AgentWatch(threading.Thread):
    """While the generators run: ask the agent every second whether the trial's session
    is still armed.  If the agent is gone (killed, restarted) or the session was disarmed,
    stop the generators on the source hosts, so that the trial fails now and not after its
    whole duration, and keep the reason."""

    def __init__(self, conn: dict, arm: dict, log: Log):
        super().__init__(name="agent-watch", daemon=True)
        self.conn, self.arm, self.log = conn, arm, log
        self.problem: str | None = None
        self._stop_event = threading.Event()

    def stop(self):
        self._stop_event.set()

    def run(self):
        agent = AgentClient.from_description(self.conn["dut"], timeout_s=WATCH_INTERVAL_S * 2)
        sid, misses = self.arm["session"], 0
        while not self._stop_event.wait(WATCH_INTERVAL_S):
            problem = None
            try:
                state = agent.session(sid)
                misses = 0
                if state.get("state") != "armed":
                    problem = (f"the DUT agent's session {sid} was {state.get('state')} while the generator "
                               f"ran" + (" (its watchdog deadline passed)" if state.get("watchdog") else ""))
            except AgentError as e:
                if e.status == 404:
                    problem = f"the DUT agent no longer knows session {sid} (it was restarted)"
                else:
                    misses += 1
                    if misses >= WATCH_MISSES:
                        problem = f"the DUT agent stopped answering while the generator ran ({e})"
            if problem and not self._stop_event.is_set():
                self.problem = problem
                self.log(f"{problem}: stopping the generator", echo=True)
                for k, src in enumerate(self.conn["sources"]):
                    try:
                        source.stop_generators(src, self.arm["run_id"] + k)
                    except source.SourceError as e:
                        self.log(f"could not stop the generator: {e}", echo=True)
                return


def generator_jobs(trial: dict, params: dict, conn: dict, run_id: int) -> list:
    """(source, generator arguments) for every source of the trial: its share of the rate,
    its own run id (run_id + k), sent from its address to its DUT interface's."""
    nsrc = len(conn["sources"])
    shares = source_shares(trial["target_pps"], nsrc)
    jobs = []
    for k, (src, pps) in enumerate(zip(conn["sources"], shares)):
        args = {"dst": src["dut_address"], "port": params["port"], "pps": pps,
                "size": trial["packet_size"], "duration": params["duration_s"],
                "threads": params["threads"], "run_id": run_id + k, "src": src["address"]}
        if params.get("warmup_s"):
            args.update(warmup_s=params["warmup_s"], warmup_run_id=run_id + nsrc + k)
        if params.get("generator") == "trafgen":
            # netsniff-ng's trafgen: one paced process, constant spacing, whole frames to the
            # driver (the configuration refuses other patterns)
            args.update(backend="trafgen", threads=1, iface=src["iface"], dst_mac=src.get("dut_mac"))
            jobs.append((src, args))
            continue
        args.update(_generator_options(params, src))
        jobs.append((src, args))
    return jobs


def _generator_options(params: dict, src: dict) -> dict:
    """Generator options beyond the basic ones: pattern, send path, the interface whose
    counters locate loss on the source."""
    opts = {"iface": src["iface"], "pattern": params.get("pattern", "constant")}
    if opts["pattern"] == "burst":
        opts["burst_size"] = params.get("burst_size")
    elif opts["pattern"] == "poisson":
        opts["seed"] = params.get("seed")
    if params.get("send_path", "udp") == "packet":
        opts.update(send_path="packet", dst_mac=src.get("dut_mac"))
    return opts


def launch_generator(trial: dict, params: dict, arm_path: str, connectivity_path: str,
                     output: str, log: Log) -> None:
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    agent = agent_for(conn)
    state = _continue_session(conn, agent, arm, arm_path, "launch_generator")
    if state.get("state") != "armed":
        raise StepError(f"launch_generator: session {arm['session']} is {state.get('state')}, not armed")
    jobs = generator_jobs(trial, params, conn, arm["run_id"])
    for src, args in jobs:
        log(f"launching the generator on the {source.where(src)}: {json.dumps(args)}", echo=True)
    watch = _AgentWatch(conn, arm, log)
    watch.start()
    try:
        reports = source.run_generators(jobs, timeout_s=params.get("warmup_s", 0) + params["duration_s"] + 60,
                                         err_stream=log)
    except source.SourceError as e:
        if watch.problem:
            raise StepError(f"{watch.problem}; the generator was stopped") from e
        raise
    finally:
        watch.stop()
    if watch.problem:
        raise StepError(f"{watch.problem}; the generator was stopped")
    for (src, _), report in zip(jobs, reports):
        report["source"] = src["name"]
    write_json(output, {"sources": reports})
    for (src, _), r in zip(jobs, reports):
        log(f"generator on {src['name']}: sent {r['sent']} of {r['scheduled']} "
            f"({r['achieved_pps']:.1f} pps), {r['send_errors']} send errors"
            + ("" if r.get("rate_sustained", True) else "; the source could not sustain the rate"),
            echo=True)


def verify_capture(trial: dict, params: dict, arm_path: str, generator_path: str,
                   connectivity_path: str, output: str, log: Log) -> None:
    """Stop the captures; have the agent check each source's sequence numbers in its
    interface's capture where it was written (the controller never holds a capture it does
    not keep); download the captures that are kept, checked against the agent's sha256."""
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    gens = read_json(generator_path)["sources"]
    agent = agent_for(conn)
    _continue_session(conn, agent, arm, arm_path, "verify_capture")
    stats = agent.stop_capture(arm["session"])
    trial_dir = Path(output).parent
    ifaces = list(conn["dut"]["ifaces"])
    checks = []
    for k, (src, gen) in enumerate(zip(conn["sources"], gens)):
        check = agent.check_capture(arm["session"], {
            "interface": src["dut_iface"], "run_id": arm["run_id"] + k, "scheduled": gen["scheduled"],
            "threads": gen.get("threads") or params["threads"],
            "failed_seqs": gen.get("failed_seqs", [])[:1000],
            "send_errors": gen["send_errors"]})
        checks.append(dict(check, source=src["name"], interface=src["dut_iface"]))
    kept = bool(params.get("keep_pcap", True))
    for iface in ifaces if kept else []:
        pcap_out = trial_dir / capture_name(iface, ifaces)
        # The capture lands under a temporary name and becomes its own name only when whole
        # and checked: a full disk never leaves a truncated capture behind.
        tmp = pcap_out.with_name(f".{pcap_out.name}.tmp{os.getpid()}")
        try:
            with writing(pcap_out):
                sha = agent.download_capture(arm["session"], tmp, iface)
            expected = (stats.get(iface) or {}).get("pcap_sha256")
            if expected and sha != expected:
                raise StepError(f"the capture of {iface} downloaded from the DUT agent has sha256 {sha}, "
                                f"the agent computed {expected}: the download was corrupted")
            with writing(pcap_out):
                os.replace(tmp, pcap_out)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    write_json(output, {"tcpdump": stats, "checks": checks, "kept": kept})
    for iface in ifaces:
        st = stats.get(iface) or {}
        log(f"tcpdump on {iface}: captured {st.get('captured')}, dropped by kernel "
            f"{st.get('dropped_by_kernel')}" + ("" if kept else "; not kept (keep_pcap=false)"), echo=True)
    for c in checks:
        log(f"capture vs generator ({c['source']} on {c['interface']}, checked on the DUT in "
            f"{c.get('check_s')} s): {c['unique']} unique, {c['missing']} missing, "
            f"{c['duplicated']} duplicated, {c['reordered']} reordered", echo=True)


TIMESERIES_FILE = "timeseries.csv"
FEATURES_FILE = "features.parquet"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _keep_features(agent: AgentClient, arm: dict, gathered: dict, gens: list, trial_dir: Path,
                   log: Log) -> dict | None:
    """Download each interface's raw feature records (streamed to a file on the DUT while the
    trial ran), check them against the agent's sha256 and count, and write features.parquet;
    None when the trial kept none (keep_features=false, or collector counters/off)."""
    kept = {name: (blk.get("features") or {})["features_file"]
            for name, blk in (gathered.get("interfaces") or {}).items()
            if (blk.get("features") or {}).get("features_file")}
    for name, info in kept.items():
        if info.get("error"):
            raise StepError(f"the DUT agent could not keep every feature record of {name}: {info['error']}")
    if not kept:
        return None
    same_clock = bool(gens) and all(g.get("boot_id") and g.get("boot_id") == gathered.get("boot_id")
                                    for g in gens)
    raw = []
    try:
        for name, info in kept.items():
            path = trial_dir / f".features-{name}.bin"
            with writing(path):
                sha = agent.download_features(arm["session"], path, name)
            if info.get("sha256") and sha != info["sha256"]:
                raise StepError(f"the feature records of {name} downloaded from the DUT agent have "
                                f"sha256 {sha}, the agent computed {info['sha256']}: the download was "
                                f"corrupted")
            raw.append((name, path))
        with writing(trial_dir / FEATURES_FILE):
            rows = featurefile.write_parquet(raw, trial_dir / FEATURES_FILE, same_clock)
    finally:
        for _, path in raw:
            path.unlink(missing_ok=True)
    expected = sum(int(info.get("records") or 0) for info in kept.values())
    if rows != expected:
        raise StepError(f"{FEATURES_FILE} has {rows} rows, the DUT agent wrote {expected} records")
    size = (trial_dir / FEATURES_FILE).stat().st_size
    log(f"kept {rows} feature records in {FEATURES_FILE} ({size / (1 << 20):.1f} MiB)", echo=True)
    return {"file": FEATURES_FILE, "rows": rows, "bytes": size, "raw": kept}


def capture_name(iface: str, ifaces: list) -> str:
    """capture.pcap with one DUT interface; capture-<if>.pcap with several."""
    return "capture.pcap" if len(ifaces) == 1 else f"capture-{iface}.pcap"


def gather_results(trial: dict, params: dict, arm_path: str, generator_path: str, capture_path: str,
                   connectivity_path: str, output: str, log: Log) -> None:
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    gens = read_json(generator_path)["sources"]
    capture = read_json(capture_path)
    agent = agent_for(conn)
    _continue_session(conn, agent, arm, arm_path, "gather_results")
    gathered = agent.disarm(arm["session"])
    log(f"disarmed session {arm['session']}")
    trial_dir = Path(output).parent
    features = _keep_features(agent, arm, gathered, gens, trial_dir, log)
    summary = accounting.summarize(params, trial, arm, conn["sources"], gens, capture, gathered)
    with writing(trial_dir / TIMESERIES_FILE):
        _write_text(trial_dir / TIMESERIES_FILE, timeseries.csv_text(summary["timeseries"]))
    # Earlier failed attempts of this trial stay on record in trial.json.
    failed_path = Path(output).parent / FAILED_FILE
    earlier = previous_failures(failed_path)
    disk = {"estimate": arm.get("disk_estimate"),
            "actual": {"dut_bytes": sum(int(st.get("pcap_bytes") or 0)
                                        for st in (capture.get("tcpdump") or {}).values()
                                        if isinstance(st, dict)),
                       "features_bytes": sum(int(((b.get("features") or {}).get("features_file") or {})
                                                 .get("bytes") or 0)
                                             for b in (gathered.get("interfaces") or {}).values()),
                       "results_bytes": sum(p.stat().st_size for p in Path(output).parent.rglob("*")
                                            if p.is_file())}}
    wall = {"armed_unix_s": arm.get("armed_unix_s"), "gathered_unix_s": time.time()}
    write_json(output, {"trial": trial, "settings": params, "summary": summary["row"], "disk": disk,
                        "wall": wall,
                        "sources": summary["sources"], "interfaces": summary["interfaces"],
                        "identities": summary["identities"], "arm": arm, "generators": gens,
                        "testbed": {"mode": conn["testbed"]["mode"], "sources": conn["sources"],
                                    "dut": conn["dut"]},
                        "capture": capture, "features": features, "agent": gathered,
                        "previous_failures": earlier})
    failed_path.unlink(missing_ok=True)
    row = summary["row"]
    if earlier:
        log(f"this trial had failed {len(earlier)} time(s) before; the reasons are in trial.json "
            f"(previous_failures)", echo=True)
    log(f"trial {trial_id(trial)}: sent {row['sent']}, nic_rx {row['nic_rx']}, xdp_matched "
        f"{row['xdp_matched']}, tcpdump_captured {row['tcpdump_captured']}, lost {row['lost']}"
        f"{' (' + row['loss_where'] + ')' if row.get('loss_where') else ''}, "
        f"unexplained {row['unexplained']}", echo=True)
