"""Reach the source host over SSH with fabric: check it, upload the generator, run it,
and stop it again when a trial fails or is interrupted.

The generator (generator.py beside this file) needs only the Python standard
library on the source host.  Every remote command line is built by
`remote_cmd` (or `generator_command`), which quotes each argument with
shlex.quote; no configuration value reaches a shell as is.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
from pathlib import Path

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

GENERATOR = Path(__file__).resolve().parent / "generator.py"
# The generator runs on the source host from /tmp/xdplab-generator-<run_id>.py;
# cleanup finds a trial's generator, or every one of ours, by this name.
REMOTE_PREFIX = "/tmp/xdplab-generator-"
# Cleanup after a failure: a fresh connection, short timeouts, best effort.
CLEANUP_TIMEOUT_S = 5.0


class SourceError(RuntimeError):
    pass


def remote_cmd(*argv) -> str:
    """A remote command line from an argv list: every part quoted with shlex.quote."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def remote_generator_path(run_id: int) -> str:
    return f"{REMOTE_PREFIX}{int(run_id)}.py"


def _pattern(path_prefix: str) -> str:
    """A `pgrep -f` pattern for a path that does not match its own command line: the
    first character as a one-character class ("[/]tmp/...")."""
    escaped = re.escape(path_prefix)
    return f"[{escaped[0]}]{escaped[1:]}"


def connect(source: dict, timeout_s: float = 5.0) -> Connection:
    """A fabric Connection to the source host described by `source` (testbed description)."""
    client_kwargs = {
        "key_filename": source["key_file"],
        "look_for_keys": False,
        "allow_agent": False,
        "banner_timeout": timeout_s,
        "auth_timeout": timeout_s,
    }
    conn = Connection(source["host"], user=source.get("user", "root"), port=int(source.get("port", 22)),
                      connect_timeout=timeout_s, connect_kwargs=client_kwargs)
    known_hosts = source.get("known_hosts")
    if known_hosts:
        # The embedded testbed generated the host key: accept only that one.
        conn.client.load_host_keys(known_hosts)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def where(source: dict) -> str:
    return f"source host {source.get('user', 'root')}@{source['host']}:{source.get('port', 22)}"


def _ssh_failure(source: dict, e: BaseException, timeout_s: float) -> SourceError:
    """One sentence naming the host and what failed, for an exception of connecting."""
    if isinstance(e, paramiko.AuthenticationException):
        return SourceError(f"{where(source)}: SSH login refused with key {source['key_file']} ({e})")
    if isinstance(e, paramiko.BadHostKeyException):
        return SourceError(f"{where(source)}: host key does not match {source.get('known_hosts')}")
    if isinstance(e, paramiko.SSHException):
        return SourceError(f"{where(source)}: SSH failed ({e})")
    if isinstance(e, (socket.timeout, TimeoutError)):
        return SourceError(f"{where(source)}: no SSH answer within {timeout_s:g} s")
    return SourceError(f"{where(source)}: cannot connect over SSH ({e})")


def check(source: dict, timeout_s: float = 5.0) -> dict:
    """Log in and ask the source host what it is; raise SourceError naming the host on failure."""
    py = source.get("python", "python3")
    try:
        with connect(source, timeout_s) as c:
            r = c.run(remote_cmd(py, "-c", "import platform,sys; print(platform.node()); "
                                           "print(sys.version.split()[0])"),
                      hide=True, warn=True, timeout=timeout_s * 2)
    except CommandTimedOut as e:
        raise SourceError(f"{where(source)}: '{py}' did not answer within {timeout_s * 2:g} s") from e
    except (paramiko.SSHException, OSError) as e:
        raise _ssh_failure(source, e, timeout_s) from e
    if r.failed:
        raise SourceError(f"{where(source)}: '{py}' does not run there (exit {r.exited}): "
                          f"{r.stderr.strip()[:300]}")
    hostname, version = (r.stdout.split() + ["?", "?"])[:2]
    return {"hostname": hostname, "python": version}


def generator_command(python: str, remote_path: str, args: dict) -> str:
    """The remote command line; every part quoted."""
    parts = [python, remote_path]
    for key, value in args.items():
        if value is None:
            continue
        parts += [f"--{key.replace('_', '-')}", str(value)]
    return remote_cmd(*parts)


