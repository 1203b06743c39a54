"""The workflow's shape, without running anything: lint and the planned DAG."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import planned_trial

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake(workdir, *args):
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}
    return subprocess.run([str(SNAKEMAKE), *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)


def planned(output: str) -> dict:
    """Job counts from Snakemake's 'Job stats' table."""
    counts = {}
    for line in output.split("Job stats:")[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_lint_leaves_only_the_environment_advice(workflow_copy):
    run = snakemake(workflow_copy, "--lint")
    lints = {line.strip() for line in (run.stdout + run.stderr).splitlines() if line.startswith("    * ")}
    # Rules run in .venv (envs/controller.txt) beside Debian's BCC, which conda cannot provide.
    assert lints <= {"* Specify a conda environment or container for each rule.:"}, lints


def test_a_sweep_plans_every_step_once_per_trial(workflow_copy):
    run = snakemake(workflow_copy, "-n", "--cores", "1", "--config",
                    "target_pps=[1000,2000]", "packet_size=[18,1458]", "repeats=2", "duration_s=1")
    assert run.returncode == 0, run.stderr
    jobs = planned(run.stdout + run.stderr)
    trials = 2 * 2 * 2
    for rule in ("arm_collector", "launch_generator", "verify_capture", "gather_results"):
        assert jobs[rule] == trials, jobs
    # The testbed is brought up and checked for the build and right before each trial.
    assert "testbed_up" not in jobs and jobs["check_connectivity"] == trials + 1, jobs
    assert jobs["build_collector"] == jobs["aggregate"] == jobs["figures"] == 1, jobs
    # Nothing was done for a dry run: no testbed, no results.
    assert not (workflow_copy / "results").exists()


def test_partial_trials_are_discarded_only_by_runs_that_execute_jobs(workflow_copy):
    sys.path.insert(0, str(workflow_copy / "workflow"))
    from xdplab.housekeeping import executes_jobs

    assert executes_jobs(["snakemake", "--cores", "1", "--config", "target_pps=1000"])
    for argv in (["-n"], ["-np"], ["--dry-run"], ["--lint"], ["--report", "r.html"], ["--report=r.html"],
                 ["--list-changes", "params"], ["--summary"], ["--unlock"], ["-D"]):
        assert not executes_jobs(["snakemake", "--cores", "1", *argv]), argv
    partial = planned_trial(workflow_copy / "results/default", {})
    partial.mkdir(parents=True)
    (partial / "arm.json").write_text("{}")
    for args in (["-n", "--cores", "1"], ["--lint"]):
        snakemake(workflow_copy, *args)
        assert (partial / "arm.json").exists(), args
