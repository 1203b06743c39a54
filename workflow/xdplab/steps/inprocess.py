"""A sequence of trials run inside one job: the searches and the latency loads, whose next
trial depends on the last one's result.

Run as rules, each trial is five jobs (a connectivity check and the four steps), each a
new Python process, and a search's next trial needs a checkpoint and a new look at the
DAG: about 4 s between two trials of 1 to 5 s (`make bench`, search_probe_overhead).  Here
one process runs the same step functions (connectivity.check_connectivity, arm.arm_collector,
traffic.launch_generator, results.verify_capture, results.gather_results) one after the
other, and each trial is written where and as the rules write it: its directory under
results/<experiment>/trials/<point>/rep~<n>/, its step records, its logs/<step>.log, its
trial.json, failed.json if a step fails.  The rules' guarantees hold as they do there:

- A step's cleanups (disarm the session, stop the generator) run if it fails or is
  interrupted; a trial armed and not gathered is disarmed whatever stops it.
- SIGINT, SIGTERM and SIGHUP stop the sequence in an orderly way (machinery.StopSignals):
  the trial in flight is disarmed and discarded (its partial records are removed by the
  next run's housekeeping, as for the rules), the trials before it stay.
- A trial is cached: its trial.json is read instead of measuring again when the trial
  was run by this code (the digest of the measuring code, TRIAL_CODE in common.smk, is
  kept beside it in SEQUENCE_MARK) or by the rules.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from types import SimpleNamespace

from .. import source, trials
from ..launcher import Launcher
from ..agentclient import AgentClient, AgentError
from . import arm as arm_step
from . import connectivity, results, traffic
from .machinery import (CleanupStack, Interrupted, Log, StepError, _cleanups, _os_reason,
                        read_json, record_failure, write_json)

# Beside a trial.json this code wrote: the digest of the code that measured it.
SEQUENCE_MARK = "sequence.json"
STEP_RECORDS = {"arm_collector": "arm.json", "launch_generator": "generator.json",
                "verify_capture": "capture.json", "gather_results": "trial.json"}


class TrialFailed(StepError):
    """A trial of the sequence failed; the message names the trial, the step and why."""


class Sequence:
    """Trials of one experiment, run one after the other in this process."""

    def __init__(self, settings: dict, results_dir: str, build_manifest: str | None, code_digest: str,
                 connectivity_path: str, sources_record: str, log: Log):
        self.settings = settings
        self.results_dir = results_dir
        self.build_manifest = build_manifest or ""
        self.code_digest = code_digest
        self.connectivity_path = connectivity_path
        self.sources_record = sources_record
        self.log = log
        self.desc = None
        self.record = None
        self.launcher = Launcher()
        self.timings: list[dict] = []

    # -- the testbed -----------------------------------------------------------------

    def check(self, testbed_params: dict, environment_path: str, preflight_run=None, preflight_record=None):
        """The sequence's own connectivity check, in full when the invocation has not
        checked the sources yet (as the rules' first check_connectivity)."""
        self.desc = connectivity.bring_up(testbed_params, self.log)
        connectivity.check_connectivity(self.desc, self.connectivity_path, self.log,
                                        sources_record=self.sources_record, preflight_run=preflight_run,
                                        preflight_record=preflight_record)
        connectivity.record_environment_once(self.desc, environment_path, self.log)
        self.record = read_json(self.connectivity_path)

    def check_again(self, output: str, log: Log) -> None:
        """Before each trial, as the rules' later checks: the agent answers, with no session
        armed, and each source's SSH server greets (a few ms); what the sequence's own check
        found of the hosts stands.  The record vouches for this trial only."""
        agent = AgentClient.from_description(self.desc["dut"], timeout_s=5.0)
        health = agent.health(timeout_s=5.0)
        armed = health.get("session")
        if armed:
            raise StepError(f"the DUT agent at {self.desc['dut']['agent_url']} has session {armed.get('session')} "
                            f"(trial {armed.get('trial')}) armed, which this sequence did not arm: another "
                            "run uses this DUT")
        problems = []
        for src in self.record["sources"]:
            try:
                source.ssh_answers(src)
            except source.SourceError as e:
                problems.append(str(e))
        if problems:
            raise StepError("connectivity check failed:\n  " + "\n  ".join(problems), transient=True)
        write_json(output, dict(self.record, agent=health, checked_unix_s=time.time()))
        log("testbed reachable: the agent answers with no session armed, every source's SSH server greets "
            f"(the hosts as checked in full at {time.strftime('%H:%M:%S', time.localtime(self.record['checked_unix_s']))})")

    def close(self) -> None:
        """The sequence's SSH connections closed, the generator it uploaded removed."""
        self.launcher.close()

    # -- one trial -------------------------------------------------------------------

    def trial_of(self, point: str, rep: int) -> tuple[dict, dict, Path]:
        s = trials.settings_of_point(point, self.settings)
        trial = dict(trials.trial_record(self.settings["experiment"], s, rep), point=point)
        return trial, s, Path(trials.trial_dir(self.results_dir, point, rep))

    def cached(self, d: Path) -> dict | None:
        """The trial's trial.json when it can stand: measured by this code (SEQUENCE_MARK),
        or by the rules (no mark: Snakemake keeps those up to date)."""
        path = d / "trial.json"
        if not path.exists():
            return None
        mark = d / SEQUENCE_MARK
        if mark.exists():
            with contextlib.suppress(OSError, ValueError):
                if read_json(str(mark)).get("code") != self.code_digest:
                    return None
        try:
            return read_json(str(path))
        except (OSError, ValueError):
            return None

    def run(self, point: str, rep: int = 0) -> tuple[dict, dict]:
        """(trial.json's summary, {"trial": its directory, "cached": bool, "warmup_s": s}) of
        the trial at `point`, repeat `rep`: read when cached, else measured now."""
        trial, s, d = self.trial_of(point, rep)
        info = {"trial": str(d), "warmup_s": s.get("warmup_s") or 0}
        done = self.cached(d)
        if done is not None:
            return done["summary"], dict(info, cached=True)
        self._discard(d)
        started = time.monotonic()
        times = {}
        conn_path = str(d / "connectivity.json")
        self._step(trial, d, "check_connectivity", lambda log: self.check_again(conn_path, log), times)
        try:
            self._step(trial, d, "arm_collector", lambda log: arm_step.arm_collector(
                trial, s, self.build_manifest, conn_path, str(d / "arm.json"), log), times)
            self._step(trial, d, "launch_generator", lambda log: traffic.launch_generator(
                trial, s, str(d / "arm.json"), conn_path, str(d / "generator.json"), log,
                launcher=self.launcher), times)
            self._step(trial, d, "verify_capture", lambda log: results.verify_capture(
                trial, s, str(d / "arm.json"), str(d / "generator.json"), conn_path,
                str(d / "capture.json"), log), times)
            self._step(trial, d, "gather_results", lambda log: results.gather_results(
                trial, s, str(d / "arm.json"), str(d / "generator.json"), str(d / "capture.json"),
                conn_path, str(d / "trial.json"), log), times)
        except BaseException:
            self._disarm(trial, d)
            raise
        finally:
            # connectivity.json is temp() for the rules: it vouches for one trial, then goes
            Path(conn_path).unlink(missing_ok=True)
        write_json(str(d / SEQUENCE_MARK), {"code": self.code_digest, "steps_s": times,
                                            "wall_s": round(time.monotonic() - started, 3)})
        self.timings.append({"trial": str(d), "steps_s": times, "traffic_s": (s.get("warmup_s") or 0)
                             + s["duration_s"], "wall_s": round(time.monotonic() - started, 3)})
        return read_json(str(d / "trial.json"))["summary"], dict(info, cached=False)

    def _step(self, trial: dict, d: Path, step: str, fn, times: dict) -> None:
        """One step, as machinery.run_step runs a rule's: its own log and cleanups; a
        failure (or an interruption) unwinds them and is recorded in failed.json."""
        log = Log(str(d / "logs" / f"{step}.log"), step)
        cleanups = CleanupStack(log)
        token = _cleanups.set(cleanups)
        started = time.monotonic()
        try:
            fn(log)
        except BaseException as e:
            if isinstance(e, Interrupted):
                reason = f"interrupted by {e}"
            elif isinstance(e, (StepError, AgentError, source.SourceError)):
                reason = str(e)
            elif isinstance(e, OSError):
                reason = _os_reason(e)
            else:
                reason = f"unexpected error: {type(e).__name__}: {e}"
            notes = cleanups.unwind()
            if step in STEP_RECORDS:
                sm = SimpleNamespace(output=[str(d / STEP_RECORDS[step])], rule=step, params=SimpleNamespace(trial=trial))
                record_failure(sm, reason, notes, log, {"fix": getattr(e, "fix", None)})
            log(f"FAILED: {reason}")
            if isinstance(e, Interrupted):
                raise
            raise TrialFailed(f"trial {d}: {step} failed: {reason}", fix=getattr(e, "fix", None),
                              transient=getattr(e, "transient", False)) from e
        finally:
            _cleanups.reset(token)
            log.flush()
        times[step] = round(time.monotonic() - started, 3)

    def _disarm(self, trial: dict, d: Path) -> None:
        """Whatever stopped the trial after its arm step: leave nothing armed."""
        arm_path = d / "arm.json"
        if not arm_path.exists() or (d / "trial.json").exists():
            return
        with contextlib.suppress(Exception):
            conn = read_json(str(d / "connectivity.json")) if (d / "connectivity.json").exists() else None
            if conn is not None:
                arm_step._disarm_on_failure(conn, read_json(str(arm_path))["request"]["trial"])()

    def _discard(self, d: Path) -> None:
        """A trial measured again starts from nothing: the records of an earlier attempt go
        (its failed.json stays, as with the rules)."""
        for f in list(STEP_RECORDS.values()) + ["connectivity.json", SEQUENCE_MARK]:
            (d / f).unlink(missing_ok=True)
        for p in d.glob("capture*.pcap") if d.is_dir() else ():
            p.unlink(missing_ok=True)
