"""`make run` as the README describes it: configuration keys as make variables, refusals
for what make does not understand, a short terminal with the full log in its file, and a
second run with nothing to do that prints the table again.

Everything here but the last test needs neither root nor the testbed: `make -n` prints
the command it would run, and a toy workflow stands in for xdplab's to check the logging.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
sys.path.insert(0, str(REPO / "workflow"))
from xdplab.config import load_schema  # noqa: E402


def make(*args, cwd=REPO, timeout=60):
    return subprocess.run(["make", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def planned(*args):
    """The snakemake command `make run ARGS` would run (make -n), or the refusal."""
    run = make("-n", "run", *args)
    lines = [line for line in run.stdout.splitlines() if "/snakemake " in line]
    return run, (lines[0].split("/snakemake ", 1)[1] if lines else "")


@pytest.mark.parametrize("args, expected", [
    ((), "--config 'duration_s=10'"),
    (("target_pps=20000",), "--config 'target_pps=20000' 'duration_s=10'"),
    (("duration_s=3",), "--config 'duration_s=3'"),
    (("target_pps=10000,20000", "duration_s=3"), "--config 'target_pps=10000,20000' 'duration_s=3'"),
    (("target_pps=[1000, 2000]", "packet_size=18"), "'target_pps=[1000, 2000]' 'packet_size=18' 'duration_s=10'"),
    (("experiment=night", "xdp_mode=generic", "repeats=3"),
     "'experiment=night' 'repeats=3' 'duration_s=10' 'xdp_mode=generic'"),
    (("CONFIG=repeats=2 port=4000",), "--config 'duration_s=10' repeats=2 port=4000"),
    (("VERBOSE=1",), "--cores 1 --workflow-profile none --config 'duration_s=10'"),
])
def test_make_run_passes_what_was_asked(args, expected):
    run, cmd = planned(*args)
    assert run.returncode == 0, run.stderr
    assert cmd.endswith(expected), cmd


@pytest.mark.parametrize("args, says", [
    (("target_ppps=20000",), "make does not know 'target_ppps=20000'"),
    (("durationS=3",), "make does not know 'durationS=3'"),
    (("TARGET_PPS=20000",), "make does not know 'TARGET_PPS=20000'"),   # the older spelling, gone
    # What the shell makes of  make run target_pps=[1000, 2000]  and friends:
    (("target_pps=[1000,", "2000]"), "'2000]' is not a make target: the shell split a list"),
    (("target_pps=1000,", "2000"), "'2000' is not a make target: the shell split a list"),
    (("target_pps=[1000,",), "target_pps=[1000, is cut off"),
    (("CONFIG=target_pps=[1000, 2000]",), "CONFIG holds 'target_pps=[1000,', not key=value"),
])
def test_make_refuses_what_it_does_not_understand(args, says):
    run, cmd = planned(*args)
    assert run.returncode != 0 and cmd == ""
    message = run.stderr.strip()
    assert says in message, message
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    if "split a list" in message:
        assert "make run 'target_pps=[1000, 2000]'" in message   # the quoted form


def test_make_knows_every_configuration_key():
    run, _ = planned("no_such_key=1")
    known = run.stderr.split("configuration keys: ", 1)[1].split(";", 1)[0].split()
    assert known == list(load_schema()["properties"])


def test_the_workflow_profile_quiets_the_terminal():
    profile = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert "rules" in profile["quiet"] and "all" not in profile["quiet"]


# -- the logging, on a toy workflow with xdplab's profile ------------------------------

TOY = """
import sys
sys.path.insert(0, {workflow!r})
from xdplab import snakemake_internals
snakemake_internals.tune_snakemake_logging("results/toy", dryrun=lambda: workflow.dryrun)

rule all:
    input: "out.txt"

rule make_out:
    output: "out.txt"
    shell: "echo made > {{output}}"
"""


def snakemake(workdir, *args):
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}
    run = subprocess.run([str(SNAKEMAKE), *args], cwd=workdir, env=env, capture_output=True,
                         text=True, timeout=120)
    return run, run.stdout + run.stderr


def test_terminal_is_short_log_file_is_full_and_nothing_to_do_prints_the_table(tmp_path):
    (tmp_path / "Snakefile").write_text(TOY.format(workflow=str(REPO / "workflow")))
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    (tmp_path / "results/toy").mkdir(parents=True)
    (tmp_path / "results/toy/summary.md").write_text("| offered pps |\n|---:|\n| 10000 |\n")

    run, out = snakemake(tmp_path, "-n")
    assert run.returncode == 0, out
    assert "Job stats:" in out and "rule make_out" in out   # a dry run shows its plan

    run, out = snakemake(tmp_path)
    assert run.returncode == 0, out
    assert (tmp_path / "out.txt").exists()
    for chatter in ("localrule make_out", "Select jobs to execute", "Execute 1 jobs", "steps (100%) done"):
        assert chatter not in out, out
    (log,) = (tmp_path / ".snakemake/log").glob("*.snakemake.log")
    full = log.read_text()
    for line in ("localrule make_out", "Select jobs to execute", "steps (100%) done"):
        assert line in full, full
    assert "Complete log(s):" in out                  # the terminal says where it is

    run, out = snakemake(tmp_path)
    assert run.returncode == 0, out
    assert "Nothing to be done" in out
    assert "| 10000 |" in run.stdout and "Results: results/toy/summary.csv" in run.stdout

    run, out = snakemake(tmp_path, "-n")             # a dry run does not
    assert "Nothing to be done" in out and "| 10000 |" not in out


def test_a_failed_job_still_says_so_on_a_quiet_terminal(tmp_path):
    (tmp_path / "Snakefile").write_text(TOY.format(workflow=str(REPO / "workflow")).replace(
        'shell: "echo made > {output}"', 'log: "make_out.log"\n    shell: "echo boom > {log}; exit 3"'))
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    run, out = snakemake(tmp_path)
    assert run.returncode != 0
    assert "Error in rule make_out" in out and "make_out.log" in out, out
    assert "localrule make_out" not in out, out


# -- the real thing: two `make run`s on the embedded testbed (root, under the lock) ----

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")
def test_second_make_run_prints_the_table_again(workflow_copy):
    (workflow_copy / ".venv").symlink_to(REPO / ".venv")   # make setup finds it ready
    args = ["run", "target_pps=2000", "duration_s=2", "experiment=make_twice"]
    try:
        first = make(*args, cwd=workflow_copy, timeout=600)
        assert first.returncode == 0, first.stderr[-4000:]
        out = first.stdout + first.stderr
        assert "localrule" not in out and "Select jobs to execute" not in out, out
        assert "| offered pps |" in first.stdout and "results/make_twice/summary.csv" in first.stdout
        assert len(out.splitlines()) < 80, out

        again = make(*args, cwd=workflow_copy, timeout=600)
        assert again.returncode == 0, again.stderr[-4000:]
        assert "Nothing to be done" in again.stdout + again.stderr
        assert "| offered pps |" in again.stdout
        assert "Results: results/make_twice/summary.csv" in again.stdout
    finally:
        subprocess.run([sys.executable, "-m", "xdplab.testbed", "down"], cwd=workflow_copy,
                       env={**os.environ, "PYTHONPATH": str(workflow_copy / "workflow")},
                       capture_output=True)
