"""The host facts the pre-flight check decides on (xdplab.preflight; /environment's
"preflight"): each interface's XDP features (generic netlink), the CPUs its IRQs run on,
the CPU frequency governors, the clock's synchronisation, the BPF JIT."""

import os
import socket
import struct
import subprocess

from .sysstats import read_text, run_argv

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
NETDEV_CMD_DEV_GET, NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES = 1, 1, 3
NLM_F_REQUEST, NLMSG_ERROR = 1, 2
# enum netdev_xdp_act (include/uapi/linux/netdev.h), bit by bit
XDP_ACT = ("basic", "redirect", "ndo-xmit", "xsk-zerocopy", "hw-offload", "rx-sg", "ndo-xmit-sg")


def _nla(kind, payload):
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _nla_parse(buf):
    out, i = {}, 0
    while i + 4 <= len(buf):
        length, kind = struct.unpack_from("HH", buf, i)
        if length < 4:
            break
        out[kind & 0x3fff] = buf[i + 4:i + length]
        i += (length + 3) & ~3
    return out


def _genl(sock, family, cmd, attrs, seq):
    """One generic netlink request and its reply's attributes; OSError for an error reply."""
    sock.send(struct.pack("IHHII", 20 + len(attrs), family, NLM_F_REQUEST, seq, 0)
              + struct.pack("BBH", cmd, 1, 0) + attrs)
    data = sock.recv(65536)
    length, kind = struct.unpack_from("IH", data)
    if kind == NLMSG_ERROR:
        err = struct.unpack_from("i", data, 16)[0]
        if err:
            raise OSError(-err, os.strerror(-err))
    return _nla_parse(data[20:length])


def xdp_features(ifname):
    """The XDP features the interface's driver declares (netlink family "netdev",
    NETDEV_A_DEV_XDP_FEATURES, Linux 6.3+): a list of names, "basic" meaning native XDP;
    or (None, why) when they cannot be read.  Asks the kernel only: nothing is attached."""
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        return None, "no interface %s" % ifname
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as s:
            s.settimeout(2.0)
            s.bind((0, 0))
            try:
                fam = _genl(s, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, _nla(CTRL_ATTR_FAMILY_NAME, b"netdev\0"), 1)
            except OSError:
                return None, ("the kernel has no netlink family netdev (Linux < 6.3): its drivers' "
                              "XDP features cannot be read without attaching")
            family = struct.unpack("H", fam[CTRL_ATTR_FAMILY_ID][:2])[0]
            dev = _genl(s, family, NETDEV_CMD_DEV_GET, _nla(NETDEV_A_DEV_IFINDEX, struct.pack("I", ifindex)), 2)
    except (OSError, KeyError, struct.error) as e:
        return None, "netlink netdev dev-get %s: %s" % (ifname, e)
    raw = dev.get(NETDEV_A_DEV_XDP_FEATURES)
    if raw is None:
        return None, "the kernel reports no xdp-features for %s" % ifname
    bits = struct.unpack("Q", raw[:8].ljust(8, b"\0"))[0]
    return [name for k, name in enumerate(XDP_ACT) if bits & (1 << k)] + \
        ["bit%d" % k for k in range(len(XDP_ACT), 64) if bits & (1 << k)]


def cpu_list(text):
    """"0-3,6" (a kernel CPU list) -> [0, 1, 2, 3, 6]."""
    cpus = []
    for part in (text or "").strip().split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus += range(int(lo), int(hi) + 1)
        elif part.strip():
            cpus.append(int(part))
    return cpus


def interface_irqs(ifname):
    """{irq: [cpus it is delivered to]} of the interface's own interrupts: the device's
    MSI vectors, its legacy IRQ, and /proc/interrupts lines naming the interface.  {} for
    a virtual interface (veth has none: its packets are processed in softirq on the
    sending CPU)."""
    irqs = set()
    dev = "/sys/class/net/%s/device" % ifname
    try:
        irqs.update(int(n) for n in os.listdir(dev + "/msi_irqs") if n.isdigit())
    except OSError:
        pass
    legacy = read_text(dev + "/irq", "").strip()
    if legacy.isdigit() and int(legacy) > 0 and not irqs:
        irqs.add(int(legacy))
    for line in read_text("/proc/interrupts", "").splitlines()[1:]:
        num, sep, rest = line.partition(":")
        if sep and num.strip().isdigit() and any(w == ifname or w.startswith(ifname + "-")
                                                 for w in rest.split()):
            irqs.add(int(num.strip()))
    out = {}
    for irq in sorted(irqs):
        text = read_text("/proc/irq/%d/effective_affinity_list" % irq, "") or \
            read_text("/proc/irq/%d/smp_affinity_list" % irq, "")
        try:
            out[str(irq)] = cpu_list(text)
        except ValueError:
            out[str(irq)] = None
    return out


