"""How every rule's step runs: its log, its cleanups, stop signals, and the record of a
failure.  The steps themselves (connectivity, arm, traffic, results) know none of this
beyond `on_failure` and the errors they raise.

A step runs under `run_step`, which owns one `Step`: the rule's `Log`, a `CleanupStack`
(what to undo if the step fails, released in reverse order like the agent's session's
ExitStack) and the `StopSignals` that turn SIGTERM, SIGINT and SIGHUP into an orderly
exit.  A step that succeeds ends its process at once (`_leave`), its cleanups not
needed; one that fails or is interrupted unwinds them, and a trial step records why in
the trial directory's failed.json.  Every failed step also adds a line to the
invocation's RUN_FAILURES, from which the end of the run says each reason once, with
its fix (xdplab.housekeeping.verdict).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal
import sys
import time
from pathlib import Path

from .. import atomic, source
from ..agentclient import AgentError

# The four rules of a trial; a failure of one is recorded in the trial's failed.json.
TRIAL_STEPS = ("arm_collector", "launch_generator", "verify_capture", "gather_results")
FAILED_FILE = "failed.json"
# Every step that failed in the running invocation, one JSON object a line (emptied by
# housekeeping.on_start); relative to Snakemake's working directory, like progress.PLAN_FILE.
RUN_FAILURES = Path(".snakemake", "xdplab-failures.jsonl")


class StepError(RuntimeError):
    """A step failed for a reason the user can act on; the message says which.  `fix`:
    what to do, when the step knows; `transient`: running again may help by itself."""

    def __init__(self, message: str, fix: str | None = None, transient: bool = False):
        super().__init__(message)
        self.fix = fix
        self.transient = transient


class OutputError(StepError):
    """A result could not be written; the message names the path and the OS's reason."""


class Interrupted(Exception):
    """SIGTERM, SIGINT or SIGHUP arrived (Ctrl-C, or Snakemake stopping the job)."""


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


class CleanupStack:
    """What to undo if the step fails or is interrupted, undone in reverse order.

    Each cleanup is bounded and best effort: one that raises is noted and the next one
    still runs.  `unwind` returns the notes (they go into failed.json); a step that
    succeeds ends its process without unwinding."""

    def __init__(self, log: Log):
        self.log = log
        self.notes: list[str] = []
        self._stack = contextlib.ExitStack()

    def push(self, description: str, fn) -> None:
        self._stack.callback(self._run, description, fn)

    def _run(self, description: str, fn) -> None:
        try:
            result = fn()
            self.notes.append(f"{description}: {result}" if result else description)
            self.log(f"cleanup: {self.notes[-1]}", echo=bool(result))
        except Exception as e:  # cleanup is best effort; say what did not work
            self.notes.append(f"{description} failed: {e}")
            self.log(f"cleanup: {self.notes[-1]}", echo=True)

    def unwind(self) -> list[str]:
        self._stack.close()
        return self.notes


