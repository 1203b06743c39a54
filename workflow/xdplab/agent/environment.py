"""GET /environment: what the DUT runs, so a result says where it was measured.

Kernel release and version, its BPF-related configuration, the CPU, each
interface's driver and offloads (ethtool), and the versions of BCC, LLVM,
tcpdump, libpcap and Python.  Whatever cannot be read is null, with the reason
in "unavailable" under the field's dotted path: never an error.  Parsing is
pure (no root needed to test); gather() does the reading.
"""

import gzip
import os
import platform
import re
import sys

# BPF-related kernel options reported (prefixes end in "_" or are whole names).
CONFIG_PREFIXES = ("CONFIG_BPF", "CONFIG_XDP", "CONFIG_DEBUG_INFO_BTF")
CONFIG_NAMES = ("CONFIG_HAVE_EBPF_JIT", "CONFIG_ARCH_WANT_DEFAULT_BPF_JIT", "CONFIG_NET_CLS_BPF",
                "CONFIG_NET_ACT_BPF", "CONFIG_CGROUP_BPF", "CONFIG_LWTUNNEL_BPF",
                "CONFIG_NETFILTER_XT_MATCH_BPF", "CONFIG_IKHEADERS", "CONFIG_KPROBES",
                "CONFIG_KPROBE_EVENTS", "CONFIG_FUNCTION_ERROR_INJECTION",
                "CONFIG_PAGE_POOL", "CONFIG_NET_RX_BUSY_POLL",
                # how /proc/stat's softirq time is accounted (precise, or sampled at ticks)
                "CONFIG_IRQ_TIME_ACCOUNTING", "CONFIG_VIRT_CPU_ACCOUNTING_GEN",
                "CONFIG_TICK_CPU_ACCOUNTING", "CONFIG_HZ", "CONFIG_PREEMPT", "CONFIG_PREEMPT_RT")
CONFIG_LINE_RE = re.compile(r"^(CONFIG_\w+)=(.*)$")
CONFIG_UNSET_RE = re.compile(r"^# (CONFIG_\w+) is not set$")


def wanted_option(name):
    return name in CONFIG_NAMES or name.startswith(CONFIG_PREFIXES)


def parse_kernel_config(text):
    """{CONFIG_X: "y" | "m" | value | "n" (for "# ... is not set")} of the wanted options."""
    out = {}
    for line in text.splitlines():
        m = CONFIG_LINE_RE.match(line)
        if m:
            name, value = m.group(1), m.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
        else:
            m = CONFIG_UNSET_RE.match(line)
            if not m:
                continue
            name, value = m.group(1), "n"
        if wanted_option(name):
            out[name] = value
    return dict(sorted(out.items()))


def parse_cpuinfo(text):
    """The CPU model from /proc/cpuinfo: x86 "model name", else what other
    architectures print ("Hardware", "cpu model", "Model", "uarch")."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Hardware", "cpu model", "Model", "uarch", "cpu"):
        if fields.get(key):
            return fields[key]
    return None


def parse_ethtool_i(text):
    """`ethtool -i IF` -> {"driver", "version", "firmware", "bus"}; an empty value
    (veth reports no firmware and no bus) is None."""
    kv = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            kv[key.strip()] = value.strip()
    pick = {"driver": "driver", "version": "version", "firmware": "firmware-version",
            "bus": "bus-info"}
    return {k: (kv.get(v) or None) for k, v in pick.items()}


def parse_ethtool_k(text):
    """`ethtool -k IF` -> {feature: "on" | "off" | "on [fixed]" | ...} as ethtool
    prints them (indented sub-features included, flattened)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("Features for") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        if key.strip():
            out[key.strip()] = value.strip()
    return out


def parse_tcpdump_version(text):
    """(tcpdump, libpcap) versions from `tcpdump --version`."""
    t = re.search(r"tcpdump version (\S+)", text)
    p = re.search(r"libpcap version (\S+)", text)
    return (t.group(1) if t else None), (p.group(1) if p else None)


