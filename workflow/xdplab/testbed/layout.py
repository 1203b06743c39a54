"""A lab's layout: the names and addresses of its hosts, interfaces and links.

Pure: nothing here touches the machine.  lab_layout() makes N source hosts and
one DUT with N test interfaces; embedded_layout() is the embedded testbed (N = 1):
instance 0 with today's names and addresses, instance k >= 1 with its own
(instance_names), so that several can be up on one machine at the same time.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json

# The embedded testbed's names and addresses (tests and PROTOCOL.md use them).
TESTBED_NET = ipaddress.ip_network("10.201.0.0/16")
SRC_ADDR, DUT_ADDR = "10.201.0.1", "10.201.0.2"
MGMT_SRC_ROOT, MGMT_SRC_NS = "10.201.1.1", "10.201.1.2"
MGMT_DUT_ROOT, MGMT_DUT_NS = "10.201.2.1", "10.201.2.2"
MGMT_SRC_IFACE, MGMT_DUT_IFACE = "xl-msrc", "xl-mdut"   # root-namespace ends
MGMT_NS_IFACE = "mgmt0"                                # end inside each namespace
# Locally administered, fixed MACs: the static neighbour entries and any pcap
# read the same addresses on every run.  Source i: 02:58:4c:00:<i>:01, its DUT
# interface 02:58:4c:00:<i>:02 (instance k of the embedded testbed: 02:58:4c:<k>:...).
SRC_MAC, DUT_MAC = "02:58:4c:00:00:01", "02:58:4c:00:00:02"
MAX_IFNAME = 15      # IFNAMSIZ - 1

# Instance k >= 1 of the embedded testbed takes 10.(210+k).0.0/16: clear of the
# embedded testbed's 10.201/16 and of the tests' 10.202/16 (test_agent), 10.203/16
# (test_generator_net, bench_generator) and 10.204/16 (labnet).
MAX_INSTANCE = 32
_INSTANCE_NET_BASE = 210


def _check_ifname(name: str) -> None:
    if not 0 < len(name) <= MAX_IFNAME or "/" in name or " " in name:
        raise ValueError(f"bad interface name {name!r} (1..{MAX_IFNAME} characters, no '/' or space)")


@dataclasses.dataclass(frozen=True)
class SourceHost:
    """One source host: its namespace, management veth and test interface."""
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

    @property
    def sshd_part(self) -> str:
        """Its sshd's name in pid files, status and messages: "sshd" (embedded
        testbed) or "sshd-<label>"."""
        return "sshd" if not self.state_subdir else f"sshd-{self.label}"


@dataclasses.dataclass(frozen=True)
class DutIface:
    """One test interface of the DUT: its end of one source's test link."""
    name: str
    address: str
    mac: str


