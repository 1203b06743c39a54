"""One experiment packed for a paper or a colleague: results/<experiment>/<experiment>-<UTC
date>.tar.gz (rule archive, workflow/rules/archive.smk).

Inside, under one directory named like the file: the raw trial records of the current
configuration (captures only with archive_pcaps), the experiment's tables, figures,
logs and configuration as run (with the pre-flight check's record, preflight.json), the
collector's build records, the code that ran, an environment manifest per host, MANIFEST.json, a README, SHA256SUMS (`sha256sum -c
SHA256SUMS` there) and ./reaggregate, which rebuilds the tables from the trial records
with the archived code and needs only python3 with pandas.

Paths inside keep their place in the repository (results/<experiment>/..., code/...),
so the archived code finds the records where it would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

FORMAT = 1
REAGGREGATE = Path(__file__).resolve().parents[1] / "scripts" / "reaggregate.py"
# Left out of a trial's directory unless archive_pcaps: the captures.
PCAP_SUFFIXES = (".pcap", ".pcapng")
# When the code is not a git checkout: what makes up the workflow.
CODE_WITHOUT_GIT = ("Snakefile", "Makefile", "README.md", "docs", "pyproject.toml", "workflow", "config",
                    "bpf", "envs", "profiles", "benchmarks", "tests")
# Never copied as code: environments, results, caches.
CODE_SKIP_DIRS = {".git", ".venv", "results", ".snakemake", "__pycache__", ".pytest_cache", "dist"}


# -- what goes in ---------------------------------------------------------------------

def _copy_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest, follow_symlinks=False)


def copy_trials(trial_paths, stage: Path, pcaps: bool) -> tuple[list[str], list[dict]]:
    """Each trial's whole directory (the one holding trial.json), at the same relative
    path under `stage`.  Returns the trial.json paths as archived, in the given order,
    and the captures left out (path, bytes)."""
    archived, left_out = [], []
    for p in trial_paths:
        p = Path(p)
        archived.append(p.as_posix())
        for f in sorted(p.parent.rglob("*")):
            if f.is_dir() and not f.is_symlink():
                continue
            if f.name.endswith(PCAP_SUFFIXES) and not pcaps:
                left_out.append({"path": f.as_posix(), "bytes": f.stat().st_size})
                continue
            _copy_file(f, stage / f)
    return archived, left_out


def copy_experiment(results_dir: str, stage: Path, skip=()) -> list[str]:
    """The experiment's own files outside trials/: tables, figures, the configuration as
    run, logs, whatever else the workflow wrote there; not earlier archives, not hidden
    files, not `skip` (the archive's own log, still being written)."""
    root = Path(results_dir)
    skip = {Path(s).resolve() for s in skip}
    copied = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if rel.parts[0] == "trials" or any(part.startswith(".") for part in rel.parts):
            continue
        if f.is_dir() or f.name.endswith(".tar.gz") or f.resolve() in skip:
            continue
        _copy_file(f, stage / f)
        copied.append(f.as_posix())
    return copied


def _git(repo: Path, *args, text=True) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=text, timeout=120)
    if r.returncode != 0:
        err = r.stderr if text else r.stderr.decode(errors="replace")
        raise RuntimeError(f"git {' '.join(args)}: {err.strip()[:300]}")
    return r.stdout


def copy_code(repo: Path, dest: Path) -> dict:
    """The code as it ran into `dest` (code/): in a git checkout, every tracked file as it
    is in the working tree plus the untracked files git does not ignore, with the commit,
    whether the tree was dirty and the diff against the commit (code.diff); otherwise
    the workflow's files, with the reason there is no commit."""
    repo = Path(repo).resolve()
    info = {"commit": None, "dirty": None, "status": [], "untracked": [], "diff": None}
    try:
        top = Path(_git(repo, "rev-parse", "--show-toplevel").strip()).resolve()
        if top != repo:
            raise RuntimeError(f"{repo} is inside the git checkout {top}, not its top")
        info["commit"] = _git(repo, "rev-parse", "HEAD").strip()
        info["describe"] = _git(repo, "describe", "--always", "--dirty", "--tags").strip()
        info["branch"] = _git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
        status = _git(repo, "status", "--porcelain=v1", "--untracked-files=all").splitlines()
        info["status"] = status
        info["dirty"] = bool(status)
        info["untracked"] = _git(repo, "ls-files", "-z", "--others", "--exclude-standard").split("\0")[:-1]
        names = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")[:-1]
        diff = _git(repo, "diff", "--binary", "HEAD", text=False)
        if diff:
            info["diff"] = diff
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        info["no_git"] = f"not from a git checkout ({e}); code/ holds the workflow's files as they were"
        names = []
        for top in CODE_WITHOUT_GIT:
            p = repo / top
            if p.is_file():
                names.append(top)
            elif p.is_dir():
                names += [f.relative_to(repo).as_posix() for f in sorted(p.rglob("*"))
                          if not f.is_dir() and not CODE_SKIP_DIRS & set(f.relative_to(repo).parts)]
    files = []
    for name in sorted(set(names)):
        src = repo / name
        if src.is_symlink() or src.is_file():  # a tracked file deleted in the tree is gone
            if CODE_SKIP_DIRS & set(Path(name).parts):
                continue
            _copy_file(src, dest / name)
            files.append(name)
    info["files"] = len(files)
    return info