def llvm_from_maps(text):
    """(version, path) of the libLLVM this process has mapped (BCC links it), or None."""
    for line in text.splitlines():
        path = line.split()[-1] if line.split() else ""
        m = re.search(r"/libLLVM[-.]?([\d.]+?)(?:\.so|$)", path) or \
            re.search(r"/libLLVM\.so\.([\d.]+)$", path)
        if m:
            return m.group(1).rstrip("."), path
    return None


class Collected:
    """Values with a reason for every one that is missing."""

    def __init__(self):
        self.unavailable = {}

    def field(self, path, fn):
        """fn() -> value, or raises/returns (None, reason)."""
        try:
            value = fn()
        except Exception as e:
            self.unavailable[path] = "%s: %s" % (type(e).__name__, e)
            return None
        if isinstance(value, tuple) and len(value) == 2 and value[0] is None:
            self.unavailable[path] = value[1]
            return None
        if value is None:
            self.unavailable[path] = "not reported"
        return value


def _read(path):
    with open(path) as f:
        return f.read()


def kernel_config(release):
    """(options, source): /boot/config-<release>, else /proc/config.gz."""
    boot = "/boot/config-%s" % release
    if os.path.exists(boot):
        return parse_kernel_config(_read(boot)), boot
    if os.path.exists("/proc/config.gz"):
        with gzip.open("/proc/config.gz", "rt") as f:
            return parse_kernel_config(f.read()), "/proc/config.gz"
    return None, "neither %s nor /proc/config.gz exists" % boot


def _kernel(c):
    release = platform.release()
    cfg, source = kernel_config(release)
    return {"release": release, "version": platform.version(),
            "machine": platform.machine(),
            "config": c.field("kernel.config", lambda: (cfg, source) if cfg is None else cfg),
            "config_source": source if cfg is not None else None}


