"""What a host is, for the archive (``xdplab-source.pyz facts '["IFACE", ...]'``):
kernel release and its BPF-related build options, its boot id and clock synchronisation
(chronyc, pmc), CPU model and count, OS, Python,
a few sysctls and tools, and for each named interface the driver, firmware,
offloads, rings and channels (ethtool).  Runs on a source host (any python3 >= 3.8,
Linux or macOS) and on the controller; prints one JSON object.  A fact that cannot
be read is null, with its reason under "unavailable".  The controller's side is
``xdplab.hostenv``.
"""

import gzip
import json
import os
import platform
import re
import subprocess
import sys

# The kernel's build options that decide what BPF and XDP can do.
BPF_OPTION = re.compile(r"^(CONFIG_(?:BPF|XDP|DEBUG_INFO_BTF|HAVE_EBPF_JIT|NET_CLS_BPF|NET_ACT_BPF"
                        r"|CGROUP_BPF|KPROBES|FTRACE|FUNCTION_TRACER|PAGE_POOL)\w*)=(.*)$", re.M)
SYSCTLS = ("net/core/bpf_jit_enable", "net/core/bpf_jit_harden", "kernel/unprivileged_bpf_disabled")
TOOLS = (("ethtool", ["ethtool", "--version"]), ("tcpdump", ["tcpdump", "--version"]), ("ip", ["ip", "-V"]))


def run(argv):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return r.returncode, r.stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError) as e:
        return None, str(e)


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def os_and_cpu(out, miss):
    try:
        with open("/etc/os-release") as f:
            out["os"] = dict(re.findall(r'^(PRETTY_NAME|ID|VERSION_ID)="?([^"\n]*)"?', f.read(), re.M))
    except OSError as e:
        miss["os"] = str(e)
    text = read("/proc/cpuinfo")
    if text:
        m = re.search(r"^(model name|Processor|cpu model)\s*:\s*(.+)$", text, re.M)
        out["cpu"]["model"] = m.group(2).strip() if m else None
    elif out["system"] == "Darwin":
        code, text = run(["sysctl", "-n", "machdep.cpu.brand_string"])
        out["cpu"]["model"] = text.strip() if code == 0 else None
    if out["cpu"]["model"] is None:
        miss["cpu.model"] = "not in /proc/cpuinfo or sysctl"


def kernel_config(out, miss):
    for path in ("/proc/config.gz", "/boot/config-" + platform.release()):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                out["kernel"]["config"] = dict(BPF_OPTION.findall(f.read()))
            out["kernel"]["config_source"] = path
            break
        except OSError as e:
            miss["kernel.config"] = "%s: %s" % (path, e.strerror or e)
    if out["kernel"]["config"] is not None:
        miss.pop("kernel.config", None)


def sysctls_and_tools(out, miss):
    for key in SYSCTLS:
        value = read("/proc/sys/" + key)
        out["sysctl"][key.replace("/", ".")] = value
        if value is None:
            miss["sysctl." + key.replace("/", ".")] = "cannot read /proc/sys/" + key
    for tool, argv in TOOLS:
        code, text = run(argv)
        out["tools"][tool] = " | ".join(line.strip() for line in text.splitlines() if line.strip()) \
            if code == 0 else None
        if code != 0:
            miss["tools." + tool] = text.strip()[:200] or "exit %s" % code


def ethtool_pairs(text, sections=False):
    """"key: value" lines; with sections, a "Heading:" line without a value (ethtool -g,
    -l: "Pre-set maximums:", "Current hardware settings:") nests what follows it."""
    pairs, section = {}, None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key or re.match(r"(Features|Ring parameters|Channel parameters) for ", key):
            continue
        if sections and not value:
            section = pairs.setdefault(key, {})
        else:
            (section if section is not None else pairs)[key] = value
    return pairs


def interface(iface):
    facts = {"driver": None, "version": None, "firmware": None, "bus": None, "offloads": None,
             "rings": None, "channels": None, "mtu": None, "speed_mbps": None, "operstate": None,
             "unavailable": {}}
    gone = facts["unavailable"]
    sys_dir = "/sys/class/net/" + iface
    if os.path.isdir(sys_dir):
        mtu, speed = read(sys_dir + "/mtu"), read(sys_dir + "/speed")
        facts["mtu"] = int(mtu) if mtu and mtu.isdigit() else None
        facts["speed_mbps"] = int(speed) if speed and speed.lstrip("-").isdigit() else None
        facts["operstate"] = read(sys_dir + "/operstate")
        link = sys_dir + "/device/driver"
        if os.path.islink(link):
            facts["driver"] = os.path.basename(os.readlink(link))
    code, text = run(["ethtool", "-i", iface])
    if code == 0:
        info = ethtool_pairs(text)
        facts.update(driver=info.get("driver") or facts["driver"], version=info.get("version"),
                     firmware=info.get("firmware-version"), bus=info.get("bus-info"))
    else:
        gone["driver"] = "ethtool -i: " + (text.strip()[:200] or "exit %s" % code)
    for key, flag in (("offloads", "-k"), ("rings", "-g"), ("channels", "-l")):
        code, text = run(["ethtool", flag, iface])
        if code == 0:
            facts[key] = ethtool_pairs(text, sections=flag != "-k")
        else:
            gone[key] = "ethtool %s: %s" % (flag, text.strip()[:200] or "exit %s" % code)
    return facts