def cpufreq_governors():
    """{governor: [cpus]} from /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor, or
    (None, why) where the kernel has no cpufreq (a VM, a fixed clock)."""
    base = "/sys/devices/system/cpu"
    found = {}
    try:
        names = os.listdir(base)
    except OSError as e:
        return None, str(e)
    for name in names:
        if name.startswith("cpu") and name[3:].isdigit():
            gov = read_text("%s/%s/cpufreq/scaling_governor" % (base, name), "").strip()
            if gov:
                found.setdefault(gov, []).append(int(name[3:]))
    if not found:
        return None, "no %s/cpu*/cpufreq: the kernel does not scale the CPU frequency here" % base
    return {g: sorted(c) for g, c in sorted(found.items())}


PTP4L_SOCKET = "/var/run/ptp4l"


def clock_status(run):
    """What says whether this host's clock is synchronised, as the tools print it (the
    controller parses it, xdplab.preflight): `chronyc tracking`, and `pmc GET
    TIME_STATUS_NP` when ptp4l's socket exists.  None for a tool that is not there."""
    out = {}
    for key, argv, needs in (("chronyc_tracking", ["chronyc", "tracking"], None),
                             ("pmc_time_status", ["pmc", "-u", "-b", "0", "GET TIME_STATUS_NP"], PTP4L_SOCKET)):
        if needs and not os.path.exists(needs):
            out[key] = None
            continue
        try:
            r = run(argv)
        except (OSError, subprocess.SubprocessError):
            out[key] = None
            continue
        out[key] = {"exit": r.returncode, "text": ((r.stdout or "") + (r.stderr or ""))[-4000:]}
    return out


def run_quick(argv):
    return run_argv(argv, timeout=3)


def bpf_jit_enabled():
    """net.core.bpf_jit_enable: "0", "1" or "2".  The sysctl exists in the initial network
    namespace only, so an agent in another one (the embedded testbed's) loads a
    two-instruction socket filter instead and asks the kernel whether it was JIT-compiled
    (fdinfo prog_jited): "1" or "0".  (None, why) when neither can be read."""
    text = read_text("/proc/sys/net/core/bpf_jit_enable", "").strip()
    if text:
        return text
    import ctypes as ct

    from .bpf import _sys_bpf, fdinfo

    class _ProgLoadAttr(ct.Structure):   # union bpf_attr, BPF_PROG_LOAD's first members
        _fields_ = [("prog_type", ct.c_uint32), ("insn_cnt", ct.c_uint32), ("insns", ct.c_uint64),
                    ("license", ct.c_uint64), ("log_level", ct.c_uint32), ("log_size", ct.c_uint32),
                    ("log_buf", ct.c_uint64), ("kern_version", ct.c_uint32), ("prog_flags", ct.c_uint32),
                    ("pad", ct.c_uint8 * 96)]

    insns = (ct.c_uint8 * 16)(0xb7, 0, 0, 0, 0, 0, 0, 0,     # r0 = 0
                              0x95, 0, 0, 0, 0, 0, 0, 0)     # exit
    gpl = ct.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(prog_type=1, insn_cnt=2, insns=ct.addressof(insns), license=ct.addressof(gpl))
    try:
        fd = _sys_bpf(5, attr)                                  # BPF_PROG_LOAD, a socket filter
    except OSError as e:
        return None, ("/proc/sys/net/core/bpf_jit_enable is not in this network namespace, and "
                      "loading a probe program failed: %s" % e)
    try:
        jited = fdinfo(fd).get("prog_jited")
    finally:
        os.close(fd)
    if jited is None:
        return None, "the kernel's fdinfo of a BPF program has no prog_jited"
    return "1" if jited else "0"
