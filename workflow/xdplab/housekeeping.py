"""What the workflow does around its rules: find what an interrupted invocation left in
results/ and discard it, pass a stop signal on to the running steps, and clean up at
the end of a run (successful or not).

A trial's four steps hold state on the DUT agent between them, so a trial
that stopped half-way cannot be continued: its step records are removed and
the whole trial runs again.  Complete trials (trial.json present) are never
touched.

What this leans on of Snakemake beyond its documented hooks (the command line, the
lock directory, its signal handling and scheduler) is in xdplab.snakemake_internals.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

from . import snakemake_internals, trials
from .snakemake_internals import another_invocation_running, executes_jobs  # noqa: F401 (executes_jobs: for tests)
from .steps.machinery import FAILED_FILE   # why the trial's last attempt failed
from .steps.machinery import RUN_FAILURES, run_failures   # why this invocation's steps failed

STEP_FILES = ("arm.json", "generator.json", "capture.json")
CAPTURE_GLOB = "capture*.pcap"   # capture.pcap, or capture-<if>.pcap per DUT interface
# temp() outputs of check_connectivity (and of testbed_up, which it replaced): true only for the invocation
# that made them (the next one may find the testbed torn down).
TESTBED_RECORDS = ("testbed.json", "connectivity.json")


def _failure_of(trial_dir: Path) -> dict | None:
    try:
        failure = json.loads((trial_dir / FAILED_FILE).read_text())
    except (OSError, ValueError):
        return None
    return failure if isinstance(failure, dict) else None




def discard_partial_trials(results: str, trial_dirs=None, argv: list[str] | None = None) -> list[str]:
    """Remove step records of trials without trial.json; return what was removed.  Only on
    an invocation that runs jobs: a dry run, a lint or a report changes nothing.  Every
    trial directory of the experiment is looked at (those of other settings, and the probes
    of a zero-loss search, too), besides `trial_dirs`."""
    if not executes_jobs(argv):
        return []
    if another_invocation_running(Path(".")):
        return []
    notes = []
    for d in Path(results).parent.glob("build/*/port~*"):
        for f in TESTBED_RECORDS:
            (d / f).unlink(missing_ok=True)
    dirs = {Path(d) for d in trial_dirs or ()} | set(trials.all_trial_dirs(results))
    for d in sorted(dirs):
        for f in TESTBED_RECORDS:
            (d / f).unlink(missing_ok=True)
        if (d / "trial.json").exists():
            continue
        present = [f for f in STEP_FILES if (d / f).exists()]
        present += sorted(p.name for p in d.glob(CAPTURE_GLOB)) if d.is_dir() else []
        # Temporary files of a write that never finished (.arm.json.tmp123, ...).
        present += sorted(p.name for p in d.glob(".*.tmp*")) if d.is_dir() else []
        if present:
            for f in present:
                (d / f).unlink(missing_ok=True)
            failure = _failure_of(d)
            why = (f"; it failed in {failure.get('step')}: {failure.get('reason')}" if failure
                   else " left by an interrupted run")
            notes.append(f"discarded the partial trial {d} ({', '.join(present)}){why}; "
                         f"it will run again from the start")
    return notes


# -- start of run ------------------------------------------------------------------

class ResultsNotWritable(RuntimeError):
    pass


def check_writable(results: str) -> None:
    """Fail before anything runs if results/<experiment> cannot be written (read-only,
    full, no permission), naming the path and the OS's reason."""
    probe = Path(results, f".xdplab-write-test-{os.getpid()}")
    try:
        Path(results).mkdir(parents=True, exist_ok=True)
        with open(probe, "w") as f:
            f.write("xdplab\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ResultsNotWritable(f"xdplab: cannot write {e.filename or probe}: {e.strerror or e}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


_RUN = {"ended": False}


def write_plan(trial_dirs: list[str], seed=None) -> None:
    """The trials of this invocation, in the order they run, for the progress lines
    (progress.banner) and for each trial's record of its place in the run."""
    from .progress import PLAN_FILE

    PLAN_FILE.parent.mkdir(parents=True, exist_ok=True)
    PLAN_FILE.write_text(json.dumps({"trials": trial_dirs, "seed": seed, "started_unix_s": time.time()}))


def on_start(settings: dict, results: str, trial_dirs: list[str] = ()) -> None:
    """Run by Snakemake before the first job (not on a dry run)."""
    check_writable(results)
    write_plan(list(trial_dirs), settings.get("seed"))
    RUN_FAILURES.unlink(missing_ok=True)   # the failures said at the end are this invocation's
    # Snakemake's own handlers only wait for the running jobs: pass a stop signal on
    snakemake_internals.forward_stop_signals()
    # Some failures skip Snakemake's onerror (an output directory that cannot be made,
    # an error in the scheduler): end the run in order anyway, at exit.
    atexit.register(lambda: _RUN["ended"] or end_of_run(settings, results, failed=True, at_exit=True))


# -- end of run ----------------------------------------------------------------------

def failed_trials(results: str) -> list[dict]:
    """The failures recorded in the experiment's trials (failed.json), oldest first."""
    found = []
    for path in [d / FAILED_FILE for d in trials.all_trial_dirs(results) if (d / FAILED_FILE).exists()]:
        failure = _failure_of(path.parent)
        if failure is not None and not (path.parent / "trial.json").exists():
            found.append(failure)
    return sorted(found, key=lambda f: f.get("unix_s") or 0)


def end_of_run(settings: dict, results: str, failed: bool, at_exit: bool = False) -> None:
    """Run by Snakemake when the workflow ends: leave nothing armed or running, tear
    down (or keep) the testbed, show the table; or, after a failure, say why (`verdict`)
    as the run's last lines: at the interpreter's exit, after Snakemake's own closing
    lines (`at_exit`: called from there already)."""
    if _RUN["ended"]:
        return
    _RUN["ended"] = True
    snakemake_internals.cancel_scheduler_timers()
    failures = []
    if failed:
        # The steps' own record; failing that (it could not be written), the trials' failed.json.
        failures = _this_invocation(run_failures()) or [
            dict(f, where=f"trial {f.get('trial')}", rerun=bool(f.get("interrupted")))
            for f in _this_invocation(failed_trials(results))]
    # What the end of the run tells anyway is not told again while cleaning up.
    known = "\n".join(f"{f.get('reason')}\n{f.get('fix') or ''}" for f in failures)
    pool = settings.get("testbeds") or []
    if pool:
        # A pool (`testbeds`): each embedded instance as the one testbed, each lab as a lab.
        for entry in pool:
            if entry["testbed"] == "embedded":
                _end_embedded(settings, results, failed, known, entry["instance"],
                              Path(results, "logs", f"testbed-{entry['name']}"))
            elif failed:
                for note in _quiesce({"sources": entry["lab"]["sources"], "dut": entry["lab"]["dut"]}, known=known):
                    print(f"xdplab: {entry['name']}: {note}", file=sys.stderr)
    elif settings["testbed"] == "embedded":
        _end_embedded(settings, results, failed, known, 0, Path(results, "logs", "testbed"))
    elif settings["testbed"] == "lab" and failed and settings.get("lab"):
        # The steps clean up after themselves; this is the last word on a failed lab run.
        lab = settings["lab"]
        for note in _quiesce({"sources": lab["sources"], "dut": lab["dut"]}, known=known):
            print(f"xdplab: {note}", file=sys.stderr)
    if failed:
        lines = verdict(failures, results)
        if at_exit:
            _say(lines)
        else:
            atexit.register(_say, lines)
    # A zero-loss search (`snakemake ndr`) ends with its own table.
    searched = snakemake_internals.asked_for("ndr") and Path(results, "ndr.md").exists()
    table = Path(results, "ndr.md" if searched else "summary.md")
    if not failed and table.exists():
        print("\n" + table.read_text())
        print(f"Results: {results}/ndr.csv (one row per search; method in docs/ndr.md)"
              if searched else
              f"Results: {results}/summary.csv (one row per trial; columns explained in docs/method.md)")
    for line in source_limited(results):
        print(line)


def _end_embedded(settings: dict, results: str, failed: bool, known: str, instance: int, logs: Path) -> None:
    """The end of a run for one embedded testbed (an instance of a pool's, or the one)."""
    from .testbed import EmbeddedTestbed, TestbedError

    tb = EmbeddedTestbed(src_iface=settings["src_iface"], dut_iface=settings["dut_iface"],
                         mtu=settings["mtu"], **({"instance": instance} if instance else {}))
    if settings["keep_testbed"]:
        # After a run without failures every generator has ended and reported; a failed
        # or interrupted one may have left one running.
        for note in _quiesce(_embedded_description(tb, settings), generators=failed, known=known):
            print(f"xdplab: {note}", file=sys.stderr)
        print("xdplab: the testbed is left up (keep_testbed=true); remove it with "
              "`make clean-testbed`", file=sys.stderr)
    else:
        try:
            # The testbed's own logs (agent, sshd) go next to the results; down()
            # removes everything else it made, keys and token included.
            try:
                if tb.copy_logs(logs):
                    print(f"xdplab: testbed logs kept in {logs}/",
                          file=sys.stderr)
            except OSError as e:
                print(f"xdplab: could not keep the testbed's logs: {e}", file=sys.stderr)
            for item in tb.down():
                print(f"xdplab: testbed down: {item}", file=sys.stderr)
        except TestbedError as e:
            print(f"xdplab: tearing down the testbed failed: {e}; run `make clean-testbed`",
                  file=sys.stderr)


def _say(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()


def _this_invocation(failures: list[dict]) -> list[dict]:
    """The failures recorded since this invocation started (progress.PLAN_FILE)."""
    from .progress import PLAN_FILE

    try:
        started = json.loads(PLAN_FILE.read_text()).get("started_unix_s") or 0
    except (OSError, ValueError, AttributeError):
        started = 0
    return [f for f in failures if (f.get("unix_s") or 0) >= started]


def verdict(failures: list[dict], results: str) -> list[str]:
    """The last lines of a failed run: each reason once (steps that failed alike, such as
    every trial's connectivity check while the agent is down, together), with its fix
    where the step knew one; then whether running the same command again can help by
    itself (after an interruption or a passing failure) or something must be fixed first."""
    groups: dict[str, list[dict]] = {}
    for f in failures:
        groups.setdefault(str(f.get("reason", "?")), []).append(f)
    out = []
    for reason, group in groups.items():
        steps = ", ".join(dict.fromkeys(str(f.get("step")) for f in group))
        where = [f.get("where") or "a step" for f in group]
        if len(group) == 1:
            head = (f"xdplab: {where[0]} FAILED in {steps} at {group[0].get('time')}: "
                    if group[0].get("where") else f"xdplab: {steps} FAILED at {group[0].get('time')}: ")
        else:
            head = f"xdplab: {steps} FAILED {len(group)} times ({_count_places(where)}), each time: "
        first, *rest = reason.strip().splitlines() or ["?"]
        out.append(head + first)
        out += [f"xdplab:   {line.strip()}" for line in rest if line.strip()]
        fix = next((f["fix"] for f in group if f.get("fix")), None)
        out += [f"xdplab:   fix: {line.strip()}" for line in (fix or "").splitlines() if line.strip()]
    logs = f"each step's log is in {results}/trials/<trial>/logs/ or {Path(results).parent}/build/<testbed>/logs/"
    if failures and all(f.get("rerun") for f in failures):
        out.append(f"xdplab: the run failed; {logs}. Run the same command again: finished trials "
                   f"are kept, failed or interrupted ones run again.")
    elif failures:
        out.append(f"xdplab: the run failed; {logs}. Finished trials are kept: once the cause "
                   f"above is dealt with, the next run repeats only what did not finish.")
    else:
        out.append("xdplab: the run failed before any step did (Snakemake's error is above; its "
                   "whole log is in .snakemake/log/).")
    return out


def _count_places(where: list[str]) -> str:
    """"the build and 18 trials": where a step failed alike."""
    trials = [w for w in where if w.startswith("trial ")]
    parts = list(dict.fromkeys(w for w in where if not w.startswith("trial ")))
    if trials:
        parts.append(trials[0] if len(trials) == 1 else f"{len(trials)} trials")
    return " and ".join(parts)


def source_limited(results: str) -> list[str]:
    """Lines saying which trials' sources could not sustain their rate (rate_sustained
    false in summary.csv): their loss and rates measure the source, not the DUT."""
    import csv

    try:
        with open(Path(results, "summary.csv")) as f:
            rows = [r for r in csv.DictReader(f) if r.get("rate_sustained") == "False"]
    except OSError:
        return []
    if not rows:
        return []
    out = [f"xdplab: the source was the limit in {len(rows)} trial(s): it could not offer the target "
           f"rate within duration_s (rate_sustained=false; not_offered packets were never sent):"]
    for r in rows:
        out.append(f"xdplab:   {r['target_pps']} pps, {r['packet_size']} B, repeat {r['repeat']}: achieved "
                   f"{r['achieved_pps']} pps, not offered {r['not_offered']}")
    return out


def _embedded_description(tb, settings: dict) -> dict | None:
    from .steps.connectivity import describe_embedded

    try:
        raw = json.loads(Path(tb.state_dir, "testbed.json").read_text())
        return describe_embedded(raw, settings["source_python"])
    except (OSError, ValueError, KeyError):
        return None


def _quiesce(desc: dict | None, generators: bool = True, known: str = "") -> list[str]:
    """On hosts that stay up: disarm any session and (`generators`) stop any generator of
    ours over SSH, so that they are reusable.  Best effort, bounded; returns what it did.
    A host that cannot be reached for a reason already in `known` (the failures the run
    ends with) is not reported again."""
    from .agentclient import AgentClient, AgentError

    def new_news(e) -> bool:
        fix = getattr(e, "fix", None)
        return not (str(e) and str(e) in known) and not (fix and fix in known)

    notes = []
    if not desc:
        return notes
    try:
        disarmed = AgentClient.from_description(desc["dut"], timeout_s=10).reset().get("disarmed")
        if disarmed:
            notes.append(f"disarmed session(s) {', '.join(disarmed)} on the DUT agent")
    except (OSError, KeyError, AgentError) as e:
        if new_news(e):
            notes.append(f"could not disarm the DUT agent: {e}")
    from . import source

    for src in (desc.get("sources") or []) if generators else []:
        try:
            for proc in source.stop_generators(src):
                notes.append(f"stopped a generator on the {source.where(src)}: {proc}")
        except Exception as e:  # noqa: BLE001 - best effort at the very end
            if new_news(e):
                notes.append(f"could not check the {source.where(src)} for generators: {e}")
    return notes