def collect(ifaces):
    out = {"hostname": platform.node(), "system": platform.system(), "machine": platform.machine(),
           "kernel": {"release": platform.release(), "version": platform.version(), "config": None},
           "os": None, "cpu": {"model": None, "count": os.cpu_count()},
           "python": {"version": sys.version.split()[0], "executable": sys.executable},
           "sysctl": {}, "tools": {}, "interfaces": {}, "unavailable": {}}
    miss = out["unavailable"]
    os_and_cpu(out, miss)
    kernel_config(out, miss)
    sysctls_and_tools(out, miss)
    for iface in ifaces:
        out["interfaces"][iface] = interface(iface)
    # which kernel, and whether its clock is synchronised (docs/preflight.md: the clocks)
    out["boot_id"] = read("/proc/sys/kernel/random/boot_id")
    out["clock"] = clock_status()
    return out


def main(argv):
    print(json.dumps(collect(json.loads(argv[0]) if argv else [])))
    return 0


# -- before a run (preflight.py puts them under "facts"; xdplab.preflight decides) ----------

PTP4L_SOCKET = "/var/run/ptp4l"


def _sys_int(path):
    """An integer from /sys (mtu, speed), or None: veth answers EINVAL for speed, or -1."""
    text = read(path)
    return int(text) if text and text.isdigit() else None


def neighbour(system, iface, dut):
    """The neighbour (ARP) entry for the DUT's address on the test interface:
    {"state", "lladdr", "said"}, state as the kernel names it (REACHABLE, STALE, FAILED,
    INCOMPLETE, ...; "none" without an entry)."""
    if system == "Darwin":
        code, text = run(["arp", "-n", dut])
        m = re.search(r"at ([0-9a-f:]{11,17})", text or "")
        return {"state": "REACHABLE" if m else "none", "lladdr": m.group(1) if m else None,
                "said": (text or "").strip()[:200]}
    code, text = run(["ip", "-j", "neigh", "show", "to", dut, "dev", iface])
    if code != 0:
        return {"state": None, "lladdr": None, "said": (text or "").strip()[:200]}
    try:
        entries = json.loads(text or "[]")
    except ValueError:
        return {"state": None, "lladdr": None, "said": (text or "").strip()[:200]}
    if not entries:
        return {"state": "none", "lladdr": None, "said": "no entry"}
    e = entries[0]
    state = e.get("state") or []
    return {"state": "/".join(state) if isinstance(state, list) else str(state), "lladdr": e.get("lladdr"),
            "said": ""}


def clock_status():
    """`chronyc tracking`, and `pmc GET TIME_STATUS_NP` when ptp4l's socket exists, as
    they print it (the controller parses it); None for a tool that is not there."""
    out = {}
    for key, argv, needs in (("chronyc_tracking", ["chronyc", "tracking"], None),
                             ("pmc_time_status", ["pmc", "-u", "-b", "0", "GET TIME_STATUS_NP"], PTP4L_SOCKET)):
        if needs and not os.path.exists(needs):
            out[key] = None
            continue
        code, text = run(argv)
        out[key] = None if code is None else {"exit": code, "text": text[-4000:]}
    return out


def preflight_facts(system, iface, dut):
    """What the pre-flight check decides on for a source: one kernel with the DUT (boot
    id)?, root (AF_PACKET, trafgen), the test interface's MTU and link speed, the DUT's
    neighbour entry, the clock's synchronisation, whether trafgen is installed."""
    import shutil

    sys_dir = "/sys/class/net/" + iface
    return {"boot_id": read("/proc/sys/kernel/random/boot_id"),
            "euid": os.geteuid() if hasattr(os, "geteuid") else None,
            "mtu": _sys_int(sys_dir + "/mtu"), "speed_mbps": _sys_int(sys_dir + "/speed"),
            # a device behind it has a line rate; veth has none, whatever speed it says
            "physical": os.path.isdir(sys_dir + "/device") if os.path.isdir(sys_dir) else None,
            "neighbour": neighbour(system, iface, dut) if dut else None,
            "clock": clock_status(),
            "trafgen": shutil.which("trafgen")}
