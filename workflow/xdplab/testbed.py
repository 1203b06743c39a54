"""Embedded two-host testbed: a source host and a device under test (DUT) as
network namespaces on this machine, joined by a veth test link.

    namespace <name>-src                          namespace <name>-dut
    xl-src0 10.201.0.1/30  <==== test link ====>  xl-dut0 10.201.0.2/30
    mgmt0   10.201.1.2/30  (sshd :22)             mgmt0   10.201.2.2/30  (agent :7717)
       |                                             |
    xl-msrc 10.201.1.1/30 ----- root namespace ----- xl-mdut 10.201.2.1/30

The controller (this machine's root namespace) reaches the source host over
SSH and the DUT agent over HTTP, exactly as it would reach two real hosts.
Runtime state (keys, token, pid files, logs, testbed.json) lives in
/run/xdplab/.  See PROTOCOL.md, section "Embedded testbed".

    PYTHONPATH=workflow python -m xdplab.testbed up|down|status

Runs as root; needs only the standard library, iproute2, procps (sysctl)
and openssh-server.  Every command is an argv list, never a shell string.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

TESTBED_NET = ipaddress.ip_network("10.201.0.0/16")
SRC_ADDR, DUT_ADDR = "10.201.0.1", "10.201.0.2"
MGMT_SRC_ROOT, MGMT_SRC_NS = "10.201.1.1", "10.201.1.2"
MGMT_DUT_ROOT, MGMT_DUT_NS = "10.201.2.1", "10.201.2.2"
MGMT_SRC_IFACE, MGMT_DUT_IFACE = "xl-msrc", "xl-mdut"   # root-namespace ends
MGMT_NS_IFACE = "mgmt0"                                # end inside each namespace
# Locally administered, fixed MACs: the static neighbour entries and any pcap
# read the same addresses on every run.
SRC_MAC, DUT_MAC = "02:58:4c:00:00:01", "02:58:4c:00:00:02"
SSH_PORT = 22
TERM_WAIT_S = 5.0    # SIGTERM -> SIGKILL; the agent detaches XDP on SIGTERM
KILL_WAIT_S = 3.0
NETNS_GONE_WAIT_S = 5.0


class TestbedError(RuntimeError):
    """A part of the testbed could not be set up; the message names it."""


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        raise TestbedError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {msg}")
    return proc


def _ip_json(argv: list[str]) -> list:
    proc = _run(["ip", "-j", *argv], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return json.loads(proc.stdout)


def _netns_list() -> list[str]:
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _link(name: str, netns: str | None = None) -> dict | None:
    """The `ip -j -d link show` entry of an interface, or None."""
    argv = (["-n", netns] if netns else []) + ["-d", "link", "show", "dev", name]
    links = _ip_json(argv)
    return links[0] if links else None


def _proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _sysctl_available(key: str) -> bool:
    return Path("/proc/sys", *key.split(".")).exists()


class EmbeddedTestbed:
    """Source host and DUT as namespaces on this machine.  `up()` is
    idempotent, `down()` removes everything of ours and nothing else."""

    def __init__(self, name: str = "xdplab", state_dir: str | os.PathLike = "/run/xdplab",
                 repo_root: str | os.PathLike = REPO_ROOT, agent_port: int = 7717,
                 src_iface: str = "xl-src0", dut_iface: str = "xl-dut0", mtu: int = 1500,
                 ready_timeout_s: float = 20.0):
        for iface in (src_iface, dut_iface):
            if not 0 < len(iface) <= 15 or "/" in iface or " " in iface:
                raise ValueError(f"bad interface name {iface!r}")
        if not 68 <= int(mtu) <= 65535:
            raise ValueError(f"mtu {mtu} is outside 68..65535")
        self.name = name
        self.state_dir = Path(state_dir)
        self.repo_root = Path(repo_root).resolve()
        self.agent_port = int(agent_port)
        self.src_iface, self.dut_iface = src_iface, dut_iface
        self.mtu = int(mtu)
        self.ready_timeout_s = float(ready_timeout_s)
        self.src_ns, self.dut_ns = f"{name}-src", f"{name}-dut"
        self._children: list[subprocess.Popen] = []
        # Talk to the agent directly, whatever http_proxy says.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- paths --------------------------------------------------------------
    @property
    def agent_script(self) -> Path:
        return self.repo_root / "workflow" / "xdplab" / "agent.py"

    @property
    def agent_url(self) -> str:
        return f"http://{MGMT_DUT_NS}:{self.agent_port}"

    def _p(self, name: str) -> Path:
        return self.state_dir / name

    @property
    def _pidfiles(self) -> dict[str, Path]:
        return {"sshd": self._p("sshd.pid"), "agent": self._p("agent.pid")}

    def _cmd_matches(self, part: str, pid: int) -> bool:
        """Whether pid still runs our process (guards against reused pids)."""
        # sshd rewrites its process title ("sshd: /usr/sbin/sshd -D ... [listener]"),
        # so match on the joined command line.
        cmd = " ".join(_cmdline(pid))
        if part == "sshd":
            return "sshd" in cmd and str(self._p("sshd_config")) in cmd
        return "agent.py" in cmd and str(self._p("agent.token")) in cmd

    def _read_pid(self, part: str) -> int | None:
        try:
            return int(self._pidfiles[part].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @contextlib.contextmanager
    def _lock(self):
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self._p(".lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- inspection -----------------------------------------------------------
    def find_leftovers(self) -> list[str]:
        """Everything of ours that exists now: namespaces, management veths,
        pid files (with whether their process still runs)."""
        found = []
        names = set(_netns_list())
        for ns in (self.src_ns, self.dut_ns):
            if ns in names:
                found.append(f"namespace {ns}")
        for iface in (MGMT_SRC_IFACE, MGMT_DUT_IFACE):
            if _link(iface) is not None:
                found.append(f"veth {iface}")
        for part, path in self._pidfiles.items():
            if path.exists():
                pid = self._read_pid(part)
                if pid and _proc_alive(pid) and self._cmd_matches(part, pid):
                    found.append(f"{part} process {pid} (pid file {path})")
                else:
                    found.append(f"stale pid file {path} (pid {pid} not running)")
        return found

    def _agent_health(self, timeout: float = 1.0) -> dict | None:
        try:
            token = self._p("agent.token").read_text().strip()
        except OSError:
            return None
        req = urllib.request.Request(self.agent_url + "/health",
                                     headers={"X-Xdplab-Token": token})
        try:
            with self._http.open(req, timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                return json.loads(resp.read() or b"{}")
        except (OSError, ValueError, urllib.error.URLError):
            return None

    @staticmethod
    def _tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    def status(self) -> dict:
        names = set(_netns_list())
        links = {
            MGMT_SRC_IFACE: _link(MGMT_SRC_IFACE) is not None,
            MGMT_DUT_IFACE: _link(MGMT_DUT_IFACE) is not None,
            f"{self.src_ns}/{self.src_iface}": self.src_ns in names and _link(self.src_iface, self.src_ns) is not None,
            f"{self.dut_ns}/{self.dut_iface}": self.dut_ns in names and _link(self.dut_iface, self.dut_ns) is not None,
        }
        processes = {}
        for part in self._pidfiles:
            pid = self._read_pid(part)
            processes[part] = {"pid": pid,
                               "running": bool(pid and _proc_alive(pid) and self._cmd_matches(part, pid))}
        sshd_ok = processes["sshd"]["running"] and self._tcp_open(MGMT_SRC_NS, SSH_PORT)
        agent_ok = processes["agent"]["running"] and self._agent_health() is not None
        description = None
        with contextlib.suppress(OSError, ValueError):
            description = json.loads(self._p("testbed.json").read_text())
        healthy = (all(links.values()) and self.src_ns in names and self.dut_ns in names
                   and sshd_ok and agent_ok and description is not None)
        return {
            "name": self.name,
            "state_dir": str(self.state_dir),
            "up": healthy,
            "namespaces": {ns: ns in names for ns in (self.src_ns, self.dut_ns)},
            "links": links,
            "processes": processes,
            "sshd_accepting": sshd_ok,
            "agent_healthy": agent_ok,
            "description": description,
        }

    def _reusable(self) -> dict | None:
        """The running testbed's description if it is whole, healthy and was
        made with the same parameters and the same agent.py; else None."""
        st = self.status()
        d = st["description"]
        if not st["up"] or not d:
            return None
        dut, link = d.get("dut") or {}, d.get("test_link") or {}
        same = (d.get("name") == self.name and dut.get("agent_url") == self.agent_url
                and link.get("src_iface") == self.src_iface
                and link.get("dut_iface") == self.dut_iface
                and link.get("mtu") == self.mtu
                and dut.get("agent_script") == str(self.agent_script)
                and dut.get("agent_sha256") == _sha256(self.agent_script))
        return d if same else None

    # --- bring up -------------------------------------------------------------
    def up(self) -> dict:
        if os.geteuid() != 0:
            raise TestbedError("the embedded testbed needs root (network namespaces, veth, sshd)")
        with self._lock():
            existing = self._reusable()
            if existing is not None:
                return dict(existing, cleared=[], created=[])
            cleared = [f"found {item} from an earlier run: removed"
                       for item in self.find_leftovers()]
            self._down_locked()
            created: list[str] = []
            try:
                self._check_prerequisites()
                self._check_address_conflicts()
                self._create_network(created)
                desc = self._start_services(created)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._down_locked()
                raise
            desc["cleared"], desc["created"] = cleared, created
            tmp = self._p("testbed.json.tmp")
            tmp.write_text(json.dumps(desc, indent=2) + "\n")
            tmp.replace(self._p("testbed.json"))
            return desc

    def _check_prerequisites(self) -> None:
        missing = [p for p in ("/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/python3")
                   if not os.access(p, os.X_OK)]
        if missing:
            raise TestbedError(f"missing {', '.join(missing)}; run `make setup`")
        if not self.agent_script.is_file():
            raise TestbedError(f"the DUT agent {self.agent_script} does not exist")

    def _check_address_conflicts(self) -> None:
        """Refuse when anything in the root namespace already uses 10.201.0.0/16."""
        for link in _ip_json(["addr", "show"]):
            for a in link.get("addr_info", []):
                if a.get("family") != "inet":
                    continue
                net = ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 32)}").network
                if net.overlaps(TESTBED_NET):
                    raise TestbedError(
                        f"interface {link['ifname']} has {a['local']}/{a.get('prefixlen')}, which overlaps "
                        f"the testbed's {TESTBED_NET}; remove it or move the testbed")
        for route in _ip_json(["-4", "route", "show", "table", "all"]):
            dst = route.get("dst", "")
            if dst in ("", "default") or route.get("type") in ("broadcast", "local"):
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(dst, strict=False).overlaps(TESTBED_NET):
                    raise TestbedError(
                        f"route {dst} via {route.get('dev', '?')} overlaps the testbed's {TESTBED_NET}; "
                        f"remove it or move the testbed")

    def _disable_ipv6(self, netns: str | None, iface: str) -> None:
        key = f"net.ipv6.conf.{iface}.disable_ipv6"
        if not _sysctl_available("net.ipv6.conf.all.disable_ipv6"):
            return  # kernel without IPv6
        prefix = ["ip", "netns", "exec", netns] if netns else []
        _run([*prefix, "sysctl", "-q", "-w", f"{key}=1"])

    def _create_network(self, created: list[str]) -> None:
        for ns in (self.src_ns, self.dut_ns):
            _run(["ip", "netns", "add", ns])
            created.append(f"namespace {ns}")
            if _sysctl_available("net.ipv6.conf.all.disable_ipv6"):
                for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
                    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}=1"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])

        # Test link, made directly inside the namespaces so that it never
        # exists in the root namespace.
        _run(["ip", "-n", self.src_ns, "link", "add", self.src_iface, "address", SRC_MAC,
              "mtu", str(self.mtu), "type", "veth", "peer", "name", self.dut_iface,
              "netns", self.dut_ns, "address", DUT_MAC, "mtu", str(self.mtu)])
        created.append(f"veth {self.src_ns}/{self.src_iface} <-> {self.dut_ns}/{self.dut_iface}")
        for ns, iface, addr, peer_addr, peer_mac in (
                (self.src_ns, self.src_iface, SRC_ADDR, DUT_ADDR, DUT_MAC),
                (self.dut_ns, self.dut_iface, DUT_ADDR, SRC_ADDR, SRC_MAC)):
            self._disable_ipv6(ns, iface)
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", iface])
            _run(["ip", "-n", ns, "link", "set", iface, "up"])
            # No ARP during a trial: both ends know each other for good.
            _run(["ip", "-n", ns, "neigh", "replace", peer_addr, "lladdr", peer_mac,
                  "dev", iface, "nud", "permanent"])

        for root_iface, ns, root_addr, ns_addr in (
                (MGMT_SRC_IFACE, self.src_ns, MGMT_SRC_ROOT, MGMT_SRC_NS),
                (MGMT_DUT_IFACE, self.dut_ns, MGMT_DUT_ROOT, MGMT_DUT_NS)):
            _run(["ip", "link", "add", root_iface, "type", "veth", "peer", "name", MGMT_NS_IFACE,
                  "netns", ns])
            created.append(f"veth {root_iface} <-> {ns}/{MGMT_NS_IFACE}")
            self._disable_ipv6(None, root_iface)
            self._disable_ipv6(ns, MGMT_NS_IFACE)
            _run(["ip", "addr", "add", f"{root_addr}/30", "dev", root_iface])
            _run(["ip", "-n", ns, "addr", "add", f"{ns_addr}/30", "dev", MGMT_NS_IFACE])
            _run(["ip", "link", "set", root_iface, "up"])
            _run(["ip", "-n", ns, "link", "set", MGMT_NS_IFACE, "up"])

    def _keypair(self, path: Path, comment: str) -> None:
        if path.exists() and path.with_suffix(".pub").exists():
            return
        for p in (path, path.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        _run(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])

    def _spawn(self, part: str, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as logf:
            logf.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {part}: {' '.join(argv)}\n".encode())
            logf.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    start_new_session=True, close_fds=True, cwd=self.state_dir)
        self._children.append(proc)
        # `ip netns exec` execs in place, so this pid is sshd's / the agent's own.
        self._pidfiles[part].write_text(f"{proc.pid}\n")
        return proc

    def _start_services(self, created: list[str]) -> dict:
        sd = self.state_dir
        host_key, client_key = sd / "ssh_host_ed25519_key", sd / "id_ed25519"
        self._keypair(host_key, f"xdplab-host@{self.src_ns}")
        self._keypair(client_key, "xdplab-controller")
        authorized = sd / "authorized_keys"
        authorized.write_text(client_key.with_suffix(".pub").read_text())
        known_hosts = sd / "known_hosts"
        host_pub = host_key.with_suffix(".pub").read_text().split()
        known_hosts.write_text(f"{MGMT_SRC_NS} {host_pub[0]} {host_pub[1]}\n")
        sshd_config = sd / "sshd_config"
        sshd_config.write_text("\n".join([
            "# written by xdplab.testbed; sshd of the embedded source host",
            f"ListenAddress {MGMT_SRC_NS}",
            f"Port {SSH_PORT}",
            "AddressFamily inet",
            f"HostKey {host_key}",
            f"PidFile {sd / 'sshd.pid'}",
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
        ]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd_log = sd / "sshd.log"
        sshd = self._spawn("sshd", ["ip", "netns", "exec", self.src_ns, "/usr/sbin/sshd", "-D", "-e",
                                    "-f", str(sshd_config)], sshd_log)
        created.append(f"sshd pid {sshd.pid} in {self.src_ns}")

        token_file = sd / "agent.token"
        token_file.unlink(missing_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        agent_state = sd / "agent"
        agent_state.mkdir(mode=0o700, exist_ok=True)
        agent_log = sd / "agent.log"
        agent = self._spawn("agent", [
            "ip", "netns", "exec", self.dut_ns, "/usr/bin/python3", str(self.agent_script),
            "--listen", f"{MGMT_DUT_NS}:{self.agent_port}", "--token-file", str(token_file),
            "--bpf-dir", str(self.repo_root / "bpf"), "--allow-interface", self.dut_iface,
            "--state-dir", str(agent_state)], agent_log)
        created.append(f"agent pid {agent.pid} in {self.dut_ns}")

        deadline = time.monotonic() + self.ready_timeout_s
        waiting = {"sshd": (sshd, sshd_log), "agent": (agent, agent_log)}
        health = None
        while waiting:
            for part, (proc, log) in list(waiting.items()):
                if proc.poll() is not None:
                    raise TestbedError(f"{part} exited with code {proc.returncode} while starting "
                                       f"(see {log}):\n{_tail(log)}")
                if part == "sshd" and self._tcp_open(MGMT_SRC_NS, SSH_PORT, timeout=0.5):
                    del waiting[part]
                elif part == "agent":
                    health = self._agent_health(timeout=1.0)
                    if health is not None:
                        del waiting[part]
            if not waiting:
                break
            if time.monotonic() > deadline:
                part, (_, log) = next(iter(waiting.items()))
                what = ("accept TCP on %s:%d" % (MGMT_SRC_NS, SSH_PORT) if part == "sshd"
                        else f"answer GET {self.agent_url}/health with 200")
                raise TestbedError(f"{part} did not {what} within {self.ready_timeout_s:.0f} s "
                                   f"(see {log}):\n{_tail(log)}")
            time.sleep(0.1)

        def mac(ns, iface):
            return (_link(iface, ns) or {}).get("address")

        return {
            "mode": "embedded",
            "name": self.name,
            "source": {"host": MGMT_SRC_NS, "port": SSH_PORT, "user": "root",
                       "key_file": str(client_key), "known_hosts": str(known_hosts),
                       "python": "python3", "netns": self.src_ns},
            "dut": {"agent_url": self.agent_url, "token_file": str(token_file),
                    "iface": self.dut_iface, "netns": self.dut_ns,
                    "agent_script": str(self.agent_script),
                    "agent_sha256": _sha256(self.agent_script),
                    "agent": (health or {}).get("agent")},
            "test_link": {"src_iface": self.src_iface, "dut_iface": self.dut_iface,
                          "src_addr": SRC_ADDR, "dut_addr": DUT_ADDR, "prefixlen": 30,
                          "mtu": self.mtu, "src_mac": mac(self.src_ns, self.src_iface),
                          "dut_mac": mac(self.dut_ns, self.dut_iface)},
            "state_dir": str(self.state_dir),
        }

    # --- tear down -------------------------------------------------------------
    def down(self) -> list[str]:
        with self._lock():
            return self._down_locked()

    def _reap_children(self) -> None:
        """Collect the exit status of sshd/agent started by this object (a
        zombie counts as gone in _proc_alive; this only frees its slot)."""
        self._children = [c for c in self._children if c.poll() is None]

    def _kill(self, pids: list[int], removed: list[str], what: dict[int, str]) -> None:
        """SIGTERM, then SIGKILL whatever is left after a bounded wait."""
        pids = [p for p in pids if p != os.getpid() and _proc_alive(p)]
        for sig, wait_s in ((signal.SIGTERM, TERM_WAIT_S), (signal.SIGKILL, KILL_WAIT_S)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while True:
                self._reap_children()
                pids = [p for p in pids if _proc_alive(p)]
                if not pids or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if not pids:
                break
        removed.extend(what.values())
        if pids:
            raise TestbedError(f"processes {pids} survived SIGKILL")

    def _down_locked(self) -> list[str]:
        removed: list[str] = []
        names = set(_netns_list())
        ours = [ns for ns in (self.src_ns, self.dut_ns) if ns in names]

        # Every process inside our namespaces (sshd, its sessions, the agent,
        # tcpdump, generators), then recorded pids that may live in a namespace
        # that was already deleted by hand.
        targets: dict[int, str] = {}
        for ns in ours:
            proc = _run(["ip", "netns", "pids", ns], check=False)
            for tok in proc.stdout.split():
                if tok.isdigit():
                    pid = int(tok)
                    targets[pid] = f"process {pid} ({_comm(pid)}) in namespace {ns}"
        for part in self._pidfiles:
            pid = self._read_pid(part)
            if pid and pid not in targets and _proc_alive(pid) and self._cmd_matches(part, pid):
                targets[pid] = f"{part} process {pid}"
        if targets:
            self._kill(list(targets), removed, targets)
        self._reap_children()

        mgmt_before = [i for i in (MGMT_SRC_IFACE, MGMT_DUT_IFACE) if _link(i) is not None]
        for ns in ours:
            _run(["ip", "netns", "del", ns], check=False)
            removed.append(f"namespace {ns}")
        # Deleting a namespace destroys its veth ends, and so their root-
        # namespace peers, but asynchronously: wait a little, then delete
        # whatever of ours is left (only veths with our names).
        deadline = time.monotonic() + (NETNS_GONE_WAIT_S if ours else 0)
        while True:
            left = [i for i in (MGMT_SRC_IFACE, MGMT_DUT_IFACE) if _link(i) is not None]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for iface in left:
            link = _link(iface)
            if link is None:
                continue
            kind = link.get("linkinfo", {}).get("info_kind")
            if kind != "veth":
                raise TestbedError(f"interface {iface} exists but is a {kind or 'non-veth'} "
                                   f"interface, not ours; refusing to delete it")
            _run(["ip", "link", "del", iface], check=False)
        removed.extend(f"veth {i}" for i in mgmt_before)

        for part, path in self._pidfiles.items():
            if path.exists():
                path.unlink()
                removed.append(f"pid file {path}")
        for name in ("agent.token", "testbed.json", "testbed.json.tmp", "authorized_keys"):
            path = self._p(name)
            if path.exists():
                path.unlink()
                if name == "agent.token":
                    removed.append(f"token file {path}")
        return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xdplab.testbed",
        description="Bring the embedded two-namespace testbed up or down, or show its status (JSON).")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default="xdplab", help="namespace prefix (default: xdplab)")
    parser.add_argument("--state-dir", default="/run/xdplab", help="runtime state (default: /run/xdplab)")
    parser.add_argument("--repo-root", default=str(REPO_ROOT), help="repository holding workflow/xdplab/agent.py and bpf/")
    parser.add_argument("--mtu", type=int, default=1500, help="test link MTU (default: 1500)")
    args = parser.parse_args(argv)
    tb = EmbeddedTestbed(name=args.name, state_dir=args.state_dir, repo_root=args.repo_root, mtu=args.mtu)
    try:
        if args.action == "up":
            out = tb.up()
        elif args.action == "down":
            out = {"removed": tb.down()}
        else:
            out = tb.status()
    except TestbedError as e:
        print(f"xdplab.testbed {args.action}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