class StopSignals:
    """The first SIGTERM, SIGINT or SIGHUP stops the step (raises Interrupted); once the
    step is stopping, later ones (Ctrl-C pressed twice, Snakemake forwarding the signal
    the terminal already sent) are only noted, so that cleanup runs to its end."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self):
        self.stopping = False
        self.signals: list[str] = []

    def install(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, self._interrupt)

    def _interrupt(self, signum, frame):
        name = signal.Signals(signum).name
        self.signals.append(name)
        if not self.stopping:
            self.stopping = True
            raise Interrupted(name)


# The cleanups of the step running in this process (set by run_step, for on_failure).
_cleanups: contextvars.ContextVar[CleanupStack | None] = contextvars.ContextVar("cleanups", default=None)


def on_failure(description: str, fn) -> None:
    """Run fn (bounded, best effort) if this step fails or is interrupted.  Called from
    the step's own thread (a new thread starts without the step's context); outside
    run_step (a step called directly, as tests do) there is nothing to undo it for."""
    stack = _cleanups.get()
    if stack is not None:
        stack.push(description, fn)


def _os_reason(e: OSError) -> str:
    if e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return f"{type(e).__name__}: {e.strerror or e}"


def run_step(sm, fn) -> None:
    """Run one rule's step: log to the rule's log, turn signals into an orderly exit, and
    report a failure as one clear line instead of a traceback.

    On failure or interruption the step's cleanups run (disarm the trial's session,
    stop the generator), and for the four trial steps the failure is recorded in the
    trial directory's failed.json, which is not a Snakemake output and so survives.
    Every failure goes into the invocation's RUN_FAILURES too, with the error's fix, for
    the end of the run; a reason already said in this invocation is not said again in
    full."""
    log = Log(sm.log[0], sm.rule)
    stop = StopSignals()
    cleanups = CleanupStack(log)
    _cleanups.set(cleanups)
    stop.install()
    unexpected = None
    try:
        fn(sm, log)
        _leave(log)   # the cleanups are not needed: the process ends here
    except Interrupted as e:
        reason, status, error = f"interrupted by {e}", 130, e
    except (StepError, AgentError, source.SourceError) as e:
        reason, status, error = str(e), 1, e
    except OSError as e:
        reason, status, error = _os_reason(e), 1, e
    except BaseException as e:
        import traceback

        reason, status, error = f"unexpected error: {type(e).__name__}: {e}", 1, e
        unexpected = e
        log("FAILED with an unexpected error:\n" + traceback.format_exc())
    stop.stopping = True
    notes = cleanups.unwind()
    failure = {"step": sm.rule, "reason": reason, **_advice(status, error)}
    if sm.rule in TRIAL_STEPS:
        record_failure(sm, reason, notes, log, failure)
    log(f"FAILED: {reason}" + (f"\nfix: {failure['fix']}" if failure.get("fix") else ""))
    # Each reason once on the terminal: several jobs failing alike (every trial's
    # connectivity check when the agent is down) say it in full the first time only.
    said_before = any(f.get("reason") == reason for f in run_failures())
    where = stage_label(sm)
    add_run_failure(dict(failure, where=where, log=str(sm.log[0]), time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         unix_s=round(time.time(), 3)))
    if said_before:
        print(f"xdplab {sm.rule}: the same failure as above{f' ({where})' if where else ''}",
              file=sys.stderr, flush=True)
    else:
        print(f"xdplab {sm.rule}: {reason}", file=sys.stderr, flush=True)
    if unexpected is not None:
        raise unexpected
    sys.exit(status)


def _advice(status: int, error: BaseException | None) -> dict:
    """{"fix", "rerun"} for a failure: the error's own fix (AgentError, StepError), and
    whether running the same command again can help by itself: after an interruption or
    a transient failure, yes; after a refused connection or token, not until it is fixed."""
    if status == 130:
        return {"fix": None, "rerun": True}
    return {"fix": getattr(error, "fix", None), "rerun": bool(getattr(error, "transient", False))}


def stage_label(sm) -> str | None:
    """Where a step ran: "trial <experiment>/<point>/rep~<n>", "the build" (the collector's
    build and its connectivity check), or None (a step of the whole experiment)."""
    trial = getattr(getattr(sm, "params", None), "trial", None)
    if isinstance(trial, dict) and "point" in trial:
        return f"trial {trial_id(trial)}"
    try:
        parts = Path(sm.output[0]).parent.parts
    except (IndexError, TypeError, AttributeError):
        return None
    if "trials" in parts:
        i = parts.index("trials")
        return f"trial {'/'.join(parts[i - 1:i] + parts[i + 1:])}"
    return "the build" if "build" in parts else None


def add_run_failure(entry: dict) -> None:
    """Add a failed step to the invocation's RUN_FAILURES (best effort: the step's own
    line and log say it anyway)."""
    try:
        RUN_FAILURES.parent.mkdir(parents=True, exist_ok=True)
        with open(RUN_FAILURES, "a") as f:   # one write per line: whole lines, even from parallel jobs
            f.write(json.dumps(entry) + "\n")
    except OSError:
        pass


def run_failures() -> list[dict]:
    """The steps that failed in the running invocation, in the order they failed."""
    try:
        text = RUN_FAILURES.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def _leave(log: Log) -> None:
    """A step that succeeded has written and closed its outputs: its process ends here,
    without the interpreter's teardown (10 to 100 ms with numpy, pyarrow or matplotlib
    loaded, once per job: about 0.1 s per trial of a sweep).  Only the log and the
    standard streams are still open: flushed first."""
    log.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


# -- the record of a failure, and the step records ---------------------------------

def record_failure(sm, reason: str, cleanup: list[str], log: Log, advice: dict | None = None) -> None:
    """Write the trial's failed.json: this failure on top, earlier ones under "earlier"."""
    path = Path(sm.output[0]).parent / FAILED_FILE
    earlier = previous_failures(path)
    entry = {"trial": trial_id(sm.params.trial), "step": sm.rule, "reason": reason,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unix_s": round(time.time(), 3),
             "interrupted": reason.startswith("interrupted by "), "cleanup": cleanup,
             "fix": (advice or {}).get("fix"), "earlier": earlier}
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
    """Write atomically (xdplab.atomic): a reader sees the old file, or the whole new one,
    never half."""
    with writing(path):
        atomic.write_json(path, data)


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def trial_id(trial: dict) -> str:
    """<experiment>/<point>/rep~<n>: the trial's directory under results/<experiment>/trials."""
    return f"{trial['experiment']}/{trial['point']}/rep~{trial['repeat']}"
