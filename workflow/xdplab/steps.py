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
import shlex
import signal
import sys
import time
from pathlib import Path

from . import accounting, pcapcheck, source
from .agentclient import AgentClient, AgentError

# tcpdump keeps the first bytes of every frame: Ethernet 14 + IPv4 20 + UDP 8 +
# our 18-byte payload header = 60; 64 leaves room for alignment, not for IP options.
SNAPLEN_BYTES = 64
# How long the agent keeps a session armed beyond the traffic, before its
# watchdog disarms by itself: covers SSH setup, upload, verification, gathering.
DEADLINE_MARGIN_S = 120


class StepError(RuntimeError):
    """A step failed for a reason the user can act on; the message says which."""


class Log:
    """Writes timestamped lines to the rule's log file, and progress to stderr."""

    def __init__(self, path: str, step: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", buffering=1)
        self.step = step

    def __call__(self, msg: str, echo: bool = False):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._f.write(f"{stamp} {msg}\n")
        if echo:
            print(f"[{self.step}] {msg}", file=sys.stderr, flush=True)

    def write(self, text: str):  # a stream, for the generator's progress lines
        for line in text.splitlines():
            if line.strip():
                self(line.strip(), echo=True)

    def flush(self):
        self._f.flush()


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived (Snakemake stops jobs with SIGTERM)."""


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_step(sm, fn) -> None:
    """Run one rule's step: log to the rule's log, turn signals into an orderly exit, and
    report a known failure as one clear line instead of a traceback."""
    log = Log(sm.log[0], sm.rule)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        fn(sm, log)
    except (StepError, AgentError, source.SourceError) as e:
        log(f"FAILED: {e}")
        print(f"xdplab {sm.rule}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Interrupted as e:
        log(f"interrupted by {e}")
        print(f"xdplab {sm.rule}: interrupted by {e}", file=sys.stderr, flush=True)
        sys.exit(130)
    except BaseException:
        import traceback

        log("FAILED with an unexpected error:\n" + traceback.format_exc())
        raise


def write_json(path: str, data) -> None:
    """Write atomically: a reader sees the old file, or the whole new one, never half."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def trial_id(trial: dict) -> str:
    return (f"{trial['experiment']}/pps~{trial['target_pps']}/size~{trial['packet_size']}"
            f"/rep~{trial['repeat']}")


def agent_for(connectivity: dict) -> AgentClient:
    return AgentClient.from_description(connectivity["testbed"]["dut"])


# -- testbed and connectivity ------------------------------------------------

def testbed_up(params: dict, output: str, log: Log) -> None:
    from .testbed import EmbeddedTestbed

    tb = EmbeddedTestbed(src_iface=params["src_iface"], dut_iface=params["dut_iface"], mtu=params["mtu"])
    log("bringing up the embedded testbed", echo=True)
    desc = tb.up()
    for item in desc.get("cleared", []):
        log(f"cleared leftover: {item}", echo=True)
    desc["source"]["python"] = params["source_python"]
    write_json(output, desc)
    log(f"testbed up: {json.dumps(desc)}")


def check_connectivity(testbed_path: str, output: str, log: Log, timeout_s: float = 5.0) -> None:
    """Ping over the test link, SSH to the source, the agent's health: name what is unreachable."""
    desc = read_json(testbed_path)
    problems = []
    agent = AgentClient.from_description(desc["dut"], timeout_s=timeout_s)
    try:
        health = agent.health(timeout_s=timeout_s)
        log(f"agent healthy: {health.get('hostname')} kernel {health.get('kernel')} "
            f"bcc {health.get('bcc_version')}")
        if health.get("session"):
            log(f"agent reports an armed session {health['session']}", echo=True)
    except AgentError as e:
        health = None
        problems.append(str(e))
    try:
        src = source.check(desc["source"], timeout_s=timeout_s)
        log(f"source host reachable over SSH: {src}")
    except source.SourceError as e:
        src = None
        problems.append(str(e))
    link = desc["test_link"]
    if src is not None:
        ping = _ping_over_test_link(desc, timeout_s)
        if ping is not None:
            problems.append(ping)
        else:
            log(f"ping {link['src_addr']} -> {link['dut_addr']} over the test link: ok")
    if problems:
        raise StepError("connectivity check failed:\n  " + "\n  ".join(problems))
    write_json(output, {"testbed": desc, "agent": health, "source": src,
                        "checked_unix_s": time.time()})


def _ping_over_test_link(desc: dict, timeout_s: float):
    link = desc["test_link"]
    with source.connect(desc["source"], timeout_s) as c:
        r = c.run(f"ping -c 3 -i 0.2 -W 1 -I {shlex.quote(link['src_iface'])} "
                  f"{shlex.quote(link['dut_addr'])}", hide=True, warn=True, timeout=timeout_s * 2)
    if r.failed:
        return (f"test link: ping from the source host ({link['src_iface']}, {link['src_addr']}) to the "
                f"DUT ({link['dut_addr']}) failed: {r.stdout.strip().splitlines()[-1:]}")
    return None


# -- build ---------------------------------------------------------------------

def build_collector(source_path: str, header_path: str, connectivity_path: str, port: int,
                    output: str, log: Log) -> None:
    import hashlib

    conn = read_json(connectivity_path)
    agent = agent_for(conn)
    log(f"building the collector for port {port} on the DUT agent", echo=True)
    manifest = agent.build(port)
    ours = {"source_sha256": hashlib.sha256(Path(source_path).read_bytes()).hexdigest(),
            "header_sha256": hashlib.sha256(Path(header_path).read_bytes()).hexdigest()}
    for key, value in ours.items():
        if manifest.get(key) != value:
            raise StepError(f"the DUT agent compiled a different {key.split('_')[0]} file than this "
                            f"workflow's ({manifest.get(key)} != {value}): copy bpf/ to the DUT again")
    manifest["port"] = port
    write_json(output, manifest)
    log(f"built: tag {manifest['prog_tag']}, {manifest['insn_count']} instructions, "
        f"{manifest.get('verified_insns')} verified", echo=True)


# -- the four steps of a trial ----------------------------------------------

def arm_collector(trial: dict, params: dict, build_path: str, connectivity_path: str,
                  output: str, log: Log) -> None:
    conn = read_json(connectivity_path)
    build = read_json(build_path)
    agent = agent_for(conn)
    health = agent.health()
    if health.get("session"):
        stale = health["session"]
        log(f"found an armed session from an earlier invocation ({stale}): disarming it", echo=True)
        agent.reset()
    run_id = random.SystemRandom().randrange(1, 65536)
    duration = params["duration_s"]
    request = {
        "trial": trial_id(trial), "run_id": run_id,
        "interface": conn["testbed"]["dut"]["iface"], "xdp_mode": params["xdp_mode"],
        "port": params["port"], "expected_tag": build["prog_tag"], "snaplen": SNAPLEN_BYTES,
        "deadline_s": duration + DEADLINE_MARGIN_S,
        "expected_packets": trial["target_pps"] * duration,
    }
    log(f"arming: {json.dumps(request)}")
    armed = agent.arm(request)
    armed["request"] = request
    armed["run_id"] = run_id
    write_json(output, armed)
    log(f"armed session {armed['session']}: {armed['xdp_mode_in_effect']} mode, "
        f"prog {armed.get('prog_id')} tag {armed.get('prog_tag')}", echo=True)


def _live_session(agent: AgentClient, arm: dict, arm_path: str, step: str) -> dict:
    """The agent's view of the session this trial armed; a stale record is removed."""
    try:
        state = agent.session(arm["session"])
    except AgentError as e:
        if e.status != 404:
            raise
        state = None
    if state is None or state.get("trial") != arm["request"]["trial"]:
        Path(arm_path).unlink(missing_ok=True)
        raise StepError(f"{step}: the agent has no session {arm['session']} for trial "
                        f"{arm['request']['trial']} (left by an earlier, interrupted invocation); "
                        f"removed {arm_path} so that the next run repeats the whole trial")
    return state


def launch_generator(trial: dict, params: dict, arm_path: str, connectivity_path: str,
                     output: str, log: Log) -> None:
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    agent = agent_for(conn)
    state = _live_session(agent, arm, arm_path, "launch_generator")
    if state.get("state") != "armed":
        raise StepError(f"launch_generator: session {arm['session']} is {state.get('state')}, not armed")
    args = {"dst": conn["testbed"]["test_link"]["dut_addr"], "port": params["port"],
            "pps": trial["target_pps"], "size": trial["packet_size"], "duration": params["duration_s"],
            "threads": params["threads"], "run_id": arm["run_id"]}
    log(f"launching the generator on {source.where(conn['testbed']['source'])}: {json.dumps(args)}",
        echo=True)
    report = source.run_generator(conn["testbed"]["source"], args,
                                  timeout_s=params["duration_s"] + 60, err_stream=log)
    write_json(output, report)
    log(f"generator: sent {report['sent']} of {report['scheduled']} in {report['elapsed_s']:.3f} s "
        f"({report['achieved_pps']:.1f} pps), {report['send_errors']} send errors", echo=True)


def verify_capture(trial: dict, params: dict, arm_path: str, generator_path: str,
                   connectivity_path: str, output: str, pcap_out: str, log: Log) -> None:
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    gen = read_json(generator_path)
    agent = agent_for(conn)
    _live_session(agent, arm, arm_path, "verify_capture")
    stats = agent.stop_capture(arm["session"])
    tmp = Path(pcap_out).with_name(f".{Path(pcap_out).name}.tmp{os.getpid()}")
    try:
        agent.download_capture(arm["session"], tmp)
        check = pcapcheck.verify_capture(tmp, run_id=arm["run_id"], port=params["port"],
                                         scheduled=gen["scheduled"], threads=params["threads"],
                                         failed_seqs=gen.get("failed_seqs", []),
                                         send_errors=gen["send_errors"])
        os.replace(tmp, pcap_out)
    finally:
        tmp.unlink(missing_ok=True)
    write_json(output, {"tcpdump": stats, "check": check})
    log(f"tcpdump: captured {stats['captured']}, dropped by kernel {stats['dropped_by_kernel']}; "
        f"capture vs generator: {check['unique']} unique, {check['missing']} missing, "
        f"{check['duplicated']} duplicated, {check['reordered']} reordered", echo=True)


def gather_results(trial: dict, params: dict, arm_path: str, generator_path: str, capture_path: str,
                   connectivity_path: str, output: str, log: Log) -> None:
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    gen = read_json(generator_path)
    capture = read_json(capture_path)
    agent = agent_for(conn)
    _live_session(agent, arm, arm_path, "gather_results")
    gathered = agent.disarm(arm["session"])
    log(f"disarmed session {arm['session']}")
    summary = accounting.summarize(params, trial, arm, gen, capture, gathered)
    write_json(output, {"trial": trial, "settings": params, "summary": summary["row"],
                        "identities": summary["identities"], "arm": arm, "generator": gen,
                        "capture": capture, "agent": gathered})
    row = summary["row"]
    log(f"trial {trial_id(trial)}: sent {row['sent']}, nic_rx {row['nic_rx']}, xdp_matched "
        f"{row['xdp_matched']}, tcpdump_captured {row['tcpdump_captured']}, lost {row['lost']}, "
        f"unexplained {row['unexplained']}", echo=True)
