"""A lab's network: its namespaces, veths, addresses and static neighbours.

Network makes them (create), tells what exists (status, leftovers) and removes
them (remove): only namespaces and veths with the layout's names, never a
foreign interface.  IPv6 is off on every interface of ours, and the two ends of
a test link know each other's MAC for good (no ARP during a trial).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from pathlib import Path

from .layout import MGMT_NS_IFACE, LabLayout
from .system import TestbedError, comm, ip_json, run

NETNS_GONE_WAIT_S = 5.0


def netns_list() -> list[str]:
    proc = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def link(name: str, netns: str | None = None) -> dict | None:
    """The `ip -j -d link show` entry of an interface, or None."""
    argv = (["-n", netns] if netns else []) + ["-d", "link", "show", "dev", name]
    links = ip_json(argv)
    return links[0] if links else None


def mac(netns: str, iface: str) -> str | None:
    return (link(iface, netns) or {}).get("address")


def _sysctl_available(key: str) -> bool:
    return Path("/proc/sys", *key.split(".")).exists()


def _disable_ipv6(netns: str | None, iface: str) -> None:
    key = f"net.ipv6.conf.{iface}.disable_ipv6"
    if not _sysctl_available("net.ipv6.conf.all.disable_ipv6"):
        return  # kernel without IPv6
    prefix = ["ip", "netns", "exec", netns] if netns else []
    run([*prefix, "sysctl", "-q", "-w", f"{key}=1"])


class Network:
    """The namespaces and veths of one layout; `what` names the lab in messages."""

    def __init__(self, layout: LabLayout, mtu: int, what: str):
        self.layout, self.mtu, self.what = layout, mtu, what

    # --- inspection -----------------------------------------------------------
    def present(self) -> list[str]:
        """The layout's namespaces that exist now."""
        names = set(netns_list())
        return [ns for ns in self.layout.namespaces if ns in names]

    def leftovers(self) -> list[str]:
        """Our namespaces and management veths that exist now."""
        found = [f"namespace {ns}" for ns in self.present()]
        found += [f"veth {iface}" for iface in self.layout.mgmt_root_ifaces if link(iface) is not None]
        return found

    def status(self) -> tuple[dict, dict]:
        """({namespace: exists}, {interface: exists}) for every one of ours."""
        names = set(netns_list())
        lay = self.layout
        links = {iface: link(iface) is not None for iface in lay.mgmt_root_ifaces}
        for s in lay.sources:
            links[f"{s.netns}/{s.iface}"] = s.netns in names and link(s.iface, s.netns) is not None
        for d in lay.dut_ifaces:
            links[f"{lay.dut_netns}/{d.name}"] = (lay.dut_netns in names
                                                  and link(d.name, lay.dut_netns) is not None)
        namespaces = {ns: ns in names for ns in lay.namespaces}
        return namespaces, links

    def processes(self, namespaces: list[str]) -> dict[int, str]:
        """Every process inside these namespaces (sshd, its sessions, the agent,
        tcpdump, generators), each with how messages name it."""
        found: dict[int, str] = {}
        for ns in namespaces:
            proc = run(["ip", "netns", "pids", ns], check=False)
            for tok in proc.stdout.split():
                if tok.isdigit():
                    pid = int(tok)
                    found[pid] = f"process {pid} ({comm(pid)}) in namespace {ns}"
        return found

    def check_address_conflicts(self) -> None:
        """Refuse when anything in the root namespace already uses the lab's network."""
        net = self.layout.net
        for lnk in ip_json(["addr", "show"]):
            for a in lnk.get("addr_info", []):
                if a.get("family") != "inet":
                    continue
                have = ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 32)}").network
                if have.overlaps(net):
                    raise TestbedError(
                        f"interface {lnk['ifname']} has {a['local']}/{a.get('prefixlen')}, which overlaps "
                        f"the {self.what}'s {net}; remove it or move the {self.what}")
        for route in ip_json(["-4", "route", "show", "table", "all"]):
            dst = route.get("dst", "")
            if dst in ("", "default") or route.get("type") in ("broadcast", "local"):
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(dst, strict=False).overlaps(net):
                    raise TestbedError(
                        f"route {dst} via {route.get('dev', '?')} overlaps the {self.what}'s {net}; "
                        f"remove it or move the {self.what}")

    # --- bring up -------------------------------------------------------------
    def create(self, created: list[str]) -> None:
        """Namespaces, test links, management veths; each made is added to created."""
        self._add_namespaces(created)
        self._add_test_links(created)
        self._add_mgmt_links(created)

    def _add_namespaces(self, created: list[str]) -> None:
        for ns in self.layout.namespaces:
            run(["ip", "netns", "add", ns])
            created.append(f"namespace {ns}")
            if _sysctl_available("net.ipv6.conf.all.disable_ipv6"):
                for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
                    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}=1"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _add_test_links(self, created: list[str]) -> None:
        # Made directly inside the namespaces so that they never exist in the
        # root namespace.
        lay, plen, mtu = self.layout, self.layout.prefixlen, str(self.mtu)
        for src in lay.sources:
            dut = lay.dut_iface(src.dut_iface)
            run(["ip", "-n", src.netns, "link", "add", src.iface, "address", src.mac,
                 "mtu", mtu, "type", "veth", "peer", "name", dut.name,
                 "netns", lay.dut_netns, "address", dut.mac, "mtu", mtu])
            created.append(f"veth {src.netns}/{src.iface} <-> {lay.dut_netns}/{dut.name}")
            for ns, iface, addr, peer_addr, peer_mac in (
                    (src.netns, src.iface, src.address, dut.address, dut.mac),
                    (lay.dut_netns, dut.name, dut.address, src.address, src.mac)):
                _disable_ipv6(ns, iface)
                run(["ip", "-n", ns, "addr", "add", f"{addr}/{plen}", "dev", iface])
                run(["ip", "-n", ns, "link", "set", iface, "up"])
                # No ARP during a trial: both ends know each other for good.
                run(["ip", "-n", ns, "neigh", "replace", peer_addr, "lladdr", peer_mac,
                     "dev", iface, "nud", "permanent"])

    def _add_mgmt_links(self, created: list[str]) -> None:
        lay = self.layout
        mgmt = [(s.mgmt_root_iface, s.netns, s.mgmt_root_addr, s.mgmt_addr) for s in lay.sources]
        mgmt.append((lay.dut_mgmt_root_iface, lay.dut_netns, lay.dut_mgmt_root_addr, lay.dut_mgmt_addr))
        for root_iface, ns, root_addr, ns_addr in mgmt:
            run(["ip", "link", "add", root_iface, "type", "veth", "peer", "name", MGMT_NS_IFACE,
                 "netns", ns])
            created.append(f"veth {root_iface} <-> {ns}/{MGMT_NS_IFACE}")
            _disable_ipv6(None, root_iface)
            _disable_ipv6(ns, MGMT_NS_IFACE)
            run(["ip", "addr", "add", f"{root_addr}/30", "dev", root_iface])
            run(["ip", "-n", ns, "addr", "add", f"{ns_addr}/30", "dev", MGMT_NS_IFACE])
            run(["ip", "link", "set", root_iface, "up"])
            run(["ip", "-n", ns, "link", "set", MGMT_NS_IFACE, "up"])

    # --- tear down -------------------------------------------------------------
    def remove(self, namespaces: list[str]) -> list[str]:
        """Delete these namespaces of ours and our management veths; what was removed."""
        removed = []
        mgmt_root_ifaces = self.layout.mgmt_root_ifaces
        mgmt_before = [i for i in mgmt_root_ifaces if link(i) is not None]
        for ns in namespaces:
            run(["ip", "netns", "del", ns], check=False)
            removed.append(f"namespace {ns}")
        # Deleting a namespace destroys its veth ends, and so their root-
        # namespace peers, but asynchronously: wait a little, then delete
        # whatever of ours is left (only veths with our names).
        deadline = time.monotonic() + (NETNS_GONE_WAIT_S if namespaces else 0)
        while True:
            left = [i for i in mgmt_root_ifaces if link(i) is not None]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for iface in left:
            lnk = link(iface)
            if lnk is None:
                continue
            kind = lnk.get("linkinfo", {}).get("info_kind")
            if kind != "veth":
                raise TestbedError(f"interface {iface} exists but is a {kind or 'non-veth'} "
                                   f"interface, not ours; refusing to delete it")
            run(["ip", "link", "del", iface], check=False)
        removed.extend(f"veth {i}" for i in mgmt_before)
        return removed
