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

The embedded testbed above is instance 0.  Instance k >= 1 (EmbeddedTestbed(instance=k))
can be up beside it: namespaces xdplab<k>-src/-dut, management veths
xl-msrc<k>/xl-mdut<k>, addresses from 10.(210+k).0.0/16 in the same pattern, MACs
02:58:4c:<k>:00:01/02, state in /run/xdplab<k>, the agent on port 7717 of its own
address (layout.instance_names).

    PYTHONPATH=workflow python -m xdplab.testbed up|down|status [--instance K]

Runs as root; needs only the standard library, iproute2, procps (sysctl)
and openssh-server.  Every command is an argv list, never a shell string.

Modules, one concern each:
    layout    names and addresses of hosts, interfaces and links (pure)
    net       namespaces, veths, addresses, static neighbours
    services  an sshd per source host, the DUT agent, their supervision
    state     the state directory: paths, pid files, lock, logs, testbed.json
    lab       NamespaceLab and EmbeddedTestbed, which hold the four above
    system    running commands, `ip -j`, /proc; TestbedError
    __main__  the command line
The waits (services.TERM_WAIT_S, KILL_WAIT_S, net.NETNS_GONE_WAIT_S) are
read from their own modules.
"""

from .lab import EmbeddedTestbed, NamespaceLab
from .layout import (DUT_ADDR, DUT_MAC, MAX_IFNAME, MAX_INSTANCE, MGMT_DUT_IFACE, MGMT_DUT_NS,
                     MGMT_DUT_ROOT, MGMT_NS_IFACE, MGMT_SRC_IFACE, MGMT_SRC_NS, MGMT_SRC_ROOT, SRC_ADDR,
                     SRC_MAC, TESTBED_NET, DutIface, InstanceNames, LabLayout, SourceHost,
                     embedded_layout, instance_names, lab_layout)
from .services import AGENT_PYZ, REPO_ROOT, SSH_PORT, agent_argv, agent_script
from .system import TestbedError

__all__ = [
    "EmbeddedTestbed", "NamespaceLab", "TestbedError",
    "LabLayout", "SourceHost", "DutIface", "lab_layout", "embedded_layout",
    "InstanceNames", "instance_names", "MAX_INSTANCE",
    "agent_script", "agent_argv",
    "REPO_ROOT", "AGENT_PYZ", "SSH_PORT", "MAX_IFNAME", "TESTBED_NET",
    "SRC_ADDR", "DUT_ADDR", "MGMT_SRC_ROOT", "MGMT_SRC_NS", "MGMT_DUT_ROOT", "MGMT_DUT_NS",
    "MGMT_SRC_IFACE", "MGMT_DUT_IFACE", "MGMT_NS_IFACE", "SRC_MAC", "DUT_MAC",
]