# -- integrity -----------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256sums(root: Path) -> str:
    """SHA256SUMS of every regular file under `root` (symlinks not followed), in the
    format `sha256sum -c` reads (a name with a newline or backslash escaped as it
    escapes them)."""
    lines = []
    for f in sorted(root.rglob("*")):
        if f.is_symlink() or not f.is_file() or f == root / "SHA256SUMS":
            continue
        name = "./" + f.relative_to(root).as_posix()
        if "\\" in name or "\n" in name:
            lines.append("\\" + _sha256(f) + "  " + name.replace("\\", "\\\\").replace("\n", "\\n"))
        else:
            lines.append(_sha256(f) + "  " + name)
    return "\n".join(lines) + "\n"


# -- README --------------------------------------------------------------------------

def readme(manifest: dict) -> str:
    exp, code = manifest["experiment"], manifest["code"]
    res = f"results/{exp}"
    if code.get("commit"):
        code_line = (f"the workflow at commit `{code['commit']}` ({code.get('branch')}), "
                     + ("**with uncommitted changes**: `code.diff` is `git diff HEAD` and "
                        f"{len(code['untracked'])} untracked file(s) are listed in MANIFEST.json; "
                        "code/ holds the files as they ran"
                        if code["dirty"] else "a clean tree: code/ equals `git archive` of that commit"))
    else:
        code_line = code.get("no_git", "not from a git checkout")
    pcaps = ("included" if manifest["pcaps"]["included"] else
             "none were kept (keep_pcap=false)" if not manifest["pcaps"]["left_out"] else
             f"left out ({len(manifest['pcaps']['left_out'])} file(s), listed with their sizes in "
             "MANIFEST.json; `archive_pcaps=true` puts them in)")
    envs = "\n".join(f"  - `environment/{name}`: {what}" for name, what in manifest["environment"].items())
    return f"""# xdplab experiment `{exp}`, archived {manifest['created_utc']}

{manifest['trial_count']} trial(s) of the configuration in `{res}/config.yaml`.

## Check and rebuild

    sha256sum -c SHA256SUMS          # every file as archived
    ./reaggregate                    # python3 with pandas only; no testbed needed

`./reaggregate` rebuilds `summary.csv`, `summary.md`, `sources.csv`, `ifaces.csv`,
`points.csv`, `points.md` and `points.tex` from the trials' `trial.json` records with
the archived code (`code/workflow/xdplab`: report.write_summary, breakdown.write_breakdown,
stats.write_points, the functions the aggregate rule calls), writes them to
`reaggregated/` (or `--out DIR`) and compares each with the archived one byte for
byte; it exits 0 only when all are identical.  The tables were written with pandas
{manifest.get('pandas')}; another pandas may format a number differently (it says so).

## What is where

- `{res}/trials/<trial>/`: each trial's raw outputs as the workflow wrote them:
  `trial.json` (settings, summary row, per-source and per-interface rows, identities,
  the step records), the step records (`arm.json`, `generator.json`, `capture.json`, ...),
  per-trial series and features where the workflow writes them, and the logs.
  Captures: {pcaps}.
- `{res}/`: the tables (`summary.csv`/`.md`/`.html`, `sources.csv`, `ifaces.csv`,
  `points.csv`/`.md`/`.tex`, ...), the figures (`*.svg`, `*.png`), the configuration as
  run (`config.yaml`: every key, defaults filled in; `snakemake --configfile` takes it),
  and the logs of the experiment's rules (`logs/`).
- `results/build/`: the collector's build records (source sha256, program tag,
  instruction count, BCC and kernel versions).
- `code/`: {code_line}.
- `environment/`: one manifest per host, collected when the archive was made:
{envs}
  An entry with `"error"` says why that host could not be asked (the embedded
  testbed is down after a run unless `keep_testbed=true`, or an agent without
  `GET /environment`); the trials' own `trial.json` keep what each step recorded
  about the hosts (`testbed`, `arm`, `generators`, `agent`).
- `{res}/preflight.json`: the pre-flight check of the hosts before the run's first
  trial (docs/preflight.md): {manifest.get('preflight') or 'not recorded'}.
- `MANIFEST.json`: the trials in the order the aggregate rule read them (the tables
  depend on it), the settings, the captures left out, the code's commit and status.
- `SHA256SUMS`: sha256 of every other file; `README.md`: this file.
"""


