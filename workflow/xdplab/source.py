"""Reach the source host over SSH with fabric: check it, upload the generator, run it,
and stop it again when a trial fails or is interrupted.

What runs on the source host is the package sourcehost/ beside this file, built
into one file, dist/xdplab-source.pyz (`make source`; rebuilt here when older
than its sources), which needs only the Python standard library there.  It is
uploaded over the SSH command channel (`cat` reading the bytes on its stdin), not
SFTP: an SSH login and python3 are all a source needs.  Every remote command
line is built by `remote_cmd` (or `generator_command`), which quotes each
argument with shlex.quote; no configuration value reaches a shell as is.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
SOURCE_PYZ = REPO / "dist" / "xdplab-source.pyz"
SOURCE_PACKAGE = Path(__file__).resolve().parent / "sourcehost"
MAKE_SOURCE_TIMEOUT_S = 120.0
# The generator runs on the source host from /tmp/xdplab-generator-<run_id>.pyz; cleanup
# finds a trial's generator, or every one of ours, by this name.  Embedded instance k >= 1
# has its own, /tmp/xdplab<k>-generator- (remote_prefix), so a check stops only its own.
REMOTE_PREFIX = "/tmp/xdplab-generator-"
# Cleanup after a failure: a fresh connection, short timeouts, best effort.
CLEANUP_TIMEOUT_S = 5.0


class SourceError(RuntimeError):
    pass


def _ssh():
    """paramiko, fabric's Connection and invoke's CommandTimedOut, imported when SSH is
    first used: they take ~80 ms to import, which steps that never reach a source host
    (arm, verify, gather) do without."""
    import paramiko
    from fabric import Connection
    from invoke.exceptions import CommandTimedOut

    return paramiko, Connection, CommandTimedOut


def remote_cmd(*argv) -> str:
    """A remote command line from an argv list: every part quoted with shlex.quote."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def remote_prefix(source: dict | None = None) -> str:
    """Where a source's generators run from, up to the run id (its generator_prefix)."""
    return (source or {}).get("generator_prefix") or REMOTE_PREFIX


def remote_generator_path(run_id: int, source: dict | None = None) -> str:
    return f"{remote_prefix(source)}{int(run_id)}.pyz"


