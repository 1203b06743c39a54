"""This machine, as the lab sees it: commands run as argv lists, `ip -j`,
and what /proc says about a process.  Every failure is a TestbedError that
names the command."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path


class TestbedError(RuntimeError):
    """A part of the testbed could not be set up; the message names it."""


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run argv (never a shell string); with check, its failure is a TestbedError."""
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        raise TestbedError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {msg}")
    return proc


def ip_json(argv: list[str]) -> list:
    """`ip -j <argv>` parsed; [] when it fails or prints nothing."""
    proc = run(["ip", "-j", *argv], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return json.loads(proc.stdout)


def proc_alive(pid: int) -> bool:
    """Whether pid runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message ("" if unreadable)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
