"""Namespace labs on this machine: source hosts and a device under test (DUT)
as network namespaces, reached from the root namespace only through their
management addresses, exactly as the controller reaches real machines.

A lab has N source namespaces, each with its own sshd on its own management
address, its own client key pair and host key, and one DUT namespace with M
test interfaces and the agent.  Source i is joined to its DUT interface by its
own veth with its own /30; IPv6 is off and the neighbours on a test link are
static (no ARP during a trial).  The embedded testbed is the case N = M = 1:

    namespace <name>-src                          namespace <name>-dut
    xl-src0 10.201.0.1/30  <==== test link ====>  xl-dut0 10.201.0.2/30
    mgmt0   10.201.1.2/30  (sshd :22)             mgmt0   10.201.2.2/30  (agent :7717)
       |                                             |
    xl-msrc 10.201.1.1/30 ----- root namespace ----- xl-mdut 10.201.2.1/30

In a lab made by lab_layout() source i has test address <net>.0.(4i+1)/30
(its DUT interface <net>.0.(4i+2)), management <net>.1.(4i+2) (root end
<net>.1.(4i+1)); the DUT's management address is <net>.2.2.

Runtime state (keys, token, sshd_config, known_hosts, pid files, logs,
testbed.json) lives in the state directory (/run/xdplab for the embedded
testbed); `down` empties it.  See PROTOCOL.md, section "Embedded testbed".

    PYTHONPATH=workflow python -m xdplab.testbed up|down|status

Runs as root; needs only the standard library, iproute2, procps (sysctl)
and openssh-server.  Every command is an argv list, never a shell string.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# The embedded testbed's names and addresses (tests and PROTOCOL.md use them).
TESTBED_NET = ipaddress.ip_network("10.201.0.0/16")
SRC_ADDR, DUT_ADDR = "10.201.0.1", "10.201.0.2"
MGMT_SRC_ROOT, MGMT_SRC_NS = "10.201.1.1", "10.201.1.2"
MGMT_DUT_ROOT, MGMT_DUT_NS = "10.201.2.1", "10.201.2.2"
MGMT_SRC_IFACE, MGMT_DUT_IFACE = "xl-msrc", "xl-mdut"   # root-namespace ends
MGMT_NS_IFACE = "mgmt0"                                # end inside each namespace
# Locally administered, fixed MACs: the static neighbour entries and any pcap
# read the same addresses on every run.  Source i: 02:58:4c:00:<i>:01, its DUT
# interface 02:58:4c:00:<i>:02.
SRC_MAC, DUT_MAC = "02:58:4c:00:00:01", "02:58:4c:00:00:02"
SSH_PORT = 22
AGENT_PYZ = Path("dist") / "xdplab-agent.pyz"   # relative to the repository
TERM_WAIT_S = 5.0    # SIGTERM -> SIGKILL; the agent detaches XDP on SIGTERM
KILL_WAIT_S = 3.0
NETNS_GONE_WAIT_S = 5.0
MAKE_AGENT_TIMEOUT_S = 300.0
MAX_IFNAME = 15      # IFNAMSIZ - 1


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


def _check_ifname(name: str) -> None:
    if not 0 < len(name) <= MAX_IFNAME or "/" in name or " " in name:
        raise ValueError(f"bad interface name {name!r} (1..{MAX_IFNAME} characters, no '/' or space)")


# --- layout: names and addresses, no side effects -------------------------------

@dataclasses.dataclass(frozen=True)
class SourceHost:
    label: str            # names the host in pid files, logs and messages ("src", "src0")
    netns: str
    mgmt_root_iface: str  # root-namespace end of its management veth
    mgmt_root_addr: str
    mgmt_addr: str        # where its sshd listens; the controller knows only this
    iface: str            # its test interface
    address: str          # its end of the test link's /30
    mac: str
    dut_iface: str        # the DUT interface at the other end of its test link
    state_subdir: str     # "" = the state directory itself (embedded testbed)


@dataclasses.dataclass(frozen=True)
class DutIface:
    name: str
    address: str
    mac: str


@dataclasses.dataclass(frozen=True)
class LabLayout:
    name: str
    net: ipaddress.IPv4Network   # every address of the lab; refused if already in use
    sources: tuple[SourceHost, ...]
    dut_netns: str
    dut_mgmt_root_iface: str
    dut_mgmt_root_addr: str
    dut_mgmt_addr: str
    dut_ifaces: tuple[DutIface, ...]
    prefixlen: int = 30

    def __post_init__(self):
        joined = [s.dut_iface for s in self.sources]
        names = [d.name for d in self.dut_ifaces]
        if sorted(joined) != sorted(names) or len(set(names)) != len(names):
            # A veth has two ends: each DUT interface is one source's peer.
            raise ValueError(f"each DUT interface must be joined to exactly one source: "
                             f"DUT interfaces {names}, sources joined to {joined}")
        for s in self.sources:
            for iface in (s.iface, s.mgmt_root_iface):
                _check_ifname(iface)
        for iface in (self.dut_mgmt_root_iface, *names):
            _check_ifname(iface)
        roots = [s.mgmt_root_iface for s in self.sources] + [self.dut_mgmt_root_iface]
        if len(set(roots)) != len(roots):
            raise ValueError(f"management interfaces {roots} must have distinct names")

    @property
    def namespaces(self) -> list[str]:
        return [s.netns for s in self.sources] + [self.dut_netns]

    @property
    def mgmt_root_ifaces(self) -> list[str]:
        return [s.mgmt_root_iface for s in self.sources] + [self.dut_mgmt_root_iface]

    def dut_iface(self, name: str) -> DutIface:
        return next(d for d in self.dut_ifaces if d.name == name)


def _nth(net: ipaddress.IPv4Network, third: int, fourth: int) -> str:
    return str(net.network_address + third * 256 + fourth)


def lab_layout(name: str, sources: int = 2, net: str = "10.204.0.0/16",
               root_prefix: str | None = None, src_ifaces: list[str] | None = None,
               dut_ifaces: list[str] | None = None, dut_iface_of: list[int] | None = None,
               labels: dict | None = None, state_subdirs: list[str] | None = None,
               mgmt_root_ifaces: list[str] | None = None,
               dut_mgmt_root_iface: str | None = None) -> LabLayout:
    """N sources and one DUT with N test interfaces.  Source i has namespace
    <name>-src<i>, test interface xl-src<i> and is joined to DUT interface
    dut_iface_of[i] (default i) of <name>-dut; root-namespace ends of the
    management veths are <root_prefix>m<i> and <root_prefix>md (root_prefix
    defaults to <name>-)."""
    network = ipaddress.ip_network(net)
    if network.prefixlen > 16 or not 1 <= sources <= 64:
        raise ValueError(f"a lab needs a /16 or larger and 1..64 sources (got {net}, {sources})")
    root_prefix = f"{name}-" if root_prefix is None else root_prefix
    src_ifaces = src_ifaces or [f"xl-src{i}" for i in range(sources)]
    dut_names = dut_ifaces or [f"xl-dut{j}" for j in range(sources)]
    order = dut_iface_of if dut_iface_of is not None else list(range(sources))
    names = labels or {}
    subdirs = state_subdirs or [f"src{i}" for i in range(sources)]
    roots = mgmt_root_ifaces or [f"{root_prefix}m{i}" for i in range(sources)]
    if not len(src_ifaces) == len(order) == len(subdirs) == len(roots) == sources:
        raise ValueError("src_ifaces, dut_iface_of, state_subdirs and mgmt_root_ifaces "
                         "need one entry per source")
    hosts, duts = [], {}
    for i in range(sources):
        j = order[i]
        if not 0 <= j < len(dut_names):
            raise ValueError(f"source {i}: DUT interface index {j} is outside 0..{len(dut_names) - 1}")
        label = names.get(i, f"src{i}")
        hosts.append(SourceHost(
            label=label, netns=f"{name}-{label}",
            mgmt_root_iface=roots[i],
            mgmt_root_addr=_nth(network, 1, 4 * i + 1), mgmt_addr=_nth(network, 1, 4 * i + 2),
            iface=src_ifaces[i], address=_nth(network, 0, 4 * i + 1), mac=f"02:58:4c:00:{i:02x}:01",
            dut_iface=dut_names[j], state_subdir=subdirs[i]))
        duts[j] = DutIface(dut_names[j], _nth(network, 0, 4 * i + 2), f"02:58:4c:00:{i:02x}:02")
    return LabLayout(
        name=name, net=network, sources=tuple(hosts), dut_netns=f"{name}-dut",
        dut_mgmt_root_iface=dut_mgmt_root_iface or f"{root_prefix}md",
        dut_mgmt_root_addr=_nth(network, 2, 1), dut_mgmt_addr=_nth(network, 2, 2),
        dut_ifaces=tuple(duts[j] for j in sorted(duts)))


def embedded_layout(name: str = "xdplab", src_iface: str = "xl-src0",
                    dut_iface: str = "xl-dut0") -> LabLayout:
    """Today's embedded testbed: <name>-src and <name>-dut, xl-msrc/xl-mdut,
    10.201.0.0/16, its files directly in the state directory."""
    return lab_layout(name, 1, str(TESTBED_NET), src_ifaces=[src_iface], dut_ifaces=[dut_iface],
                      labels={0: "src"}, state_subdirs=[""],
                      mgmt_root_ifaces=[MGMT_SRC_IFACE], dut_mgmt_root_iface=MGMT_DUT_IFACE)


# --- the agent's command line ---------------------------------------------------------

def _has_make_target(repo_root: Path, target: str) -> bool:
    if not (repo_root / "Makefile").is_file() or shutil.which("make") is None:
        return False
    return _run(["make", "-C", str(repo_root), "-n", target], check=False).returncode == 0


def agent_script(repo_root: Path, build: bool = False) -> Path:
    """The file the DUT agent is started from: dist/xdplab-agent.pyz.  With build, `make
    agent` runs first when the Makefile has it: it builds a missing pyz and rebuilds one
    older than the agent's sources (a no-op otherwise), so that a testbed never runs a
    stale agent."""
    pyz = repo_root / AGENT_PYZ
    if build and _has_make_target(repo_root, "agent"):
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


def lab_config(desc: dict, auto_address: tuple[int, ...] = ()) -> dict:
    """The workflow's `testbed: lab` configuration (contract, section 3) for a
    lab that is up, from its description: what a user writes for real machines.
    Sources whose index is in auto_address get `address: auto`."""
    sources = []
    for i, s in enumerate(desc["sources"]):
        sources.append({"host": s["host"], "user": s["user"], "port": s["port"],
                        "key_file": s["key_file"], "known_hosts": s["known_hosts"],
                        "iface": s["iface"], "address": "auto" if i in auto_address else s["address"],
                        "python": s["python"], "dut_iface": s["dut_iface"]})
    dut = desc["dut"]
    return {"testbed": "lab",
            "lab": {"sources": sources,
                    "dut": {"agent": dut["agent_url"], "token_file": dut["token_file"],
                            "ifaces": [d["name"] for d in dut["ifaces"]]}}}


class NamespaceLab:
    """Source hosts and a DUT as namespaces on this machine, described by a
    LabLayout.  `up()` is idempotent, `down()` removes everything of ours
    (namespaces, management veths, processes, the state directory's contents)
    and nothing else."""

    mode = "netns-lab"
    what = "namespace lab"   # in messages

    def __init__(self, layout: LabLayout, state_dir: str | os.PathLike,
                 repo_root: str | os.PathLike = REPO_ROOT, agent_port: int = 7717,
                 mtu: int = 1500, ready_timeout_s: float = 20.0):
        if not 68 <= int(mtu) <= 65535:
            raise ValueError(f"mtu {mtu} is outside 68..65535")
        self.layout = layout
        self.name = layout.name
        self.state_dir = Path(state_dir)
        self.repo_root = Path(repo_root).resolve()
        self.agent_port = int(agent_port)
        self.mtu = int(mtu)
        self.ready_timeout_s = float(ready_timeout_s)
        self._children: list[subprocess.Popen] = []
        # Talk to the agent directly, whatever http_proxy says.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- paths --------------------------------------------------------------
    @property
    def agent_script(self) -> Path:
        """The file the agent is started from (without building it)."""
        return agent_script(self.repo_root, build=False)

    @property
    def agent_url(self) -> str:
        return f"http://{self.layout.dut_mgmt_addr}:{self.agent_port}"

    def _p(self, name: str) -> Path:
        return self.state_dir / name

    def _sp(self, src: SourceHost, name: str) -> Path:
        return self.state_dir / src.state_subdir / name

    @staticmethod
    def _sshd_part(src: SourceHost) -> str:
        return "sshd" if not src.state_subdir else f"sshd-{src.label}"

    @property
    def _pidfiles(self) -> dict[str, Path]:
        files = {self._sshd_part(s): self._sp(s, "sshd.pid") for s in self.layout.sources}
        files["agent"] = self._p("agent.pid")
        return files

    def _cmd_matches(self, part: str, pid: int) -> bool:
        """Whether pid still runs our process (guards against reused pids)."""
        # sshd rewrites its process title ("sshd: /usr/sbin/sshd -D ... [listener]"),
        # so match on the joined command line.
        cmd = " ".join(_cmdline(pid))
        if part == "agent":
            return "python" in cmd and str(self._p("agent.token")) in cmd
        src = next(s for s in self.layout.sources if self._sshd_part(s) == part)
        return "sshd" in cmd and str(self._sp(src, "sshd_config")) in cmd

    def _read_pid(self, part: str) -> int | None:
        try:
            return int(self._pidfiles[part].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @contextlib.contextmanager
    def _lock(self):
        # The lock is the state directory itself: down() empties it, so a lock
        # file inside would be removed under a waiting process.
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- inspection -----------------------------------------------------------
    def find_leftovers(self) -> list[str]:
        """Everything of ours that exists now: namespaces, management veths,
        pid files (with whether their process still runs)."""
        found = []
        names = set(_netns_list())
        for ns in self.layout.namespaces:
            if ns in names:
                found.append(f"namespace {ns}")
        for iface in self.layout.mgmt_root_ifaces:
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
        lay = self.layout
        links = {iface: _link(iface) is not None for iface in lay.mgmt_root_ifaces}
        for s in lay.sources:
            links[f"{s.netns}/{s.iface}"] = s.netns in names and _link(s.iface, s.netns) is not None
        for d in lay.dut_ifaces:
            links[f"{lay.dut_netns}/{d.name}"] = (lay.dut_netns in names
                                                  and _link(d.name, lay.dut_netns) is not None)
        processes = {}
        for part in self._pidfiles:
            pid = self._read_pid(part)
            processes[part] = {"pid": pid,
                               "running": bool(pid and _proc_alive(pid) and self._cmd_matches(part, pid))}
        sshd_ok = all(processes[self._sshd_part(s)]["running"] and self._tcp_open(s.mgmt_addr, SSH_PORT)
                      for s in lay.sources)
        agent_ok = processes["agent"]["running"] and self._agent_health() is not None
        description = None
        with contextlib.suppress(OSError, ValueError):
            description = json.loads(self._p("testbed.json").read_text())
        namespaces = {ns: ns in names for ns in lay.namespaces}
        healthy = (all(links.values()) and all(namespaces.values())
                   and sshd_ok and agent_ok and description is not None)
        return {
            "name": self.name,
            "state_dir": str(self.state_dir),
            "up": healthy,
            "namespaces": namespaces,
            "links": links,
            "processes": processes,
            "sshd_accepting": sshd_ok,
            "agent_healthy": agent_ok,
            "description": description,
        }

    def _reusable(self, script: Path) -> dict | None:
        """The running lab's description if it is whole, healthy and was made
        with the same parameters and the same agent file; else None."""
        st = self.status()
        d = st["description"]
        if not st["up"] or not d:
            return None
        dut = d.get("dut") or {}
        same = (d.get("mode") == self.mode and d.get("name") == self.name
                and d.get("layout") == self._layout_record()
                and dut.get("agent_url") == self.agent_url
                and (d.get("test_link") or {}).get("mtu") == self.mtu
                and dut.get("agent_script") == str(script)
                and dut.get("agent_sha256") == _sha256(script))
        return d if same else None

    def _layout_record(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self.layout), default=str))

    # --- bring up -------------------------------------------------------------
    def up(self) -> dict:
        if os.geteuid() != 0:
            raise TestbedError(f"the {self.what} needs root (network namespaces, veth, sshd)")
        with self._lock():
            script = agent_script(self.repo_root, build=True)
            existing = self._reusable(script)
            if existing is not None:
                return dict(existing, cleared=[], created=[])
            cleared = [f"found {item} from an earlier run: removed"
                       for item in self.find_leftovers()]
            self._down_locked()
            created: list[str] = []
            try:
                self._check_prerequisites(script)
                self._check_address_conflicts()
                self._create_network(created)
                desc = self._start_services(created, script)
            except BaseException:
                # Keep the logs an error message points to; secrets go.
                with contextlib.suppress(Exception):
                    self._down_locked(keep_logs=True)
                raise
            desc["cleared"], desc["created"] = cleared, created
            tmp = self._p("testbed.json.tmp")
            tmp.write_text(json.dumps(desc, indent=2) + "\n")
            tmp.replace(self._p("testbed.json"))
            return desc

    def _check_prerequisites(self, script: Path) -> None:
        missing = [p for p in ("/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/python3")
                   if not os.access(p, os.X_OK)]
        if missing:
            raise TestbedError(f"missing {', '.join(missing)}; run `make setup`")
        if not script.is_file():
            raise TestbedError(f"the DUT agent {script} does not exist "
                               f"(nor {self.repo_root / AGENT_PYZ}, which `make agent` builds)")

    def _check_address_conflicts(self) -> None:
        """Refuse when anything in the root namespace already uses the lab's network."""
        net = self.layout.net
        for link in _ip_json(["addr", "show"]):
            for a in link.get("addr_info", []):
                if a.get("family") != "inet":
                    continue
                have = ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 32)}").network
                if have.overlaps(net):
                    raise TestbedError(
                        f"interface {link['ifname']} has {a['local']}/{a.get('prefixlen')}, which overlaps "
                        f"the {self.what}'s {net}; remove it or move the {self.what}")
        for route in _ip_json(["-4", "route", "show", "table", "all"]):
            dst = route.get("dst", "")
            if dst in ("", "default") or route.get("type") in ("broadcast", "local"):
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(dst, strict=False).overlaps(net):
                    raise TestbedError(
                        f"route {dst} via {route.get('dev', '?')} overlaps the {self.what}'s {net}; "
                        f"remove it or move the {self.what}")

    def _disable_ipv6(self, netns: str | None, iface: str) -> None:
        key = f"net.ipv6.conf.{iface}.disable_ipv6"
        if not _sysctl_available("net.ipv6.conf.all.disable_ipv6"):
            return  # kernel without IPv6
        prefix = ["ip", "netns", "exec", netns] if netns else []
        _run([*prefix, "sysctl", "-q", "-w", f"{key}=1"])

    def _create_network(self, created: list[str]) -> None:
        lay, plen = self.layout, self.layout.prefixlen
        for ns in lay.namespaces:
            _run(["ip", "netns", "add", ns])
            created.append(f"namespace {ns}")
            if _sysctl_available("net.ipv6.conf.all.disable_ipv6"):
                for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
                    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}=1"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])

        # Test links, made directly inside the namespaces so that they never
        # exist in the root namespace.
        for src in lay.sources:
            dut = lay.dut_iface(src.dut_iface)
            _run(["ip", "-n", src.netns, "link", "add", src.iface, "address", src.mac,
                  "mtu", str(self.mtu), "type", "veth", "peer", "name", dut.name,
                  "netns", lay.dut_netns, "address", dut.mac, "mtu", str(self.mtu)])
            created.append(f"veth {src.netns}/{src.iface} <-> {lay.dut_netns}/{dut.name}")
            for ns, iface, addr, peer_addr, peer_mac in (
                    (src.netns, src.iface, src.address, dut.address, dut.mac),
                    (lay.dut_netns, dut.name, dut.address, src.address, src.mac)):
                self._disable_ipv6(ns, iface)
                _run(["ip", "-n", ns, "addr", "add", f"{addr}/{plen}", "dev", iface])
                _run(["ip", "-n", ns, "link", "set", iface, "up"])
                # No ARP during a trial: both ends know each other for good.
                _run(["ip", "-n", ns, "neigh", "replace", peer_addr, "lladdr", peer_mac,
                      "dev", iface, "nud", "permanent"])

        mgmt = [(s.mgmt_root_iface, s.netns, s.mgmt_root_addr, s.mgmt_addr) for s in lay.sources]
        mgmt.append((lay.dut_mgmt_root_iface, lay.dut_netns, lay.dut_mgmt_root_addr, lay.dut_mgmt_addr))
        for root_iface, ns, root_addr, ns_addr in mgmt:
            _run(["ip", "link", "add", root_iface, "type", "veth", "peer", "name", MGMT_NS_IFACE,
                  "netns", ns])
            created.append(f"veth {root_iface} <-> {ns}/{MGMT_NS_IFACE}")
            self._disable_ipv6(None, root_iface)
            self._disable_ipv6(ns, MGMT_NS_IFACE)
            _run(["ip", "addr", "add", f"{root_addr}/30", "dev", root_iface])
            _run(["ip", "-n", ns, "addr", "add", f"{ns_addr}/30", "dev", MGMT_NS_IFACE])
            _run(["ip", "link", "set", root_iface, "up"])
            _run(["ip", "-n", ns, "link", "set", MGMT_NS_IFACE, "up"])

    @staticmethod
    def _keypair(path: Path, comment: str) -> None:
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

    def _start_sshd(self, src: SourceHost) -> tuple[subprocess.Popen, dict]:
        """sshd of one source host with its own host key, client key,
        authorized_keys and known_hosts line, all in its state subdirectory."""
        self._sp(src, "").mkdir(mode=0o700, exist_ok=True)
        host_key, client_key = self._sp(src, "ssh_host_ed25519_key"), self._sp(src, "id_ed25519")
        self._keypair(host_key, f"xdplab-host@{src.netns}")
        self._keypair(client_key, f"xdplab-controller@{src.netns}")
        authorized = self._sp(src, "authorized_keys")
        authorized.write_text(client_key.with_suffix(".pub").read_text())
        known_hosts = self._sp(src, "known_hosts")
        host_pub = host_key.with_suffix(".pub").read_text().split()
        known_hosts.write_text(f"{src.mgmt_addr} {host_pub[0]} {host_pub[1]}\n")
        sshd_config = self._sp(src, "sshd_config")
        sshd_config.write_text("\n".join([
            f"# written by xdplab.testbed; sshd of source host {src.label} ({src.netns})",
            f"ListenAddress {src.mgmt_addr}",
            f"Port {SSH_PORT}",
            "AddressFamily inet",
            f"HostKey {host_key}",
            f"PidFile {self._sp(src, 'sshd.pid')}",
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
        proc = self._spawn(self._sshd_part(src), ["ip", "netns", "exec", src.netns, "/bin/sh", "-c",
                                                  _WITHOUT_DOTFILES, "sh", _login_rc("root"),
                                                  "/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_config)],
                           self._sp(src, "sshd.log"))
        entry = {"host": src.mgmt_addr, "port": SSH_PORT, "user": "root",
                 "key_file": str(client_key), "known_hosts": str(known_hosts),
                 "python": "python3", "iface": src.iface, "address": src.address,
                 "mac": (_link(src.iface, src.netns) or {}).get("address"),
                 "dut_iface": src.dut_iface, "netns": src.netns}
        return proc, entry

    def _start_services(self, created: list[str], script: Path) -> dict:
        lay = self.layout
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation dir
        waiting = {}
        sources = []
        for src in lay.sources:
            proc, entry = self._start_sshd(src)
            created.append(f"sshd pid {proc.pid} in {src.netns}")
            waiting[self._sshd_part(src)] = (proc, self._sp(src, "sshd.log"), src.mgmt_addr)
            sources.append(entry)

        token_file = self._p("agent.token")
        token_file.unlink(missing_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        agent_state = self._p("agent")
        agent_state.mkdir(mode=0o700, exist_ok=True)
        agent_log = self._p("agent.log")
        argv = agent_argv(script, f"{lay.dut_mgmt_addr}:{self.agent_port}", token_file,
                          [d.name for d in lay.dut_ifaces], agent_state)
        agent = self._spawn("agent", ["ip", "netns", "exec", lay.dut_netns, *argv], agent_log)
        created.append(f"agent pid {agent.pid} in {lay.dut_netns}")
        waiting["agent"] = (agent, agent_log, None)

        deadline = time.monotonic() + self.ready_timeout_s
        health = None
        while waiting:
            for part, (proc, log, host) in list(waiting.items()):
                if proc.poll() is not None:
                    raise TestbedError(f"{part} exited with code {proc.returncode} while starting "
                                       f"(see {log}):\n{_tail(log)}")
                if part == "agent":
                    health = self._agent_health(timeout=1.0)
                    if health is not None:
                        del waiting[part]
                elif self._tcp_open(host, SSH_PORT, timeout=0.5):
                    del waiting[part]
            if not waiting:
                break
            if time.monotonic() > deadline:
                part, (_, log, host) = next(iter(waiting.items()))
                what = (f"answer GET {self.agent_url}/health with 200" if part == "agent"
                        else f"accept TCP on {host}:{SSH_PORT}")
                raise TestbedError(f"{part} did not {what} within {self.ready_timeout_s:.0f} s "
                                   f"(see {log}):\n{_tail(log)}")
            time.sleep(0.1)

        def mac(ns, iface):
            return (_link(iface, ns) or {}).get("address")

        first, first_dut = lay.sources[0], lay.dut_iface(lay.sources[0].dut_iface)
        return {
            "mode": self.mode,
            "name": self.name,
            # source, dut.iface and test_link: the first source, as the
            # controller reads the embedded testbed; sources and dut.ifaces: all.
            "source": {k: sources[0][k] for k in ("host", "port", "user", "key_file", "known_hosts",
                                                  "python", "netns")},
            "sources": sources,
            "dut": {"agent_url": self.agent_url, "token_file": str(token_file),
                    "iface": first.dut_iface, "netns": lay.dut_netns,
                    "ifaces": [{"name": d.name, "address": d.address, "mac": mac(lay.dut_netns, d.name)}
                               for d in lay.dut_ifaces],
                    "agent_script": str(script),
                    "agent_sha256": _sha256(script),
                    "agent": (health or {}).get("agent")},
            "test_link": {"src_iface": first.iface, "dut_iface": first.dut_iface,
                          "src_addr": first.address, "dut_addr": first_dut.address,
                          "prefixlen": lay.prefixlen, "mtu": self.mtu,
                          "src_mac": mac(first.netns, first.iface),
                          "dut_mac": mac(lay.dut_netns, first.dut_iface)},
            "layout": self._layout_record(),
            "state_dir": str(self.state_dir),
        }

    # --- logs -------------------------------------------------------------------
    def log_files(self) -> dict[str, Path]:
        """The lab's logs by the name they are copied under: agent.log, and
        sshd.log (embedded testbed) or sshd-<label>.log per source host."""
        logs = {"agent.log": self._p("agent.log")}
        for s in self.layout.sources:
            logs["sshd.log" if not s.state_subdir else f"sshd-{s.label}.log"] = self._sp(s, "sshd.log")
        return logs

    def copy_logs(self, dest: str | os.PathLike) -> list[Path]:
        """Copy the logs that exist to dest (created if missing), before
        down() removes them; returns the copies."""
        dest = Path(dest)
        copied = []
        with self._lock():
            for name, path in self.log_files().items():
                if path.is_file():
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, dest / name)
                    copied.append(dest / name)
        return copied

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

    def _down_locked(self, keep_logs: bool = False) -> list[str]:
        removed: list[str] = []
        lay = self.layout
        names = set(_netns_list())
        ours = [ns for ns in lay.namespaces if ns in names]

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

        mgmt_before = [i for i in lay.mgmt_root_ifaces if _link(i) is not None]
        for ns in ours:
            _run(["ip", "netns", "del", ns], check=False)
            removed.append(f"namespace {ns}")
        # Deleting a namespace destroys its veth ends, and so their root-
        # namespace peers, but asynchronously: wait a little, then delete
        # whatever of ours is left (only veths with our names).
        deadline = time.monotonic() + (NETNS_GONE_WAIT_S if ours else 0)
        while True:
            left = [i for i in lay.mgmt_root_ifaces if _link(i) is not None]
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

        removed.extend(self._clear_state_dir(keep_logs))
        return removed

    def _clear_state_dir(self, keep_logs: bool) -> list[str]:
        """Remove everything under the state directory (keys, host keys,
        sshd_config, known_hosts, authorized_keys, token, pid files, logs, the
        agent's state) but the directory itself, which is the lock."""
        removed = []
        for part, path in self._pidfiles.items():
            if path.exists():
                path.unlink()
                removed.append(f"pid file {path}")
        token = self._p("agent.token")
        if token.exists():
            token.unlink()
            removed.append(f"token file {token}")
        keep = {p.resolve() for p in self.log_files().values()} if keep_logs else set()
        if not self.state_dir.is_dir():
            return removed
        if self.state_dir.resolve() == Path("/") or self.state_dir.stat().st_mode & 0o077:
            # Not a private directory that up() made: remove only what we name.
            for path in [self._p(n) for n in ("testbed.json", "testbed.json.tmp")] + list(
                    set(self.log_files().values()) - keep):
                path.unlink(missing_ok=True)
            return removed
        others = 0
        for root, dirs, files in os.walk(self.state_dir, topdown=False):
            for f in files:
                path = Path(root, f)
                if path.resolve() in keep:
                    continue
                path.unlink(missing_ok=True)
                others += 1
            for d in dirs:
                with contextlib.suppress(OSError):   # not empty: it holds a kept log
                    Path(root, d).rmdir()
        if others:
            removed.append(f"{others} more files under {self.state_dir} (keys, sshd_config, "
                           f"known_hosts, logs, agent state)")
        return removed


class EmbeddedTestbed(NamespaceLab):
    """Source host and DUT as namespaces on this machine: the lab with one
    source and one DUT interface, today's names and addresses, its state in
    /run/xdplab."""

    mode = "embedded"
    what = "embedded testbed"

    def __init__(self, name: str = "xdplab", state_dir: str | os.PathLike = "/run/xdplab",
                 repo_root: str | os.PathLike = REPO_ROOT, agent_port: int = 7717,
                 src_iface: str = "xl-src0", dut_iface: str = "xl-dut0", mtu: int = 1500,
                 ready_timeout_s: float = 20.0):
        super().__init__(embedded_layout(name, src_iface, dut_iface), state_dir, repo_root=repo_root,
                         agent_port=agent_port, mtu=mtu, ready_timeout_s=ready_timeout_s)
        self.src_iface, self.dut_iface = src_iface, dut_iface
        self.src_ns, self.dut_ns = self.layout.sources[0].netns, self.layout.dut_netns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xdplab.testbed",
        description="Bring the embedded two-namespace testbed up or down, or show its status (JSON). "
                    "`down` removes everything under the state directory; --keep-logs DIR copies "
                    "the logs there first.")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default="xdplab", help="namespace prefix (default: xdplab)")
    parser.add_argument("--state-dir", default="/run/xdplab", help="runtime state (default: /run/xdplab)")
    parser.add_argument("--repo-root", default=str(REPO_ROOT),
                        help="repository holding dist/xdplab-agent.pyz (or the Makefile that builds it)")
    parser.add_argument("--mtu", type=int, default=1500, help="test link MTU (default: 1500)")
    parser.add_argument("--keep-logs", metavar="DIR", help="with down: copy agent.log and sshd.log to DIR first")
    args = parser.parse_args(argv)
    tb = EmbeddedTestbed(name=args.name, state_dir=args.state_dir, repo_root=args.repo_root, mtu=args.mtu)
    try:
        if args.action == "up":
            out = tb.up()
        elif args.action == "down":
            kept = [str(p) for p in tb.copy_logs(args.keep_logs)] if args.keep_logs else []
            out = {"removed": tb.down(), **({"logs_copied": kept} if args.keep_logs else {})}
        else:
            out = tb.status()
    except TestbedError as e:
        print(f"xdplab.testbed {args.action}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
