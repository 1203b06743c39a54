"""Reach the source host over SSH with fabric: check it, upload the generator, run it.

The generator (generator.py beside this file) needs only the Python standard
library on the source host.  Every argument that goes into the remote command
line is quoted with shlex.quote; no configuration value reaches a shell as is.
"""

from __future__ import annotations

import json
import shlex
import socket
from pathlib import Path

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

GENERATOR = Path(__file__).resolve().parent / "generator.py"


class SourceError(RuntimeError):
    pass


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


def check(source: dict, timeout_s: float = 5.0) -> dict:
    """Log in and ask the source host what it is; raise SourceError naming the host on failure."""
    try:
        with connect(source, timeout_s) as c:
            py = source.get("python", "python3")
            r = c.run(f"{shlex.quote(py)} -c 'import platform,sys; print(platform.node()); "
                      f"print(sys.version.split()[0])'", hide=True, warn=True, timeout=timeout_s * 2)
    except paramiko.AuthenticationException as e:
        raise SourceError(f"{where(source)}: SSH login refused with key {source['key_file']} ({e})") from e
    except paramiko.BadHostKeyException as e:
        raise SourceError(f"{where(source)}: host key does not match {source.get('known_hosts')}") from e
    except paramiko.SSHException as e:
        raise SourceError(f"{where(source)}: SSH failed ({e})") from e
    except (socket.timeout, TimeoutError) as e:
        raise SourceError(f"{where(source)}: no SSH answer within {timeout_s:g} s") from e
    except OSError as e:
        raise SourceError(f"{where(source)}: cannot connect over SSH ({e})") from e
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
    return " ".join(shlex.quote(p) for p in parts)


def run_generator(source: dict, args: dict, *, timeout_s: float, err_stream) -> dict:
    """Upload generator.py, run it with `args`, return its JSON report.

    `err_stream` receives the generator's progress lines as they come.
    """
    remote = f"/tmp/xdplab-generator-{args['run_id']}.py"
    py = source.get("python", "python3")
    try:
        with connect(source) as c:
            c.put(str(GENERATOR), remote)
            try:
                r = c.run(generator_command(py, remote, args), hide="stdout", warn=True,
                          err_stream=err_stream, timeout=timeout_s)
            finally:
                c.run(f"rm -f {shlex.quote(remote)}", hide=True, warn=True, timeout=10)
    except CommandTimedOut as e:
        raise SourceError(f"{where(source)}: the generator did not finish within {timeout_s:g} s") from e
    except (paramiko.SSHException, OSError, socket.timeout) as e:
        raise SourceError(f"{where(source)}: SSH session failed while the generator ran ({e})") from e
    if r.failed:
        raise SourceError(f"{where(source)}: generator exited with {r.exited}: {r.stderr.strip()[-500:]}")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise SourceError(f"{where(source)}: generator printed no JSON report: {r.stdout[-300:]!r}") from e
