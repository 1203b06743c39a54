"""Which code made a trial: the git commit of the workflow's checkout, whether its tree was
dirty, and xdplab's version (pyproject.toml), read when the trial's result is written
(gather_results puts it in trial.json as `code`).  Never a rule's parameter: a new commit
reruns no finished trial (the measuring code's own digest in common.smk does what must).

The tables pool the repeats of a grid point (points.csv); code_label names a trial's code
so that a point pooled from trials of different code can be flagged (stats.points).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# The checkout: the directory holding Snakefile and workflow/ (this file is
# workflow/xdplab/provenance.py).
CHECKOUT = Path(__file__).resolve().parents[2]
# What a trial.json made before trials recorded their code is labelled.
UNRECORDED = "unrecorded"
GIT_TIMEOUT_S = 30


def _git(repo: Path, *args: str) -> str:
    # Only this checkout: no GIT_DIR or GIT_WORK_TREE of the caller's; --no-optional-locks so
    # that `git status` never takes the index lock from a git command running beside it.
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    r = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True,
                       text=True, timeout=GIT_TIMEOUT_S, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"git {args[0]}: {r.stderr.strip()[:300] or f'exit status {r.returncode}'}")
    return r.stdout


def xdplab_version(checkout: Path = CHECKOUT) -> str | None:
    """[project] version in the checkout's pyproject.toml; None without one."""
    import tomllib

    try:
        with open(Path(checkout, "pyproject.toml"), "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None


def code_version(checkout: Path = CHECKOUT) -> dict:
    """{"commit": 40 hex digits or None, "dirty": true/false (tracked files changed or files
    git does not ignore added, against the commit) or None, "describe": `git describe
    --always --dirty --tags` or None, "xdplab_version": pyproject's or None, "why": None, or
    why there is no commit (not a git checkout, git missing, ...)}.  Never raises: a trial's
    result is written whatever git says."""
    checkout = Path(checkout).resolve()
    out = {"commit": None, "dirty": None, "describe": None,
           "xdplab_version": xdplab_version(checkout), "why": None}
    try:
        top = Path(_git(checkout, "rev-parse", "--show-toplevel").strip()).resolve()
        if top != checkout:
            raise RuntimeError(f"the code at {checkout} is inside the git checkout {top}, not its top")
        out["commit"] = _git(checkout, "rev-parse", "HEAD").strip()
        out["dirty"] = bool(_git(checkout, "status", "--porcelain=v1").strip())
        out["describe"] = _git(checkout, "describe", "--always", "--dirty", "--tags").strip()
    except FileNotFoundError:
        out.update(commit=None, dirty=None, describe=None, why="git is not installed")
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        reason = str(e)
        if "not a git repository" in reason:
            reason = f"{checkout} is not a git checkout (a copy or an archive's code/)"
        out.update(commit=None, dirty=None, describe=None, why=reason)
    return out


def code_label(code: dict | None) -> str:
    """A trial's code in one word, for pooling: the commit's first 12 digits, `+dirty` when
    the tree had changes; `xdplab <version> (no commit)` outside a git checkout;
    `unrecorded` for a trial.json that has no `code`.  Two trials of one dirty commit get
    the same label: what changed is not told apart (`snakemake archive` keeps the
    diff as it is when the archive is made)."""
    if not isinstance(code, dict):
        return UNRECORDED
    if code.get("commit"):
        return str(code["commit"])[:12] + ("+dirty" if code.get("dirty") else "")
    return f"xdplab {code.get('xdplab_version') or '?'} (no commit)"