def source_pyz() -> Path:
    """dist/xdplab-source.pyz, built with `make source` first when it is missing or older
    than a module of sourcehost/, so that a source never runs a stale generator."""
    newest = max(p.stat().st_mtime for p in SOURCE_PACKAGE.glob("*.py"))
    if SOURCE_PYZ.is_file() and SOURCE_PYZ.stat().st_mtime >= newest:
        return SOURCE_PYZ
    try:
        r = subprocess.run(["make", "-C", str(REPO), "-s", "source"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=MAKE_SOURCE_TIMEOUT_S)
        said = (r.stderr or r.stdout).strip()[-1000:]
    except (OSError, subprocess.SubprocessError) as e:
        said = str(e)
    if not SOURCE_PYZ.is_file() or SOURCE_PYZ.stat().st_mtime < newest:
        raise SourceError(f"`make -C {REPO} source` did not build {SOURCE_PYZ}: {said}")
    return SOURCE_PYZ


def _pattern(path_prefix: str) -> str:
    """A `pgrep -f` pattern for a path that does not match its own command line: the
    first character as a one-character class ("[/]tmp/...")."""
    escaped = re.escape(path_prefix)
    return f"[{escaped[0]}]{escaped[1:]}"


def connect(source: dict, timeout_s: float = 5.0):
    """A fabric Connection, open, to a source host described by `source`.

    With `key_file`, only that key is offered (no agent, no default keys), so a wrong
    key is named as such; without it, ~/.ssh/config, the SSH agent and the default
    keys apply as for `ssh`.  With `known_hosts`, only the host key recorded there is
    accepted; without it, the user's known_hosts (fabric's default policy)."""
    paramiko, Connection, CommandTimedOut = _ssh()
    client_kwargs = {"banner_timeout": timeout_s, "auth_timeout": timeout_s}
    if source.get("key_file"):
        client_kwargs.update(key_filename=source["key_file"], look_for_keys=False, allow_agent=False)
    conn = Connection(source["host"], user=source.get("user"),
                      port=int(source["port"]) if source.get("port") else None,
                      connect_timeout=timeout_s, connect_kwargs=client_kwargs)
    known_hosts = source.get("known_hosts")
    if known_hosts:
        conn.client.load_host_keys(known_hosts)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    # SSH's small messages (key exchange, login, channel open, exec, exit status) otherwise
    # wait on Nagle's algorithm against the peer's delayed ACK: connecting took 63 ms
    # instead of 20, and each channel opened 40 ms more (measured here).  The socket is
    # ours unless ~/.ssh/config routes the host through a gateway (host and port are as
    # ~/.ssh/config resolves them).
    if conn.gateway is None:
        sock = socket.create_connection((conn.host, conn.port), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.connect_kwargs["sock"] = sock
    conn.open()
    return conn


def where(source: dict) -> str:
    user = f"{source['user']}@" if source.get("user") else ""
    port = f":{source['port']}" if source.get("port") else ""
    name = f" ({source['name']})" if source.get("name") else ""
    return f"source host {user}{source['host']}{port}{name}"


def _ssh_failure(source: dict, e: BaseException, timeout_s: float) -> SourceError:
    """One sentence naming the host and what failed, for an exception of connecting."""
    paramiko, Connection, CommandTimedOut = _ssh()
    if isinstance(e, paramiko.AuthenticationException):
        key = f"with key {source['key_file']}" if source.get("key_file") else "with the default keys"
        return SourceError(f"{where(source)}: SSH login refused {key} ({e})")
    if isinstance(e, paramiko.BadHostKeyException):
        return SourceError(f"{where(source)}: host key does not match {source.get('known_hosts')}")
    if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e):
        return SourceError(f"{where(source)}: its host key is not in {source.get('known_hosts')}")
    if isinstance(e, paramiko.SSHException):
        return SourceError(f"{where(source)}: SSH failed ({e})")
    if isinstance(e, (socket.timeout, TimeoutError)):
        return SourceError(f"{where(source)}: no SSH answer within {timeout_s:g} s")
    return SourceError(f"{where(source)}: cannot connect over SSH ({e})")


# Writes the bytes on its stdin to a file only its owner can read: the upload, over the
# SSH command channel (SFTP is a subsystem some hardened or minimal sshd do not offer).
_UPLOAD = 'umask 077 && cat > "$1"'
# Writes the pyz on its stdin to a fresh file, runs it with the given python and
# arguments, removes it: a program of the source host in one SSH command.
_RUN_FROM_STDIN = ('py=$1; shift; f=$(mktemp /tmp/xdplab-source.XXXXXX) || exit 125; '
                   'umask 077; cat > "$f" || { rm -f "$f"; exit 125; }; '
                   '"$py" "$f" "$@"; rc=$?; rm -f "$f"; exit $rc')


class CommandTimeout(Exception):
    pass


class _Ran:
    """What a command run by `exec_with_input` did."""

    def __init__(self, exited: int, stdout: str, stderr: str):
        self.exited, self.stdout, self.stderr = exited, stdout, stderr

    @property
    def failed(self) -> bool:
        return self.exited != 0


def _read_to_eof(recv, deadline: float) -> bytes:
    chunks = []
    while True:
        if time.monotonic() > deadline:
            raise CommandTimeout()
        try:
            data = recv(65536)
        except socket.timeout:
            continue
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def exec_with_input(conn, command: str, data: bytes, timeout_s: float) -> _Ran:
    """Run `command` over an SSH exec channel of an open fabric Connection with `data` on
    its stdin (then end of file); its exit status and output.  Raises CommandTimeout
    when it has not ended within timeout_s."""
    deadline = time.monotonic() + timeout_s
    chan = conn.client.get_transport().open_session(timeout=timeout_s)
    try:
        chan.settimeout(min(timeout_s, 1.0))
        chan.exec_command(command)
        chan.sendall(data)
        chan.shutdown_write()
        out = _read_to_eof(chan.recv, deadline)
        err = _read_to_eof(chan.recv_stderr, deadline)
        if not chan.status_event.wait(max(deadline - time.monotonic(), 0.0)):
            raise CommandTimeout()
        return _Ran(chan.recv_exit_status(), out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    finally:
        chan.close()


def upload(conn, data: bytes, remote_path: str, timeout_s: float = 10.0) -> None:
    """Write `data` to remote_path on the host of an open connection, over the command
    channel.  Raises SourceError when the file cannot be written there."""
    r = exec_with_input(conn, remote_cmd("sh", "-c", _UPLOAD, "sh", remote_path), data, timeout_s)
    if r.failed:
        raise SourceError(f"cannot write {remote_path} (exit {r.exited}): {r.stderr.strip()[:300]}")


def run_program(conn, python: str, argv: list, timeout_s: float) -> _Ran:
    """`python xdplab-source.pyz ARGV...` on the host of an open connection, the pyz
    sent on the command's stdin, written to a temporary file and removed after: one
    SSH command (sourcehost/__main__.py for the programs)."""
    command = remote_cmd("sh", "-c", _RUN_FROM_STDIN, "sh", python, *argv)
    return exec_with_input(conn, command, source_pyz().read_bytes(), timeout_s)


def preflight(source: dict, dut_address: str | None, timeout_s: float = 5.0) -> dict:
    """One SSH command on the source host (sourcehost/preflight.py): its facts (hostname,
    python, system, the test interface's IPv4 addresses and MAC), generators of ours
    stopped, a ping to `dut_address` from the test interface.  Raises SourceError
    naming the host when it cannot be reached or its python does not run."""
    paramiko, Connection, CommandTimedOut = _ssh()
    py = source.get("python") or "python3"
    argv = ["preflight", source.get("iface") or "lo", dut_address or "", remote_prefix(source),
            source.get("address") or "auto"]
    try:
        with connect(source, timeout_s) as c:
            r = run_program(c, py, argv, timeout_s * 3)
    except CommandTimeout as e:
        raise SourceError(f"{where(source)}: '{py}' did not answer within {timeout_s * 3:g} s") from e
    except (paramiko.SSHException, OSError) as e:
        raise _ssh_failure(source, e, timeout_s) from e
    if r.failed:
        raise SourceError(f"{where(source)}: '{py}' does not run there (exit {r.exited}): "
                          f"{r.stderr.strip()[:300]}")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise SourceError(f"{where(source)}: '{py}' printed nothing readable: {r.stdout[-200:]!r}") from e


def resolve_address(source: dict, found: dict) -> str:
    """The IPv4 address the source sends from: its configured one, which must be on its
    test interface, or (auto) the interface's first IPv4 address."""
    iface, addrs = source.get("iface"), [a.split("/")[0] for a in found.get("ipv4", [])]
    if not found.get("exists"):
        raise SourceError(f"{where(source)}: has no interface {iface!r}")
    if source.get("address", "auto") == "auto":
        if not addrs:
            raise SourceError(f"{where(source)}: interface {iface} has no IPv4 address (address: auto)")
        return addrs[0]
    if source["address"] not in addrs:
        raise SourceError(f"{where(source)}: address {source['address']} is not on interface {iface} "
                          f"(it has {', '.join(addrs) or 'no IPv4 address'})")
    return source["address"]


def ssh_answers(source: dict, timeout_s: float = 5.0) -> None:
    """Whether the source host's SSH server accepts a connection and greets ("SSH-..."),
    without logging in: a check of a few milliseconds.  Raises SourceError naming the host."""
    port = int(source.get("port") or 22)
    try:
        with socket.create_connection((source["host"], port), timeout=timeout_s) as s:
            greeting = s.recv(256)
            if greeting.startswith(b"SSH-"):
                s.sendall(b"SSH-2.0-xdplab-check\r\n")  # then goodbye, before any key exchange
    except (socket.timeout, TimeoutError) as e:
        raise SourceError(f"{where(source)}: no SSH answer within {timeout_s:g} s") from e
    except OSError as e:
        raise SourceError(f"{where(source)}: cannot connect over SSH ({e})") from e
    if not greeting.startswith(b"SSH-"):
        raise SourceError(f"{where(source)}: port {port} does not answer as an SSH server "
                          f"({greeting[:40]!r})")


# Runs the generator, then removes its file, in one SSH command (a second command to
# remove it costs a channel and a login shell: ~0.1 s a trial); the generator's exit
# status is the command's.
_RUN_THEN_REMOVE = 'f=$1; shift; "$@"; rc=$?; rm -f "$f"; exit $rc'


# The same, for a generator uploaded once for several trials (xdplab.launcher): its run's path
# is a link to it, made by the command itself, so that stopping and cleaning up by run id
# (stop_generators) work as for a file of its own.
_LINK_RUN_THEN_REMOVE = 'b=$1; f=$2; shift 2; ln -sf "$b" "$f" || exit 125; "$@"; rc=$?; rm -f "$f"; exit $rc'


def generator_command(python: str, remote_path: str, args: dict, uploaded: str | None = None) -> str:
    """The remote command line: the generator (`python xdplab-source.pyz send`) with its
    options, then its file removed; every part quoted.  `uploaded`: the generator's file
    already on the host (xdplab.launcher), linked at remote_path for this run."""
    parts = [python, remote_path, "send"]
    for key, value in args.items():
        if value is None:
            continue
        parts += [f"--{key.replace('_', '-')}", str(value)]
    if uploaded:
        return remote_cmd("sh", "-c", _LINK_RUN_THEN_REMOVE, "sh", uploaded, remote_path, *parts)
    return remote_cmd("sh", "-c", _RUN_THEN_REMOVE, "sh", remote_path, *parts)


def stop_generators(source: dict, run_id: int | None = None,
                    timeout_s: float = CLEANUP_TIMEOUT_S) -> list[str]:
    """Stop the generator of run `run_id` (or every xdplab generator) on the source host
    over a fresh, short-timeout SSH connection and remove its file; return what was
    stopped ("<pid> <command line>").  Raises SourceError if the host cannot be reached."""
    paramiko, Connection, CommandTimedOut = _ssh()
    path = remote_generator_path(run_id, source) if run_id is not None else remote_prefix(source)
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
            # the generator's file, and the trafgen configurations it writes beside it
            if run_id is not None:
                c.run(remote_cmd("sh", "-c", 'rm -f "$1" "$1".trafgen-*.cfg', "sh", path), hide=True, warn=True,
                      timeout=timeout_s)
            else:
                c.run(remote_cmd("sh", "-c", 'rm -f "$1"*.py "$1"*.pyz "$1"*.py.trafgen-*.cfg "$1"*.pyz.trafgen-*.cfg',
                             "sh", remote_prefix(source)),
                      hide=True, warn=True, timeout=timeout_s)
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
    if code == 128 + signal.SIGKILL:
        # the shell that ran it says so (generator_command); SIGKILL cannot be caught
        return f"the generator was killed by a signal (SIGKILL, exit {code})"
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"the generator was stopped by {signal.Signals(code - 128).name} (exit {code})"
    return f"the generator exited with {code}"


class _Prefixed:
    """A stream that puts the source's name before each line (several sources at once)."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix = stream, prefix

    def write(self, text: str):
        for line in text.splitlines():
            if line.strip():
                self.stream.write(f"{self.prefix}{line}\n")

    def flush(self):
        self.stream.flush()


def run_generators(jobs: list, *, timeout_s: float, err_stream, poll_s: float = 0.01,
                   launcher=None) -> list[dict]:
    """Run the generator on every source at once and return their JSON reports in order.

    `jobs` is a list of (source, args); args are the generator's options (`xdplab-source.pyz
    send --help`), e.g. {"dst", "port", "pps", "size", "duration", "threads", "run_id", "src",
    "iface", "pattern", "warmup_s", "warmup_run_id"}.  `"backend": "trafgen"` (with
    "iface", "dst_mac", threads 1, pattern constant; root on the source) has the same
    uploaded generator hand the sending to the source's trafgen: the same launch, stop
    and cleanup, and the same report (sourcehost/trafgen.py).  Every source is connected and given the
    generator first (over the command channel: no SFTP), then all are started back to back, so they begin within
    milliseconds of each other.  The wait is this function's own loop (not the SSH
    library's, which would wait for the remote command before letting an exception
    through): a signal raised in it (Ctrl-C, SIGTERM: steps.Interrupted) stops at
    once.  On any failure every SSH session is closed (a generator stops within ~50 ms
    when its output loses its reader) and each generator is stopped over a fresh
    connection before the exception goes on.  `err_stream` gets the progress lines,
    prefixed with the source's name when there are several.  `launcher`: connections kept
    open across the trials of a sequence, with the generator uploaded once
    (xdplab.launcher.Launcher)."""
    _ssh()   # imported before the try: what goes wrong in it is named with their exceptions
    conns, promises, uploaded = [], [], []
    current = jobs[0][0]   # the source being talked to, for an error message
    try:
        pyz = source_pyz().read_bytes()
        for src, args in jobs:
            current = src
            if launcher is not None:
                conn, path = launcher.session(src, pyz)
                conns.append(conn)
                uploaded.append(path)
                continue
            conns.append(connect(src))
            uploaded.append(None)
            upload(conns[-1], pyz, remote_generator_path(args["run_id"], src))
        for (src, args), c, up in zip(jobs, conns, uploaded):
            current = src
            stream = _Prefixed(err_stream, f"{src.get('name', src['host'])}: ") if len(jobs) > 1 \
                else err_stream
            promises.append(c.run(generator_command(src.get("python") or "python3",
                                                    remote_generator_path(args["run_id"], src), args, up),
                                  hide="stdout", warn=True, err_stream=stream, timeout=timeout_s,
                                  asynchronous=True))
        current = None
        while not all(p.runner.process_is_finished or p.runner.has_dead_threads for p in promises):
            time.sleep(poll_s)
        results = []
        for (src, _), p, c in zip(jobs, promises, conns):
            current = src
            r = p.join()
            results.append((r, bool(c.transport and c.transport.is_active())))
    except BaseException as e:
        # stop() also cancels each command's timeout timer, a non-daemon thread that would
        # keep this process alive until the timeout expired.
        for p in promises:
            with contextlib.suppress(Exception):
                p.runner.stop()
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
        if launcher is not None:
            launcher.drop()
        _stop_after_failure(jobs, err_stream)
        failure = _run_failure(e, jobs, current, bool(promises), timeout_s)
        if failure is None:
            raise
        raise failure from e
    if launcher is None:
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
    return _reports(jobs, results, err_stream)


def _run_failure(e: BaseException, jobs: list, current, started: bool, timeout_s: float):
    """The SourceError that says what went wrong while running the generators (`current`:
    the source being talked to, None while waiting for all); None for what is not the
    sources' (an interruption, a bug), which goes on as it is."""
    paramiko, _, CommandTimedOut = _ssh()
    who = where(current) if current else ", ".join(where(src) for src, _ in jobs)
    if isinstance(e, CommandTimedOut):
        return SourceError(f"{who}: the generator did not finish within {timeout_s:g} s")
    if isinstance(e, CommandTimeout):
        return SourceError(f"{who}: uploading the generator took more than 10 s")
    if isinstance(e, SourceError):
        return SourceError(f"{who}: {e}")
    if isinstance(e, (paramiko.SSHException, OSError)):
        if current is not None and not started:
            return _ssh_failure(current, e, 5.0)
        return SourceError(f"{who}: SSH session failed while the generator ran ({e})")
    return None


def _reports(jobs: list, results: list, err_stream) -> list[dict]:
    """Each generator's JSON report, in order; a SourceError naming every source whose
    generator failed or printed no report (after stopping what is left of them)."""
    reports, problems = [], []
    for (src, _), (r, alive) in zip(jobs, results):
        if r.failed:
            # The generator's own last words, without its progress lines.
            said = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("progress ")]
            last = f": {' / '.join(said[-3:])[-500:]}" if said else ""
            problems.append(f"{where(src)}: {_exit_reason(r.exited, alive)}{last}")
            continue
        try:
            reports.append(json.loads(r.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            problems.append(f"{where(src)}: generator printed no JSON report: {r.stdout[-300:]!r}")
    if problems:
        _stop_after_failure(jobs, err_stream)
        raise SourceError("; ".join(problems))
    return reports


def _stop_after_failure(jobs: list, err_stream) -> None:
    """Best effort, bounded, all sources at once: leave no generator of these runs behind."""
    def stop(src, run_id):
        try:
            stopped = stop_generators(src, run_id)
            if stopped:
                err_stream.write(f"stopped the generator left on the {where(src)}: {'; '.join(stopped)}\n")
        except SourceError as e:
            err_stream.write(f"could not stop the generator: {e}\n")

    threads = [threading.Thread(target=stop, args=(src, args["run_id"]), daemon=True)
               for src, args in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLEANUP_TIMEOUT_S * 4)
