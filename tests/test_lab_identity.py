"""A lab trial's identity and provenance, end to end against the test namespace lab
(tests/labnet.py): a finished trial records the commit of the checkout that made it, and
neither moving the token, key and known_hosts files nor a new commit measures it again."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SNAKEMAKE = Path(sys.executable).with_name("snakemake")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")


def _snakemake(workdir, *args):
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}
    return subprocess.run([str(SNAKEMAKE), "--cores", "1", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def test_moved_credentials_and_a_new_commit_measure_nothing_again(netns_lab, workflow_copy, tmp_path):
    # The workflow copy as a user's clone: a git checkout of one commit.
    _git(workflow_copy, "init", "-q")
    _git(workflow_copy, "add", "-A")
    _git(workflow_copy, "commit", "-q", "-m", "clone")
    head = _git(workflow_copy, "rev-parse", "HEAD")
    config = ["--config", "target_pps=2000", "duration_s=2", "experiment=ident"]
    run = _snakemake(workflow_copy, "--configfile", str(netns_lab.config_path), *config)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    (trial_json,) = (workflow_copy / "results/ident/trials").glob("*/rep~0/trial.json")
    trial = json.loads(trial_json.read_text())
    assert trial["code"]["commit"] == head and trial["code"]["dirty"] is False, trial["code"]
    assert trial["code"]["why"] is None and trial["code"]["xdplab_version"]
    assert "token_file" not in json.dumps(trial["settings"]), "credentials are not settings"
    points = (workflow_copy / "results/ident/points.csv").read_text().splitlines()
    assert points[0].endswith(",code_versions,code,dut_kernels,dut_kernel"), points
    assert points[1].endswith(f",1,{head[:12]},1,{os.uname().release}"), points
    assert trial["dut_kernel"] == os.uname().release   # the lab's DUT is a namespace of this kernel

    # The same lab with every credential file somewhere else (and the token file renamed).
    moved = tmp_path / "moved"
    moved.mkdir()
    lab = yaml.safe_load(netns_lab.config_path.read_text())

    def move(path, name):
        dest = moved / name
        shutil.copy2(path, dest)
        return str(dest)

    lab["lab"]["dut"]["token_file"] = move(lab["lab"]["dut"]["token_file"], "dut.token")
    for i, s in enumerate(lab["lab"]["sources"]):
        s["key_file"] = move(s["key_file"], f"key{i}")
        s["known_hosts"] = move(s["known_hosts"], f"known_hosts{i}")
    (moved / "lab.yaml").write_text(yaml.safe_dump(lab, sort_keys=False))
    # ... and a new commit that changes no measuring code.
    (workflow_copy / "README.md").write_text((workflow_copy / "README.md").read_text() + "\nA note.\n")
    _git(workflow_copy, "commit", "-q", "-am", "a note")

    dry = _snakemake(workflow_copy, "-n", "--configfile", str(moved / "lab.yaml"), *config)
    assert dry.returncode == 0, dry.stderr[-3000:]
    out = dry.stdout + dry.stderr
    # Nothing is measured again; only the tables are written again (config.yaml, the
    # configuration as run, names the files where they are now).
    assert _planned(out) <= {"aggregate", "figures", "all"}, out[-3000:]
    # A host's interface that changed is another trial.
    lab["lab"]["sources"][1]["address"] = "auto"
    (moved / "lab.yaml").write_text(yaml.safe_dump(lab, sort_keys=False))
    other = _snakemake(workflow_copy, "-n", "--configfile", str(moved / "lab.yaml"), *config)
    assert other.returncode == 0, other.stderr[-3000:]
    assert {"check_connectivity", "arm_collector", "gather_results"} <= _planned(other.stdout + other.stderr)


def _planned(out):
    """The rules a dry run's job table ("Job stats:", then "rule  count" lines) plans."""
    table = out.split("Job stats:", 1)[1].split("\ntotal", 1)[0] if "Job stats:" in out else ""
    return {w[0] for w in (line.split() for line in table.splitlines()) if len(w) == 2 and w[1].isdigit()}
