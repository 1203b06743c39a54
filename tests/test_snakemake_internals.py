"""What xdplab.snakemake_internals assumes of Snakemake, checked against the installed
version: its command-line options, and how a step script is found to pass a signal on."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from xdplab import snakemake_internals as internals  # noqa: E402

# Snakemake's options (by their parser's dest) under which an invocation runs no job.
NO_JOB = {
    "dryrun", "lint", "report", "summary", "detailed_summary", "dag", "rulegraph", "filegraph",
    "d3dag", "list_rules", "list_target_rules", "list_changes", "list_input_changes",
    "list_params_changes", "list_untracked", "list_conda_envs", "archive", "unlock",
    "cleanup_metadata", "containerize", "export_cwl", "print_compilation", "touch",
    "delete_all_output", "delete_temp_output", "generate_unit_tests", "cleanup_shadow",
    "conda_create_envs_only", "conda_cleanup_envs", "version", "help",
}


def test_every_alias_of_an_option_that_runs_no_job_is_known():
    from snakemake.cli import get_argument_parser

    wrong = []
    for action in get_argument_parser()._actions:
        for option in action.option_strings:
            argv = ["snakemake", option] + ([] if action.nargs == 0 else ["x"])
            if internals.executes_jobs(argv) == (action.dest in NO_JOB):
                wrong.append(option)
    assert not wrong, f"classified wrongly: {wrong}"


def test_abbreviations_and_clusters():
    runs = internals.executes_jobs
    assert runs(["snakemake", "--cores", "1", "--config", "target_pps=1000"])
    assert runs(["snakemake", "--report-after-run", "-k", "-F", "--verbose", "--debug-dag"])
    for argv in (["-np"], ["--dry"], ["--list"], ["--lint=json"], ["--rep", "r.html"]):
        assert not runs(["snakemake", *argv]), argv
    assert internals.asked_for("ndr", ["snakemake", "--cores", "1", "ndr"])
    assert not internals.asked_for("ndr", ["snakemake", "--cores", "1"])


def test_running_steps_finds_step_scripts_not_their_children(tmp_path):
    script = tmp_path / ".snakemake" / "scripts" / "tmpabc.step.py"
    script.parent.mkdir(parents=True)
    script.write_text("import subprocess, sys, time\n"
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
                      "time.sleep(30)\n")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    step = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        time.sleep(0.5)
        assert internals.running_steps() == [step.pid]
    finally:
        os.killpg(step.pid, signal.SIGKILL)   # the step and its child
        other.kill()
        step.wait()
        other.wait()


def test_parameters_are_compared_as_before_without_pandas():
    """Every kind of parameter xdplab gives serialises to the string Snakemake's own choice
    (pandas installed) gives it, and the comparison no longer goes through pandas."""
    from snakemake.persistence import PersistenceBase as Persistence
    from snakemake.persistence.file import FilePersistence

    values = [{"a": 1, "b": [1, 2.5, "x"]}, "results/x", 12345, None, True, ("a",), 1.5]
    before = [Persistence._serialize_param_pandas(FilePersistence.__new__(FilePersistence), v) for v in values]
    original = Persistence.__dict__["_serialize_param"]
    try:
        assert internals.params_compared_without_pandas()
        p = FilePersistence.__new__(FilePersistence)
        assert p._serialize_param == p._serialize_param_builtin
        assert [p._serialize_param(v) for v in values] == before
    finally:
        Persistence._serialize_param = original


@pytest.mark.parametrize("command, status", [("true", 0), ("exit 3", 1)])
def test_snakemake_ends_with_its_status_after_its_atexit_handlers(tmp_path, command, status):
    """exit_without_teardown: the process ends with main's status, the atexit handlers (the
    log file's among them) having run, as a normal exit."""
    (tmp_path / "Snakefile").write_text(f'rule all:\n    shell: "{command}"\n')
    code = ("import atexit, sys; sys.path.insert(0, sys.argv[1]); "
            "from xdplab import snakemake_internals as i; assert i.exit_without_teardown(); "
            "atexit.register(print, 'atexit handler ran', flush=True); "
            "from snakemake.cli import main; main(['--cores', '1', '--workflow-profile', 'none'])")
    r = subprocess.run([sys.executable, "-c", code, str(REPO / "workflow")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == status, r.stderr
    assert "atexit handler ran" in r.stdout, r.stdout + r.stderr
    log = sorted((tmp_path / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
    assert ("Finished jobid" in log) == (status == 0) and "Complete log" in log, log
