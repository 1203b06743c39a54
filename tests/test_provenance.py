"""The code that made a trial (workflow/xdplab/provenance.py): a git checkout's commit and
whether its tree was dirty, xdplab's version, and why there is no commit where there is none."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab import provenance  # noqa: E402


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    """A checkout of one commit: pyproject.toml (version 9.8.7) and a Snakefile."""
    repo = tmp_path / "xdplab"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "xdplab"\nversion = "9.8.7"\n')
    (repo / "Snakefile").write_text("# rules\n")
    (repo / ".gitignore").write_text("results/*\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    return repo


def test_a_clean_checkout_gives_its_commit(checkout):
    code = provenance.code_version(checkout)
    assert code == {"commit": git(checkout, "rev-parse", "HEAD"), "dirty": False,
                    "describe": git(checkout, "rev-parse", "--short", "HEAD"),
                    "xdplab_version": "9.8.7", "why": None}
    assert provenance.code_label(code) == code["commit"][:12]


@pytest.mark.parametrize("change", ["edit", "new file"])
def test_a_changed_tree_is_dirty(checkout, change):
    if change == "edit":
        (checkout / "Snakefile").write_text("# rules, edited\n")
    else:
        (checkout / "extra.py").write_text("x = 1\n")
    code = provenance.code_version(checkout)
    # (git describe --dirty counts tracked files only)
    assert code["dirty"] is True and code["describe"].endswith("-dirty") == (change == "edit")
    assert provenance.code_label(code) == code["commit"][:12] + "+dirty"


def test_results_do_not_make_the_tree_dirty(checkout):
    (checkout / "results" / "e").mkdir(parents=True)
    (checkout / "results" / "e" / "summary.csv").write_text("x\n")
    assert provenance.code_version(checkout)["dirty"] is False


def test_a_copy_without_git_records_null_and_why(tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "pyproject.toml").write_text('[project]\nversion = "1.2.3"\n')
    code = provenance.code_version(copy)
    assert code["commit"] is None and code["dirty"] is None and code["describe"] is None
    assert code["xdplab_version"] == "1.2.3"
    assert "not a git checkout" in code["why"] and str(copy) in code["why"]
    assert provenance.code_label(code) == "xdplab 1.2.3 (no commit)"


def test_code_inside_another_checkout_is_not_that_checkout(checkout):
    inner = checkout / "vendored" / "xdplab"
    inner.mkdir(parents=True)
    code = provenance.code_version(inner)
    assert code["commit"] is None and "inside the git checkout" in code["why"], code
    assert code["xdplab_version"] is None


def test_without_git_installed(checkout, monkeypatch):
    monkeypatch.setenv("PATH", str(checkout / "no-bin"))
    code = provenance.code_version(checkout)
    assert code["commit"] is None and code["why"] == "git is not installed"
    assert code["xdplab_version"] == "9.8.7"


def test_git_variables_of_the_caller_do_not_redirect_it(checkout, tmp_path, monkeypatch):
    head = git(checkout, "rev-parse", "HEAD")
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert provenance.code_version(checkout)["commit"] == head


def test_this_checkout():
    """The workflow's own code: a commit when it is a git checkout (as here), its version."""
    code = provenance.code_version()
    assert code["xdplab_version"]
    if (REPO / ".git").exists():
        assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool), code


def test_a_trial_json_without_code_is_unrecorded():
    assert provenance.code_label(None) == provenance.UNRECORDED == "unrecorded"


def test_the_commit_is_never_a_rule_parameter():
    """Read when the result is written, in the step: no rule's params (which would rerun
    every finished trial at each new commit) and no trial setting carries it."""
    rules = "".join(p.read_text() for p in sorted((REPO / "workflow/rules").glob("*.smk")))
    rules += (REPO / "Snakefile").read_text()
    assert "provenance" not in rules and "rev-parse" not in rules
    assert "provenance.code_version()" in (REPO / "workflow/xdplab/steps/results.py").read_text()
