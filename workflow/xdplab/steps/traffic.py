"""launch_generator's step: the trial's traffic.  Each source host runs the generator
(over SSH, xdplab.source) with its share of the offered rate, while a watch asks the
DUT agent that the trial's session is still armed and stops the generators if not.
"""

from __future__ import annotations

import json
import threading

from .. import source
from ..agentclient import AgentClient, AgentError
from .arm import agent_for, continue_session, source_shares
from .machinery import Log, StepError, read_json, write_json

# While the generator runs, the agent is asked every WATCH_INTERVAL_S whether the
# session is still armed; this many unanswered questions in a row mean it is gone.
WATCH_INTERVAL_S = 1.0
WATCH_MISSES = 3


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
    path = params.get("send_path", "auto")
    if path == "packet":
        opts.update(send_path="packet", dst_mac=src.get("dut_mac"))
    elif path == "auto":
        # The generator takes the packet path where it can (Linux, an AF_PACKET socket
        # opens, a next hop): the next hop is the DUT's MAC from the connectivity check,
        # given when known; without it the generator sends with UDP (cli.resolve_auto).
        opts.update(send_path="auto", dst_mac=src.get("dut_mac"))
    return opts


def launch_generator(trial: dict, params: dict, arm_path: str, connectivity_path: str,
                     output: str, log: Log, launcher=None) -> None:
    """`launcher`: SSH connections kept open across a sequence's trials (xdplab.launcher)."""
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    agent = agent_for(conn)
    state = continue_session(conn, agent, arm, arm_path, "launch_generator")
    if state.get("state") != "armed":
        raise StepError(f"launch_generator: session {arm['session']} is {state.get('state')}, not armed")
    jobs = generator_jobs(trial, params, conn, arm["run_id"])
    for src, args in jobs:
        log(f"launching the generator on the {source.where(src)}: {json.dumps(args)}", echo=True)
    watch = _AgentWatch(conn, arm, log)
    watch.start()
    try:
        reports = source.run_generators(jobs, timeout_s=params.get("warmup_s", 0) + params["duration_s"] + 60,
                                         err_stream=log, launcher=launcher)
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