def preflight_summary(results_dir: str) -> str | None:
    """One line on the experiment's pre-flight record (preflight.json, xdplab.preflight):
    its verdict, when, what it said of the clocks; None when there is none."""
    try:
        record = json.loads((Path(results_dir) / "preflight.json").read_text())
    except (OSError, ValueError):
        return None
    clock = record.get("clock") or {}
    problems = record.get("problems") or []
    return (f"{record.get('verdict')} at {record.get('checked')}, {len(problems)} problem(s), "
            f"{len(record.get('reports') or [])} report(s); latency: {clock.get('latency')}")


# -- the whole -----------------------------------------------------------------------

def build(out: str, *, experiment: str, results_dir: str, trial_paths, settings: dict,
          repo: str, pcaps: bool = False, environment: dict | None = None,
          skip=(), log=print, now: float | None = None) -> dict:
    """Write the archive `out` (a .tar.gz, written under a temporary name and renamed).
    Paths (trial_paths, results_dir, skip) are relative to the current directory, the
    workflow's working directory.  Returns the manifest."""
    out = Path(out)
    name = out.name[: -len(".tar.gz")] if out.name.endswith(".tar.gz") else out.stem
    staging = out.parent / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    root = staging / name
    try:
        root.mkdir(parents=True)
        trials, left_out = copy_trials(trial_paths, root, pcaps)
        log(f"{len(trials)} trial(s) copied" + (f", {len(left_out)} capture(s) left out" if left_out else ""))
        experiment_files = copy_experiment(results_dir, root, skip=skip)
        builds = sorted(Path("results/build").glob("*/*.json")) if Path("results/build").is_dir() else []
        for f in builds:
            _copy_file(f, root / f)
        code = copy_code(Path(repo), root / "code")
        diff = code.pop("diff")
        if diff:
            (root / "code.diff").write_bytes(diff)
        log(f"code: {code['files']} file(s), commit {code.get('commit')}, "
            + ("dirty" if code.get("dirty") else "clean" if code.get("commit") else "no git"))
        env_notes = {}
        for fname, entry in (environment or {}).items():
            path = root / "environment" / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(entry, indent=1, sort_keys=False) + "\n")
            env_notes[fname] = ("could not be collected: " + entry["error"] if "error" in entry
                                else f"{entry.get('role', 'host')}, collected {entry.get('collected_utc')}")
        controller = (environment or {}).get("controller.json", {})
        manifest = {
            "format": FORMAT,
            "experiment": experiment,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "trial_count": len(trials),
            "trials": trials,
            "settings": settings,
            "experiment_files": experiment_files,
            "build_records": [f.as_posix() for f in builds],
            "pcaps": {"included": bool(pcaps), "left_out": left_out},
            "code": code,
            "environment": env_notes,
            "preflight": preflight_summary(results_dir),
            "pandas": controller.get("pandas"),
        }
        (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
        (root / "README.md").write_text(readme(manifest))
        shutil.copy2(REAGGREGATE, root / "reaggregate")
        os.chmod(root / "reaggregate", 0o755)
        (root / "SHA256SUMS").write_text(sha256sums(root))
        tmp = out.with_name(f".{out.name}.tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(root, arcname=name, filter=_owner_free)
        tmp.replace(out)
        log(f"wrote {out} ({out.stat().st_size} bytes)")
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _owner_free(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Members owned by nobody in particular: unpacking as any user gives that user's files."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
