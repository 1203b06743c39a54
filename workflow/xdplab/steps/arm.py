"""The collector's build, and the first step of a trial: arm the DUT agent's session.

A trial is four rules that must run in order without another trial's steps in
between: arm_collector (here), launch_generator (traffic.py), verify_capture and
gather_results (results.py).  From arm on, every step checks with the agent that the
session it continues is the one its trial armed (`continue_session`), and a failure
of any of them disarms it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

from .. import featurefile, progress
from ..agentclient import AgentClient, AgentError
from .machinery import Log, StepError, on_failure, read_json, trial_id, write_json

# tcpdump keeps the first bytes of every frame: Ethernet 14 + IPv4 20 + UDP 8 +
# our 18-byte payload header = 60; 64 leaves room for alignment, not for IP options.
SNAPLEN_BYTES = 64
# How long the agent keeps a session armed beyond the traffic, before its
# watchdog disarms by itself: covers SSH setup, upload, verification, gathering.
DEADLINE_MARGIN_S = 120
# Cleanup after a failure talks to the agent with this timeout per call.
CLEANUP_AGENT_TIMEOUT_S = 20.0


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


# -- arm -----------------------------------------------------------------------

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
    from ..program import arm_fields, upload_again   # (program imports xdplab.steps)

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


def continue_session(conn: dict, agent: AgentClient, arm: dict, arm_path: str, step: str) -> dict:
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