def stop_generators(source: dict, run_id: int | None = None,
                    timeout_s: float = CLEANUP_TIMEOUT_S) -> list[str]:
    """Stop the generator of run `run_id` (or every xdplab generator) on the source host
    over a fresh, short-timeout SSH connection and remove its file; return what was
    stopped ("<pid> <command line>").  Raises SourceError if the host cannot be reached."""
    path = remote_generator_path(run_id) if run_id is not None else REMOTE_PREFIX
    pattern = _pattern(path)
    try:
        with connect(source, timeout_s) as c:
            found = c.run(remote_cmd("pgrep", "-af", pattern), hide=True, warn=True, timeout=timeout_s)
            procs = [line for line in found.stdout.splitlines() if line.strip()]
            if procs:
                c.run(remote_cmd("pkill", "-TERM", "-f", pattern), hide=True, warn=True,
                      timeout=timeout_s)
                # SIGTERM stops the generator within a packet; whatever is left gets SIGKILL.
                c.run(remote_cmd("sh", "-c", 'for i in 1 2 3 4 5 6 7 8 9 10; do '
                                             'pgrep -f "$1" >/dev/null || exit 0; sleep 0.2; done; '
                                             'pkill -KILL -f "$1"', "sh", pattern),
                      hide=True, warn=True, timeout=timeout_s)
            if run_id is not None:
                c.run(remote_cmd("rm", "-f", path), hide=True, warn=True, timeout=timeout_s)
            else:
                c.run(remote_cmd("sh", "-c", 'rm -f "$1"*.py', "sh", REMOTE_PREFIX), hide=True,
                      warn=True, timeout=timeout_s)
    except CommandTimedOut as e:
        raise SourceError(f"{where(source)}: stopping the generator took more than {timeout_s:g} s") from e
    except (paramiko.SSHException, OSError) as e:
        raise _ssh_failure(source, e, timeout_s) from e
    return procs


def _exit_reason(code, session_alive: bool = True) -> str:
    if code is None or code < 0:
        if not session_alive:
            return "the SSH session broke while the generator ran"
        return "the generator ended without an exit status (killed by a signal)"
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"the generator was stopped by {signal.Signals(code - 128).name} (exit {code})"
    return f"the generator exited with {code}"


def run_generator(source: dict, args: dict, *, timeout_s: float, err_stream) -> dict:
    """Upload generator.py, run it with `args`, return its JSON report.

    `err_stream` receives the generator's progress lines as they come.  On any
    failure or interruption the generator is stopped over a fresh connection (the
    one it ran on may be what broke) before the exception goes on.
    """
    remote = remote_generator_path(args["run_id"])
    py = source.get("python", "python3")
    try:
        with connect(source) as c:
            c.put(str(GENERATOR), remote)
            r = c.run(generator_command(py, remote, args), hide="stdout", warn=True,
                      err_stream=err_stream, timeout=timeout_s)
            session_alive = bool(c.transport and c.transport.is_active())
            if not r.failed:
                c.run(remote_cmd("rm", "-f", remote), hide=True, warn=True, timeout=10)
    except BaseException as e:
        _stop_after_failure(source, args["run_id"], err_stream)
        if isinstance(e, CommandTimedOut):
            raise SourceError(f"{where(source)}: the generator did not finish within {timeout_s:g} s") from e
        if isinstance(e, (paramiko.SSHException, OSError)):
            raise SourceError(f"{where(source)}: SSH session failed while the generator ran ({e})") from e
        raise
    if r.failed:
        _stop_after_failure(source, args["run_id"], err_stream)
        # The generator's own last words, without its progress lines.
        said = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("progress ")]
        last = f": {' / '.join(said[-3:])[-500:]}" if said else ""
        raise SourceError(f"{where(source)}: {_exit_reason(r.exited, session_alive)}{last}")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise SourceError(f"{where(source)}: generator printed no JSON report: {r.stdout[-300:]!r}") from e


def _stop_after_failure(source: dict, run_id: int, err_stream) -> None:
    """Best effort, bounded: leave no generator of this run on the source host."""
    try:
        stopped = stop_generators(source, run_id)
        if stopped:
            err_stream.write(f"stopped the generator left on the {where(source)}: {'; '.join(stopped)}\n")
    except SourceError as e:
        err_stream.write(f"could not stop the generator: {e}\n")