@dataclasses.dataclass(frozen=True)
class LabLayout:
    """A whole lab: its sources, the DUT's namespace, management veth and test
    interfaces, and the network every address is taken from."""
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

    def record(self) -> dict:
        """The layout as JSON values, the network as a string (testbed.json "layout")."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def _nth(net: ipaddress.IPv4Network, third: int, fourth: int) -> str:
    return str(net.network_address + third * 256 + fourth)


def lab_layout(name: str, sources: int = 2, net: str = "10.204.0.0/16",
               root_prefix: str | None = None, src_ifaces: list[str] | None = None,
               dut_ifaces: list[str] | None = None, dut_iface_of: list[int] | None = None,
               labels: dict | None = None, state_subdirs: list[str] | None = None,
               mgmt_root_ifaces: list[str] | None = None,
               dut_mgmt_root_iface: str | None = None, mac_base: int = 0) -> LabLayout:
    """N sources and one DUT with N test interfaces.  Source i has namespace
    <name>-src<i>, test interface xl-src<i> and is joined to DUT interface
    dut_iface_of[i] (default i) of <name>-dut; root-namespace ends of the
    management veths are <root_prefix>m<i> and <root_prefix>md (root_prefix
    defaults to <name>-).  MACs: source i 02:58:4c:<mac_base>:<i>:01, its DUT
    interface ...:02."""
    network = ipaddress.ip_network(net)
    if network.prefixlen > 16 or not 1 <= sources <= 64 or not 0 <= mac_base <= 255:
        raise ValueError(f"a lab needs a /16 or larger, 1..64 sources and a mac_base in 0..255 "
                         f"(got {net}, {sources}, {mac_base})")
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
            iface=src_ifaces[i], address=_nth(network, 0, 4 * i + 1), mac=f"02:58:4c:{mac_base:02x}:{i:02x}:01",
            dut_iface=dut_names[j], state_subdir=subdirs[i]))
        duts[j] = DutIface(dut_names[j], _nth(network, 0, 4 * i + 2), f"02:58:4c:{mac_base:02x}:{i:02x}:02")
    return LabLayout(
        name=name, net=network, sources=tuple(hosts), dut_netns=f"{name}-dut",
        dut_mgmt_root_iface=dut_mgmt_root_iface or f"{root_prefix}md",
        dut_mgmt_root_addr=_nth(network, 2, 1), dut_mgmt_addr=_nth(network, 2, 2),
        dut_ifaces=tuple(duts[j] for j in sorted(duts)))


def _check_instance(instance: int) -> int:
    if isinstance(instance, bool) or not isinstance(instance, int) or not 0 <= instance <= MAX_INSTANCE:
        raise ValueError(f"embedded testbed instance {instance!r} is outside 0..{MAX_INSTANCE}")
    return instance


@dataclasses.dataclass(frozen=True)
class InstanceNames:
    """What sets instance k of the embedded testbed apart from the others."""
    name: str                   # namespaces <name>-src and <name>-dut
    net: str                    # every address of the instance
    mgmt_src_iface: str         # root-namespace ends of the management veths
    mgmt_dut_iface: str
    state_dir: str
    mac_base: int               # fourth byte of the test link's MACs


def instance_names(instance: int = 0) -> InstanceNames:
    """Instance 0 is today's embedded testbed (xdplab-src/-dut, xl-msrc/xl-mdut,
    10.201.0.0/16, /run/xdplab); instance k >= 1 is xdplab<k>-src/-dut,
    xl-msrc<k>/xl-mdut<k>, 10.(210+k).0.0/16, /run/xdplab<k>, MACs 02:58:4c:<k>:...
    Inside their namespaces every instance has the same interface names
    (xl-src0, xl-dut0, mgmt0): the test link is made inside the namespaces and
    a management veth's inner end directly in its namespace, so no instance's
    name ever exists in the root namespace but its xl-m* ends."""
    k = _check_instance(instance)
    if k == 0:
        return InstanceNames("xdplab", str(TESTBED_NET), MGMT_SRC_IFACE, MGMT_DUT_IFACE, "/run/xdplab", 0)
    return InstanceNames(f"xdplab{k}", f"10.{_INSTANCE_NET_BASE + k}.0.0/16", f"{MGMT_SRC_IFACE}{k}",
                         f"{MGMT_DUT_IFACE}{k}", f"/run/xdplab{k}", k)


def embedded_layout(name: str | None = None, src_iface: str = "xl-src0",
                    dut_iface: str = "xl-dut0", instance: int = 0) -> LabLayout:
    """The embedded testbed: <name>-src and <name>-dut, its files directly in the
    state directory; names (unless `name` is given), addresses, management veths
    and MACs of `instance` (instance_names; instance 0 is today's testbed)."""
    k = instance_names(instance)
    return lab_layout(k.name if name is None else name, 1, k.net, src_ifaces=[src_iface],
                      dut_ifaces=[dut_iface], labels={0: "src"}, state_subdirs=[""],
                      mgmt_root_ifaces=[k.mgmt_src_iface], dut_mgmt_root_iface=k.mgmt_dut_iface,
                      mac_base=k.mac_base)
