"""A lab's services and their supervision: an sshd per source host, the agent
on the DUT, started, waited for, checked and stopped.

Each source host's sshd has its own host key, client key, authorized_keys and
known_hosts line; the agent runs by its documented command with a token.  Every
process started gets a pid file; one is ours only while its command line says
so (a reused pid is never killed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..agent import TOKEN_HEADER
from .layout import LabLayout, SourceHost
from .net import mac
from .state import StateDir
from .system import TestbedError, cmdline, proc_alive, run, tail

REPO_ROOT = Path(__file__).resolve().parents[3]
SSH_PORT = 22
AGENT_PYZ = Path("dist") / "xdplab-agent.pyz"   # relative to the repository
TERM_WAIT_S = 5.0    # SIGTERM -> SIGKILL; the agent detaches XDP on SIGTERM
KILL_WAIT_S = 3.0
MAKE_AGENT_TIMEOUT_S = 300.0


# The source host's sshd runs every command through root's login shell, and bash reads
# ~/.bashrc when sshd runs it.  The machine's own ~/.bashrc (say, a `pyenv init` that
# forks ~100 processes: ~70 ms per SSH command, and the source's `python3` becoming a
# shim) belongs to the controller, not to a source host: in the source's mount
# namespace (`ip netns exec` gives it its own) it reads as empty.  Nothing changes
# outside that namespace; if the bind mount fails, sshd starts all the same.
_WITHOUT_DOTFILES = '[ -f "$1" ] && mount --bind /dev/null "$1" 2>/dev/null; shift; exec "$@"'


def _login_rc(user: str) -> str:
    """The ~/.bashrc of `user` (it need not exist)."""
    try:
        return str(Path(pwd.getpwnam(user).pw_dir) / ".bashrc")
    except KeyError:
        return "/nonexistent/.bashrc"


# --- the agent's command line ---------------------------------------------------------

def _has_make_target(repo_root: Path, target: str) -> bool:
    if not (repo_root / "Makefile").is_file() or shutil.which("make") is None:
        return False
    return run(["make", "-C", str(repo_root), "-n", target], check=False).returncode == 0


@contextlib.contextmanager
def _one_build_at_a_time(repo_root: Path):
    """Hold a lock on the repository's directory while `make agent` runs: two embedded
    testbeds brought up at once would otherwise build into the same dist/.agent-build
    and dist/xdplab-agent.pyz.tmp together.  The second one's make then finds the pyz
    up to date.  Without the lock (a directory that cannot be opened) make runs as before."""
    try:
        fd = os.open(repo_root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def agent_script(repo_root: Path, build: bool = False) -> Path:
    """The file the DUT agent is started from: dist/xdplab-agent.pyz.  With build, `make
    agent` runs first when the Makefile has it: it builds a missing pyz and rebuilds one
    older than the agent's sources (a no-op otherwise), so that a testbed never runs a
    stale agent."""
    pyz = repo_root / AGENT_PYZ
    if build and _has_make_target(repo_root, "agent"):
        with _one_build_at_a_time(repo_root):
            proc = subprocess.run(["make", "-C", str(repo_root), "agent"], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=MAKE_AGENT_TIMEOUT_S)
        if proc.returncode != 0 or not pyz.is_file():
            out = (proc.stderr or proc.stdout).strip()[-2000:]
            raise TestbedError(f"`make -C {repo_root} agent` did not build {pyz} "
                               f"(exit {proc.returncode}): {out}")
    return pyz


def agent_argv(script: Path, listen: str, token_file: Path, interfaces: list[str],
               state_dir: Path) -> list[str]:
    """The documented command (docs/lab.md, agent/API.md), run as root in the DUT.  The
    embedded testbed's DUT is a namespace of this machine, run by whoever runs the workflow:
    it loads the user's programs, which the controller uploads."""
    argv = ["/usr/bin/python3", str(script), "--listen", listen, "--token-file", str(token_file),
            "--allow-program-upload"]
    for iface in interfaces:
        argv += ["--interface", iface]
    return argv + ["--state-dir", str(state_dir)]


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _keypair(path: Path, comment: str) -> None:
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    run(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _sshd_config(src: SourceHost, state: StateDir, host_key: Path, authorized: Path) -> str:
    return "\n".join([
        f"# written by xdplab.testbed; sshd of source host {src.label} ({src.netns})",
        f"ListenAddress {src.mgmt_addr}",
        f"Port {SSH_PORT}",
        "AddressFamily inet",
        f"HostKey {host_key}",
        f"PidFile {state.source_path(src, 'sshd.pid')}",
        f"AuthorizedKeysFile {authorized}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        # fabric's put() uploads the generator over SFTP
        "Subsystem sftp internal-sftp",
        "",
    ])


class Services:
    """The sshd of each source host and the DUT's agent of one lab: its processes
    are named by part ("sshd", "sshd-<label>", "agent") in pid files and messages."""

    def __init__(self, layout: LabLayout, state: StateDir, agent_port: int, ready_timeout_s: float):
        self.layout, self.state = layout, state
        self.agent_port, self.ready_timeout_s = agent_port, ready_timeout_s
        self._children: list[subprocess.Popen] = []
        # Talk to the agent directly, whatever http_proxy says.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def agent_url(self) -> str:
        return f"http://{self.layout.dut_mgmt_addr}:{self.agent_port}"

    # --- inspection -----------------------------------------------------------
    def cmd_matches(self, part: str, pid: int) -> bool:
        """Whether pid still runs our process (guards against reused pids)."""
        # sshd rewrites its process title ("sshd: /usr/sbin/sshd -D ... [listener]"),
        # so match on the joined command line.
        cmd = " ".join(cmdline(pid))
        if part == "agent":
            return "python" in cmd and str(self.state.token_file) in cmd
        src = next(s for s in self.layout.sources if s.sshd_part == part)
        return "sshd" in cmd and str(self.state.source_path(src, "sshd_config")) in cmd

    def running(self, part: str, pid: int | None) -> bool:
        """Whether the pid recorded for part is alive and still ours."""
        return bool(pid and proc_alive(pid) and self.cmd_matches(part, pid))

    def leftovers(self) -> list[str]:
        """Pid files that exist, with whether their process still runs."""
        found = []
        for part, path in self.state.pidfiles.items():
            if path.exists():
                pid = self.state.read_pid(part)
                if self.running(part, pid):
                    found.append(f"{part} process {pid} (pid file {path})")
                else:
                    found.append(f"stale pid file {path} (pid {pid} not running)")
        return found

    def processes(self) -> dict:
        """{part: {"pid", "running"}} for every process we start."""
        processes = {}
        for part in self.state.pidfiles:
            pid = self.state.read_pid(part)
            processes[part] = {"pid": pid, "running": self.running(part, pid)}
        return processes

    def sshd_accepting(self, processes: dict) -> bool:
        return all(processes[s.sshd_part]["running"] and tcp_open(s.mgmt_addr, SSH_PORT)
                   for s in self.layout.sources)

    def agent_health(self, timeout: float = 1.0) -> dict | None:
        """The agent's GET /health answer, or None."""
        try:
            token = self.state.token_file.read_text().strip()
        except OSError:
            return None
        req = urllib.request.Request(self.agent_url + "/health", headers={TOKEN_HEADER: token})
        try:
            with self._http.open(req, timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                return json.loads(resp.read() or b"{}")
        except (OSError, ValueError, urllib.error.URLError):
            return None

    # --- start ----------------------------------------------------------------
    def start(self, created: list[str], script: Path) -> tuple[list[dict], dict | None]:
        """Every sshd, then the agent from script; wait until all answer.  Returns
        the source hosts' entries (as testbed.json "sources") and the agent's health."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation dir
        waiting = {}
        sources = []
        for src in self.layout.sources:
            proc, entry = self._start_sshd(src)
            created.append(f"sshd pid {proc.pid} in {src.netns}")
            waiting[src.sshd_part] = (proc, self.state.source_path(src, "sshd.log"), src.mgmt_addr)
            sources.append(entry)
        agent = self._start_agent(script)
        created.append(f"agent pid {agent.pid} in {self.layout.dut_netns}")
        waiting["agent"] = (agent, self.state.path("agent.log"), None)
        return sources, self._wait_ready(waiting)

    def _spawn(self, part: str, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as logf:
            logf.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {part}: {' '.join(argv)}\n".encode())
            logf.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    start_new_session=True, close_fds=True, cwd=self.state.root)
        self._children.append(proc)
        # `ip netns exec` execs in place, so this pid is sshd's / the agent's own.
        self.state.pidfiles[part].write_text(f"{proc.pid}\n")
        return proc

    def _start_sshd(self, src: SourceHost) -> tuple[subprocess.Popen, dict]:
        """sshd of one source host with its own host key, client key,
        authorized_keys and known_hosts line, all in its state subdirectory."""
        sp = self.state.source_path
        sp(src, "").mkdir(mode=0o700, exist_ok=True)
        host_key, client_key = sp(src, "ssh_host_ed25519_key"), sp(src, "id_ed25519")
        _keypair(host_key, f"xdplab-host@{src.netns}")
        _keypair(client_key, f"xdplab-controller@{src.netns}")
        authorized = sp(src, "authorized_keys")
        authorized.write_text(client_key.with_suffix(".pub").read_text())
        known_hosts = sp(src, "known_hosts")
        host_pub = host_key.with_suffix(".pub").read_text().split()
        known_hosts.write_text(f"{src.mgmt_addr} {host_pub[0]} {host_pub[1]}\n")
        sshd_config = sp(src, "sshd_config")
        sshd_config.write_text(_sshd_config(src, self.state, host_key, authorized))
        proc = self._spawn(src.sshd_part, ["ip", "netns", "exec", src.netns, "/bin/sh", "-c",
                                           _WITHOUT_DOTFILES, "sh", _login_rc("root"),
                                           "/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_config)],
                           sp(src, "sshd.log"))
        entry = {"host": src.mgmt_addr, "port": SSH_PORT, "user": "root",
                 "key_file": str(client_key), "known_hosts": str(known_hosts),
                 "python": "python3", "iface": src.iface, "address": src.address,
                 "mac": mac(src.netns, src.iface),
                 "dut_iface": src.dut_iface, "netns": src.netns}
        return proc, entry

    def _start_agent(self, script: Path) -> subprocess.Popen:
        """The agent in the DUT namespace, with a new token."""
        lay = self.layout
        token_file = self.state.token_file
        token_file.unlink(missing_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        agent_state = self.state.path("agent")
        agent_state.mkdir(mode=0o700, exist_ok=True)
        argv = agent_argv(script, f"{lay.dut_mgmt_addr}:{self.agent_port}", token_file,
                          [d.name for d in lay.dut_ifaces], agent_state)
        return self._spawn("agent", ["ip", "netns", "exec", lay.dut_netns, *argv],
                           self.state.path("agent.log"))

    def _wait_ready(self, waiting: dict) -> dict | None:
        """Until every sshd accepts TCP and the agent answers /health (its answer
        is returned); a process that exits or a deadline missed is a TestbedError
        with the end of its log."""
        deadline = time.monotonic() + self.ready_timeout_s
        health = None
        while waiting:
            for part, (proc, log, host) in list(waiting.items()):
                if proc.poll() is not None:
                    raise TestbedError(f"{part} exited with code {proc.returncode} while starting "
                                       f"(see {log}):\n{tail(log)}")
                if part == "agent":
                    health = self.agent_health(timeout=1.0)
                    if health is not None:
                        del waiting[part]
                elif tcp_open(host, SSH_PORT, timeout=0.5):
                    del waiting[part]
            if not waiting:
                break
            if time.monotonic() > deadline:
                part, (_, log, host) = next(iter(waiting.items()))
                what = (f"answer GET {self.agent_url}/health with 200" if part == "agent"
                        else f"accept TCP on {host}:{SSH_PORT}")
                raise TestbedError(f"{part} did not {what} within {self.ready_timeout_s:.0f} s "
                                   f"(see {log}):\n{tail(log)}")
            time.sleep(0.1)
        return health

    # --- stop -----------------------------------------------------------------
    def recorded(self, skip: dict[int, str]) -> dict[int, str]:
        """Our processes by their pid files that are not in skip (they may live in a
        namespace that was already deleted by hand)."""
        found = {}
        for part in self.state.pidfiles:
            pid = self.state.read_pid(part)
            if pid and pid not in skip and self.running(part, pid):
                found[pid] = f"{part} process {pid}"
        return found

    def reap(self) -> None:
        """Collect the exit status of sshd/agent started by this object (a
        zombie counts as gone in proc_alive; this only frees its slot)."""
        self._children = [c for c in self._children if c.poll() is None]

    def kill(self, pids: list[int], removed: list[str], what: dict[int, str]) -> None:
        """SIGTERM, then SIGKILL whatever is left after a bounded wait."""
        pids = [p for p in pids if p != os.getpid() and proc_alive(p)]
        for sig, wait_s in ((signal.SIGTERM, TERM_WAIT_S), (signal.SIGKILL, KILL_WAIT_S)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while True:
                self.reap()
                pids = [p for p in pids if proc_alive(p)]
                if not pids or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if not pids:
                break
        removed.extend(what.values())
        if pids:
            raise TestbedError(f"processes {pids} survived SIGKILL")
