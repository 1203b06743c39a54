"""Everything xdplab does that leans on Snakemake's internals instead of its documented
interface, in one place: each piece names what it relies on and why no public way
does.  Checked against Snakemake 9.27.1 (envs/controller.txt) by tests/test_snakefile.py,
tests/test_make.py and tests/test_faults.py; a Snakemake upgrade starts here.

What the workflow uses of the public interface stays where it is: `onstart:`,
`onsuccess:` and `onerror:` (workflow/rules/testbed.smk, xdplab.housekeeping), the
`snakemake` object of a script job (xdplab.steps), the workflow profile.

1. The command line (sys.argv).  The Snakefile is parsed inside the `snakemake`
   process, before Snakemake has chosen an executor: `workflow.dryrun` is False until
   `Workflow.execute` runs, and Snakemake 9 tells the Snakefile nothing about whether
   this invocation will run jobs (snakemake issue #2948, open).  Partial trials must be
   discarded while the Snakefile is parsed, before the DAG is built from the files
   present (in `onstart:` the plan would already count on them), and never by a dry
   run, a lint, a report or a listing: `executes_jobs` reads the options off sys.argv.
   The targets asked for (`asked_for`) are read the same way.
2. The invocation's lock.  Snakemake keeps `.snakemake/locks/` non-empty while an
   invocation holds the working directory (`another_invocation_running`): a second
   invocation (or a subprocess parsing the Snakefile again) must not discard what the
   running one is working on.
3. Logging (`tune_snakemake_logging`).  Snakemake 9 builds its terminal and log-file
   handlers itself (logging.LoggerManager: handlers named DefaultStreamHandler and
   DefaultLogFileHandler, each with a DefaultFilter and a DefaultFormatter holding the
   `quiet` set; records carry `event`, a LogEvent) and applies the profile's `quiet` to
   both.  The public way to shape output is a logger plugin (snakemake-interface-
   logger-plugins, `--logger <name>`); but Snakemake finds one only as an installed
   module named snakemake_logger_plugin_<name>, a plugin that writes to the terminal
   replaces Snakemake's formatting altogether (its DefaultFormatter is internal too),
   and no plugin changes the log file's handler.  So the handlers are adjusted in place,
   and only if they are there under these names.
4. Stop signals to running jobs (`forward_stop_signals`).  On SIGTERM Snakemake 9 stops
   scheduling and waits for running jobs to end, on SIGINT too; no hook runs then.  Its
   handlers are installed before `onstart:` runs, so ours can run first and chain to
   them.  A step is found among Snakemake's descendants (psutil, which Snakemake itself
   requires) by its command line: a `script:` job runs as
   `python <workdir>/.snakemake/scripts/tmpXXXX.<name>.py` (STEP_SCRIPT_MARK).
5. The scheduler's wake-up timer (`cancel_scheduler_timers`): the threading.Timer
   whose function is the scheduler's `_schedule_reevalutation` (sic).
6. `workflow.dryrun` (workflow/rules/report.smk): a property of Snakemake's Workflow,
   true only once a dry run executes; read when Snakemake reports "Nothing to be done".
7. Parameters compared without pandas (`params_compared_without_pandas`).  Snakemake
   reruns a job whose parameters changed; it serialises each parameter for that with
   `PersistenceBase._serialize_param`, a property that picks `_serialize_param_pandas` (pandas'
   hasher for DataFrames, repr otherwise) whenever pandas is installed, and so imports
   pandas (0.3 s here) in every invocation that finds an output already made (the
   collector's build record, a finished trial).  No parameter of xdplab is a pandas object:
   `_serialize_param_builtin` gives every one the same string, without the import.
8. The end of the `snakemake` process (`exit_without_teardown`).  Once `snakemake.cli.main`
   calls `sys.exit` with the run's status, CPython runs the atexit handlers and then tears
   down the interpreter: Snakemake's modules, the DAG, every job object, 0.5 s of CPU here
   after each run's last line (strace: no system call between the signal handlers'
   reset and exit_group).  The steps skip the same teardown (xdplab.steps.machinery._leave).
   Snakemake has no hook there, so `sys.exit` is wrapped: called from `main` with an
   integer status in the main thread, it runs the atexit handlers (Snakemake's and
   logging's among them, which flush the log file), flushes stdout and stderr and ends
   the process with that status; any other call is the real `sys.exit`.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

import psutil   # loaded by Snakemake already (one of its requirements)

# -- 1. the command line ---------------------------------------------------------------

# Snakemake options under which an invocation runs no job: it plans, lints, reports,
# lists or draws (each with its aliases; tests/test_snakemake_internals.py checks them
# against Snakemake's own parser).
NON_EXECUTING_OPTIONS = {
    "--dry-run", "--dryrun", "--lint", "--report", "--summary", "--detailed-summary",
    "--dag", "--rulegraph", "--filegraph", "--d3dag", "--list-rules", "--list",
    "--list-target-rules", "--lt", "--list-changes", "--lc", "--list-input-changes", "--li",
    "--list-params-changes", "--lp", "--list-untracked", "--lu", "--list-conda-envs",
    "--archive", "--unlock", "--cleanup-metadata", "--cm", "--containerize", "--export-cwl",
    "--print-compilation", "--touch", "--delete-all-output", "--delete-temp-output",
    "--generate-unit-tests", "--cleanup-shadow", "--conda-create-envs-only",
    "--conda-cleanup-envs", "--version", "--help",
}
NON_EXECUTING_SHORT = set("nStDlhv")   # -n, -S, -t, -D, -l, -h, -v, also inside clusters like -np


def _names_no_job(name: str) -> bool:
    """`name` is one of NON_EXECUTING_OPTIONS, or an abbreviation of one (Snakemake's parser
    takes any unambiguous prefix, `--dry` for --dry-run): a prefix of such an option is
    taken for it, erring on the side of deleting nothing."""
    return name in NON_EXECUTING_OPTIONS or (
        len(name) > 3 and any(o.startswith(name) for o in NON_EXECUTING_OPTIONS))


def executes_jobs(argv: list[str] | None = None) -> bool:
    """Whether a snakemake command line (this process's, by default) runs jobs (not -n,
    --lint, --report, ...)."""
    for arg in (sys.argv if argv is None else argv)[1:]:
        if arg == "--":
            break
        if arg.startswith("--") and _names_no_job(arg.split("=", 1)[0]):
            return False
        if arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) & NON_EXECUTING_SHORT \
                and arg[1:].isalpha():
            return False
    return True


def reporting(argv: list[str] | None = None) -> bool:
    """Whether this invocation writes a report (`--report FILE`, or `--report=FILE`, or an
    abbreviation Snakemake's parser takes for it)."""
    for arg in (sys.argv if argv is None else argv)[1:]:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if name.startswith("--rep") and "--report".startswith(name):
            return True
    return False


def asked_for(target: str, argv: list[str] | None = None) -> bool:
    """Whether `target` (a rule or file) is named on this invocation's command line."""
    return target in (sys.argv if argv is None else argv)[1:]


# -- 2. the invocation's lock --------------------------------------------------------------

def another_invocation_running(workdir: Path) -> bool:
    locks = Path(workdir, ".snakemake", "locks")
    return locks.is_dir() and any(locks.iterdir())


# -- 3. logging ----------------------------------------------------------------------------

# Snakemake's scheduler chatter, one pair of lines per job: left out of the terminal
# (not out of the log file) when the workflow profile quiets the job banners.
_SCHEDULER_CHATTER = re.compile(r"Select jobs to execute\.\.\.$|Execute \d+ jobs\.\.\.$")
_NOTHING_TO_BE_DONE = "Nothing to be done"


class _TerminalQuiet(set):
    """The terminal's quiet set with Snakemake's progress lines ("Finished jobid", "n of N
    steps done") added.  Added here rather than in the profile: Snakemake does not even
    write progress to its log file when the profile quiets it.  A dry run is left as
    Snakemake prints it (the plan, job by job, and the job table): that is what it is
    for."""

    def __init__(self, quiet, dryrun):
        super().__init__(quiet)
        self.dryrun = dryrun

    def __contains__(self, item):
        name = getattr(item, "name", None)
        if name in ("PROGRESS", "RULES") and (self.dryrun() if callable(self.dryrun) else self.dryrun):
            return False
        if name == "PROGRESS":
            return True
        return super().__contains__(item)


class _FailuresToo(logging.Filter):
    """Snakemake's own terminal filter, except that job errors always pass."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def filter(self, record):
        event = getattr(record, "event", None)
        if getattr(event, "name", None) in ("JOB_ERROR", "GROUP_ERROR"):
            return True
        return self.inner.filter(record)


def _full_log_file(handler) -> list[str]:
    changed = []
    for f in handler.filters:
        if getattr(f, "quiet", None):
            f.quiet = set()
            changed.append("log file: full")
    if getattr(handler.formatter, "quiet", None):
        handler.formatter.quiet = set()
    return changed


def _quiet_terminal(handler, dryrun) -> list[str]:
    if not any(getattr(f, "quiet", None) for f in handler.filters):
        return []
    for f in list(handler.filters):
        if getattr(f, "quiet", None):
            f.quiet = _TerminalQuiet(f.quiet, dryrun)
            # A failed job's "Error in rule ..." (with its log's path) is
            # quieted with the job banners: let it through.
            handler.removeFilter(f)
            handler.addFilter(_FailuresToo(f))
    handler.addFilter(lambda r: not (isinstance(r.msg, str) and _SCHEDULER_CHATTER.match(r.msg)))
    return ["terminal: no scheduler chatter"]


def tune_snakemake_logging(results_dir: str, dryrun=False) -> list[str]:
    """Called while Snakemake reads the workflow (workflow/rules/report.smk), after it set
    up its terminal and log-file handlers.  Returns what it changed (for tests).

    - The log file (.snakemake/log/*.snakemake.log) keeps Snakemake's full output: the
      quiet options of the workflow profile (profiles/default) are meant for the
      terminal, but Snakemake applies them to its log file too.
    - With those quiet options on, the terminal also leaves out Snakemake's progress
      lines and the scheduler's "Select jobs to execute..." / "Execute 1 jobs..." pair
      printed for every job; a failed job's "Error in rule ..." still shows, and a dry
      run shows its plan as Snakemake prints it.
    - A run with nothing to do prints the table and the results path again (Snakemake
      runs no onstart/onsuccess handler then), except on a dry run.  `dryrun`: a bool,
      or a function asked at that moment (Snakemake knows only then: `lambda:
      workflow.dryrun`).

    Relies on Snakemake 9's logging (3. in this module's docstring); tests/test_make.py
    checks it against the pinned version.  If these names are not there, nothing is
    changed."""
    try:
        from snakemake.logging import logger
    except ImportError:
        return []
    changed = []
    for handler in list(logger.handlers):
        name = getattr(handler, "name", None)
        if name == "DefaultLogFileHandler":
            changed += _full_log_file(handler)
        elif name == "DefaultStreamHandler":
            changed += _quiet_terminal(handler, dryrun)

    class NothingToDo(logging.Handler):
        def emit(self, record):
            if isinstance(record.msg, str) and record.msg.startswith(_NOTHING_TO_BE_DONE):
                logger.removeHandler(self)
                if not (dryrun() if callable(dryrun) else dryrun):
                    from .report import print_results

                    print_results(results_dir)

    if not any(type(h).__name__ == "NothingToDo" for h in logger.handlers):
        logger.addHandler(NothingToDo(level=logging.INFO))
        changed.append("nothing to do: print the table")
    return changed


# -- 4. stop signals to running jobs ------------------------------------------------------

# Step scripts run by Snakemake: `python <workdir>/.snakemake/scripts/tmpXXXX.<name>.py`.
STEP_SCRIPT_MARK = "/.snakemake/scripts/"


def running_steps() -> list[int]:
    """Our step scripts among this process's descendants (a step's own children, ssh for
    instance, are left to the step)."""
    found, todo, seen = [], psutil.Process().children(), set()
    while todo:
        proc = todo.pop()
        if proc.pid in seen:
            continue
        seen.add(proc.pid)
        try:
            cmd = " ".join(proc.cmdline())
            if STEP_SCRIPT_MARK in cmd:
                found.append(proc.pid)
            else:
                todo += proc.children()
        except psutil.Error:   # gone, a zombie, or not ours to read
            continue
    return found


def forward_stop_signals() -> None:
    """Make SIGTERM and SIGINT sent to Snakemake alone stop the running steps at once.

    Snakemake 9 on SIGTERM only stops scheduling and waits for the running jobs to end
    (a trial step could go on for its whole duration); on SIGINT it waits for them too.
    Ctrl-C reaches the steps anyway (same process group); `kill <snakemake>` does not.
    So pass the signal on to our step scripts, which stop in order (steps.run_step),
    then let Snakemake's own handler do what it does.  Called from `onstart:`, after
    Snakemake installed its handlers."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            steps = running_steps()
            for pid in steps:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            if steps:
                print(f"xdplab: got {signal.Signals(signum).name}: stopping the running step(s) "
                      f"(pid {', '.join(map(str, steps))}); the testbed is cleaned up after them",
                      file=sys.stderr, flush=True)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL and signum == signal.SIGINT:
                raise KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)


# -- 5. the scheduler's wake-up timer ------------------------------------------------------

def cancel_scheduler_timers() -> None:
    """Snakemake's scheduler, after each round, starts a timer that wakes it again after the
    job rate limit's timespan (--max-jobs-per-timespan, 1 s at the least); the last one,
    not a daemon, holds the finished process for up to that second.  Once the workflow has
    ended there is nothing left to wake: cancel them (each run and each test saves ~1 s)."""
    for t in threading.enumerate():
        if isinstance(t, threading.Timer) and "_schedule_reevalutation" in getattr(
                t.function, "__qualname__", ""):
            t.cancel()


# -- 7. parameters compared without pandas --------------------------------------------------

def params_compared_without_pandas() -> bool:
    """Snakemake's parameter comparison without importing pandas (7. above); True when it
    applied.  Called while the Snakefile is read (workflow/rules/common.smk)."""
    try:
        from snakemake.persistence import PersistenceBase as Persistence
    except ImportError:
        return False
    if not isinstance(Persistence.__dict__.get("_serialize_param"), property) \
            or not callable(getattr(Persistence, "_serialize_param_builtin", None)):
        return False
    Persistence._serialize_param = property(lambda self: self._serialize_param_builtin)
    return True


# -- 8. the end of the snakemake process -----------------------------------------------------

def exit_without_teardown() -> bool:
    """`snakemake.cli.main`'s final sys.exit ends the process after the atexit handlers,
    without the interpreter's teardown (8. above); True when it applied."""
    try:
        from snakemake import cli
    except ImportError:
        return False
    main_code = getattr(getattr(cli, "main", None), "__code__", None)
    real_exit = sys.exit
    if main_code is None or getattr(real_exit, "xdplab", False) or not hasattr(atexit, "_run_exitfuncs"):
        return False

    def exit_(status=None):
        caller = sys._getframe(1).f_code
        if caller is not main_code or threading.current_thread() is not threading.main_thread() \
                or not isinstance(status, (int, type(None))):
            real_exit(status)
        try:
            atexit._run_exitfuncs()
        finally:
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:   # a closed or broken stream: nothing left to say there
                    pass
            os._exit(status or 0)

    exit_.xdplab = True
    sys.exit = exit_
    return True