def _cpu(c):
    return {"model": c.field("cpu.model", lambda: parse_cpuinfo(_read("/proc/cpuinfo"))),
            "count": os.cpu_count(),
            "usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}


def _ethtool(run, flag, ifname):
    """(stdout, None) of `ethtool FLAG IF`, or (None, why)."""
    try:
        r = run(["ethtool", flag, ifname])
    except OSError as e:              # ethtool not installed
        return None, "ethtool: %s" % e
    if r.returncode != 0:
        return None, "ethtool %s %s: %s" % (flag, ifname, (r.stderr or r.stdout).strip()[:200])
    return r.stdout, None


def _interface(c, run, name):
    """One interface's driver facts (ethtool -i) and offloads (ethtool -k)."""
    entry = {"driver": None, "version": None, "firmware": None, "bus": None,
             "offloads": None}
    out, why = _ethtool(run, "-i", name)
    if out is None:
        for k in ("driver", "version", "firmware", "bus"):
            c.unavailable["interfaces.%s.%s" % (name, k)] = why
    else:
        entry.update(parse_ethtool_i(out))
        for k in ("driver", "version", "firmware", "bus"):
            if entry[k] is None:
                c.unavailable["interfaces.%s.%s" % (name, k)] = \
                    "ethtool -i %s reports none" % name
    out, why = _ethtool(run, "-k", name)
    if out is None:
        c.unavailable["interfaces.%s.offloads" % name] = why
    else:
        entry["offloads"] = parse_ethtool_k(out)
    return entry


def _tcpdump(c, run):
    """(tcpdump, libpcap) versions, each None with its reason in c when unknown."""
    try:
        r = run(["tcpdump", "--version"])
        tcpdump, libpcap = parse_tcpdump_version(r.stdout + r.stderr)
        why = "tcpdump --version printed no version"
    except OSError as e:
        tcpdump = libpcap = None
        why = "tcpdump: %s" % e
    if tcpdump is None:
        c.unavailable["tcpdump"] = why
    if libpcap is None:
        c.unavailable["libpcap"] = why
    return tcpdump, libpcap


def _llvm(run, llvm_maps):
    """The LLVM version BCC links: the full one when an llvm-config of the same major is
    installed, else the major from the library's name; or (None, why)."""
    found = llvm_from_maps(llvm_maps or _read("/proc/self/maps"))
    if found is None:
        return None, "importing bcc maps no libLLVM (linked statically?)"
    major, path = found
    for tool in ("llvm-config-%s" % major.split(".")[0], "llvm-config"):
        try:   # the full version, when an llvm-config of the same major is installed
            r = run([tool, "--version"])
        except OSError:
            continue
        full = r.stdout.strip()
        if r.returncode == 0 and full.split(".")[0] == major.split(".")[0]:
            return full
    return major


def gather(interfaces, bcc_version, collector, run, llvm_maps=None):
    """The /environment reply.  run(argv) -> CompletedProcess (sysstats.run_argv);
    collector: {"prog_tag", "source_sha256", ...} from the agent (prog_tag may be
    (None, reason)); llvm_maps: /proc/<pid>/maps lines of a process that imported
    bcc (the agent asks a child at start), else this process's own maps."""
    c = Collected()
    kernel, cpu = _kernel(c), _cpu(c)
    ifaces = {name: _interface(c, run, name) for name in interfaces}
    tcpdump, libpcap = _tcpdump(c, run)
    coll = dict(collector)
    if isinstance(coll.get("prog_tag"), tuple):
        c.unavailable["collector.prog_tag"] = coll["prog_tag"][1]
        coll["prog_tag"] = None
    return {"kernel": kernel, "cpu": cpu, "interfaces": ifaces,
            "bcc": c.field("bcc", lambda: bcc_version or (None, "bcc reports no version")),
            "llvm": c.field("llvm", lambda: _llvm(run, llvm_maps)),
            "tcpdump": tcpdump, "libpcap": libpcap,
            "python": platform.python_version(),
            "python_executable": sys.executable,
            "collector": coll,
            "preflight": preflight_facts(c, run, interfaces),
            "unavailable": c.unavailable}


def _sysfs_int(path):
    """An integer from /sys (an interface's mtu or speed), or (None, why): veth and other
    virtual interfaces answer EINVAL for speed, or -1."""
    from .sysstats import read_text
    try:
        text = read_text(path).strip()
    except OSError as e:
        return None, "%s: %s" % (path, e.strerror or e)
    if not text.lstrip("-").isdigit() or int(text) < 0:
        return None, "%s says %r" % (path, text)
    return int(text)


def preflight_facts(c, run, interfaces):
    """What xdplab.preflight decides on before a run (docs/preflight.md): the boot id (one
    clock?), the BPF JIT, the page size (native XDP's single-buffer limit), the CPUs the
    agent may run on, the CPU frequency governors, the clock's synchronisation as
    chronyc/pmc print it, and per interface its MTU, link speed, the XDP features its
    driver declares, its IRQs' CPUs and whether a device is behind it."""
    from . import prefacts, sysstats
    out = {"boot_id": sysstats.boot_id() or None,
           "bpf_jit_enable": c.field("preflight.bpf_jit_enable", prefacts.bpf_jit_enabled),
           "page_size": os.sysconf("SC_PAGE_SIZE"),
           "agent_cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
           "cpufreq_governors": c.field("preflight.cpufreq_governors", prefacts.cpufreq_governors),
           "clock": prefacts.clock_status(prefacts.run_quick),
           "interfaces": {}}
    for name in interfaces:
        where = "preflight.interfaces.%s." % name
        out["interfaces"][name] = {
            "mtu": c.field(where + "mtu", lambda: _sysfs_int("/sys/class/net/%s/mtu" % name)),
            "speed_mbps": c.field(where + "speed_mbps", lambda: _sysfs_int("/sys/class/net/%s/speed" % name)),
            "xdp_features": c.field(where + "xdp_features", lambda: prefacts.xdp_features(name)),
            "irqs": prefacts.interface_irqs(name),
            # a device behind it (a NIC, a VF, virtio) has a line rate; veth and other virtual
            # interfaces have none, whatever speed they report (veth says 10000)
            "physical": os.path.isdir("/sys/class/net/%s/device" % name)}
    return out
