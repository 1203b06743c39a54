"""NamespaceLab, the lab as one thing: it holds a layout, its network, its
services and its state directory, and brings them up, reports on them and
takes them down in order.  EmbeddedTestbed is the lab `make run` uses."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .layout import LabLayout, embedded_layout, instance_names
from .net import Network, mac
from .services import AGENT_PYZ, REPO_ROOT, Services, agent_script
from .state import StateDir
from .system import TestbedError, sha256


# How long a running agent has to answer /health before a testbed up is not reused.
REUSE_HEALTH_TIMEOUT_S = 5.0


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
        self.state = StateDir(self.state_dir, layout)
        self.net = Network(layout, self.mtu, self.what)
        self.services = Services(layout, self.state, self.agent_port, self.ready_timeout_s)

    @property
    def agent_script(self) -> Path:
        """The file the agent is started from (without building it)."""
        return agent_script(self.repo_root, build=False)

    @property
    def agent_url(self) -> str:
        return self.services.agent_url

    # --- inspection -----------------------------------------------------------
    def find_leftovers(self) -> list[str]:
        """Everything of ours that exists now: namespaces, management veths,
        pid files (with whether their process still runs)."""
        return self.net.leftovers() + self.services.leftovers()

    def status(self, health_timeout_s: float = 1.0) -> dict:
        namespaces, links = self.net.status()
        processes = self.services.processes()
        sshd_ok = self.services.sshd_accepting(processes)
        agent_ok = (processes["agent"]["running"]
                    and self.services.agent_health(timeout=health_timeout_s) is not None)
        description = self.state.read_description()
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
        with the same parameters and the same agent file; else None.  An agent whose
        process runs gets REUSE_HEALTH_TIMEOUT_S to answer: one busy for a moment (a slow
        machine, a compile in its child) is not a reason to tear down a testbed in use."""
        st = self.status(health_timeout_s=REUSE_HEALTH_TIMEOUT_S)
        d = st["description"]
        if not st["up"] or not d:
            return None
        dut = d.get("dut") or {}
        same = (d.get("mode") == self.mode and d.get("name") == self.name
                and d.get("layout") == self.layout.record()
                and dut.get("agent_url") == self.agent_url
                and (d.get("test_link") or {}).get("mtu") == self.mtu
                and dut.get("agent_script") == str(script)
                and dut.get("agent_sha256") == sha256(script))
        return d if same else None

    # --- bring up -------------------------------------------------------------
    def up(self) -> dict:
        """Bring the lab up, or reuse it when it is up as asked; its description
        (testbed.json) with what was cleared and created."""
        if os.geteuid() != 0:
            raise TestbedError(f"the {self.what} needs root (network namespaces, veth, sshd)")
        with self.state.lock():
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
                self.net.check_address_conflicts()
                self.net.create(created)
                sources, health = self.services.start(created, script)
                desc = self._describe(sources, health, script)
            except BaseException:
                # Keep the logs an error message points to; secrets go.
                with contextlib.suppress(Exception):
                    self._down_locked(keep_logs=True)
                raise
            desc["cleared"], desc["created"] = cleared, created
            self.state.write_description(desc)
            return desc

    def _check_prerequisites(self, script: Path) -> None:
        missing = [p for p in ("/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/python3")
                   if not os.access(p, os.X_OK)]
        if missing:
            raise TestbedError(f"missing {', '.join(missing)}; run `make setup`")
        if not script.is_file():
            raise TestbedError(f"the DUT agent {script} does not exist "
                               f"(nor {self.repo_root / AGENT_PYZ}, which `make agent` builds)")

    def _describe(self, sources: list[dict], health: dict | None, script: Path) -> dict:
        """The lab's description (testbed.json) once its services answer."""
        lay = self.layout
        first, first_dut = lay.sources[0], lay.dut_iface(lay.sources[0].dut_iface)
        return {
            "mode": self.mode,
            "name": self.name,
            # source, dut.iface and test_link: the first source, as the
            # controller reads the embedded testbed; sources and dut.ifaces: all.
            "source": {k: sources[0][k] for k in ("host", "port", "user", "key_file", "known_hosts",
                                                  "python", "netns")},
            "sources": sources,
            "dut": {"agent_url": self.agent_url, "token_file": str(self.state.token_file),
                    "iface": first.dut_iface, "netns": lay.dut_netns,
                    "ifaces": [{"name": d.name, "address": d.address, "mac": mac(lay.dut_netns, d.name)}
                               for d in lay.dut_ifaces],
                    "agent_script": str(script),
                    "agent_sha256": sha256(script),
                    "agent": (health or {}).get("agent")},
            "test_link": {"src_iface": first.iface, "dut_iface": first.dut_iface,
                          "src_addr": first.address, "dut_addr": first_dut.address,
                          "prefixlen": lay.prefixlen, "mtu": self.mtu,
                          "src_mac": mac(first.netns, first.iface),
                          "dut_mac": mac(lay.dut_netns, first.dut_iface)},
            "layout": self.layout.record(),
            "state_dir": str(self.state_dir),
        }

    # --- logs -------------------------------------------------------------------
    def log_files(self) -> dict[str, Path]:
        """The lab's logs by the name they are copied under: agent.log, and
        sshd.log (embedded testbed) or sshd-<label>.log per source host."""
        return self.state.log_files()

    def copy_logs(self, dest: str | os.PathLike) -> list[Path]:
        """Copy the logs that exist to dest (created if missing), before
        down() removes them; returns the copies."""
        return self.state.copy_logs(dest)

    # --- tear down -------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove everything of ours; what was removed, in order."""
        with self.state.lock():
            return self._down_locked()

    def _down_locked(self, keep_logs: bool = False) -> list[str]:
        # Processes first (those in our namespaces, then recorded ones that may
        # live in a namespace already deleted by hand), then the network, then
        # the files.
        removed: list[str] = []
        ours = self.net.present()
        targets = self.net.processes(ours)
        targets.update(self.services.recorded(skip=targets))
        if targets:
            self.services.kill(list(targets), removed, targets)
        self.services.reap()
        removed.extend(self.net.remove(ours))
        removed.extend(self.state.clear(keep_logs))
        return removed


class EmbeddedTestbed(NamespaceLab):
    """Source host and DUT as namespaces on this machine: the lab with one
    source and one DUT interface.  Instance 0 (the default) has today's names
    and addresses and its state in /run/xdplab; instance k >= 1 has its own
    namespaces, management veths, network, MACs and state directory
    (layout.instance_names), so that several instances are up at the same time
    and each one's up, down and status touch only its own."""

    mode = "embedded"
    what = "embedded testbed"

    def __init__(self, name: str | None = None, state_dir: str | os.PathLike | None = None,
                 repo_root: str | os.PathLike = REPO_ROOT, agent_port: int = 7717,
                 src_iface: str = "xl-src0", dut_iface: str = "xl-dut0", mtu: int = 1500,
                 ready_timeout_s: float = 20.0, instance: int = 0):
        names = instance_names(instance)
        super().__init__(embedded_layout(name, src_iface, dut_iface, instance),
                         names.state_dir if state_dir is None else state_dir, repo_root=repo_root,
                         agent_port=agent_port, mtu=mtu, ready_timeout_s=ready_timeout_s)
        self.instance = instance
        self.src_iface, self.dut_iface = src_iface, dut_iface
        self.src_ns, self.dut_ns = self.layout.sources[0].netns, self.layout.dut_netns
