"""Environment manifests: what each host of a testbed runs, for the archive.

- the controller (this machine): Python, the packages of its environment, Snakemake,
  and the same host facts as a source host;
- each source host: kernel release and its BPF-related build options, CPU model and
  count, OS, Python, and for its test interface the driver, firmware and offloads
  (ethtool), collected over SSH by one standard-library Python program (HOST_FACTS),
  as the generator needs nothing else on the source either;
- the DUT: the agent's `GET /environment` (PROTOCOL.md); an agent that does not have
  it, or cannot be reached, gives an entry saying so.

Nothing here fails: a host that cannot be asked gets {"error": reason} instead of its
facts, and a fact that cannot be read is null with its reason under "unavailable".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

# Runs on a source host (any python3 >= 3.8, Linux or macOS) and on the controller.
# argv[1]: a JSON list of interface names.  Prints one JSON object.
HOST_FACTS = r"""
import gzip, json, os, platform, re, subprocess, sys
ifaces = json.loads(sys.argv[1]) if len(sys.argv) > 1 else []
out = {"hostname": platform.node(), "system": platform.system(), "machine": platform.machine(),
       "kernel": {"release": platform.release(), "version": platform.version(), "config": None},
       "os": None, "cpu": {"model": None, "count": os.cpu_count()},
       "python": {"version": sys.version.split()[0], "executable": sys.executable},
       "sysctl": {}, "tools": {}, "interfaces": {}, "unavailable": {}}
miss = out["unavailable"]

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

# The kernel's build options that decide what BPF and XDP can do.
BPF_OPTION = re.compile(r"^(CONFIG_(?:BPF|XDP|DEBUG_INFO_BTF|HAVE_EBPF_JIT|NET_CLS_BPF|NET_ACT_BPF"
                        r"|CGROUP_BPF|KPROBES|FTRACE|FUNCTION_TRACER|PAGE_POOL)\w*)=(.*)$", re.M)
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

for key in ("net/core/bpf_jit_enable", "net/core/bpf_jit_harden", "kernel/unprivileged_bpf_disabled"):
    value = read("/proc/sys/" + key)
    out["sysctl"][key.replace("/", ".")] = value
    if value is None:
        miss["sysctl." + key.replace("/", ".")] = "cannot read /proc/sys/" + key

for tool, argv in (("ethtool", ["ethtool", "--version"]), ("tcpdump", ["tcpdump", "--version"]),
                   ("ip", ["ip", "-V"])):
    code, text = run(argv)
    out["tools"][tool] = " | ".join(l.strip() for l in text.splitlines() if l.strip()) if code == 0 else None
    if code != 0:
        miss["tools." + tool] = text.strip()[:200] or "exit %s" % code

def ethtool_pairs(text, sections=False):
    # "key: value" lines; with sections, a "Heading:" line without a value (ethtool -g,
    # -l: "Pre-set maximums:", "Current hardware settings:") nests what follows it.
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

for iface in ifaces:
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
    out["interfaces"][iface] = facts
print(json.dumps(out))
"""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _facts_here(ifaces=()) -> dict:
    """HOST_FACTS run on this machine (by the running interpreter)."""
    try:
        r = subprocess.run([sys.executable, "-c", HOST_FACTS, json.dumps(list(ifaces))],
                           capture_output=True, text=True, timeout=60)
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return {"error": f"the host facts program failed here: {e}"}


def packages() -> dict:
    """{name: version} of every distribution the running interpreter can import."""
    from importlib import metadata

    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in found:
            found[name] = dist.version
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def controller() -> dict:
    """This machine: the host facts, the Python that runs the workflow and its packages."""
    import platform

    pkgs = packages()
    return {
        "role": "controller",
        "collected_utc": _now(),
        "host": _facts_here(),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable, "prefix": sys.prefix, "base_prefix": sys.base_prefix},
        "snakemake": pkgs.get("snakemake"),
        "pandas": pkgs.get("pandas"),
        "packages": pkgs,
    }


def source(src: dict, timeout_s: float = 10.0) -> dict:
    """One source host over SSH (as the trials reached it), with its test interface."""
    from . import source as sources

    entry = {"role": "source", "collected_utc": _now(), "where": sources.where(src),
             "iface": src.get("iface")}
    py = src.get("python") or "python3"
    argv = [py, "-c", HOST_FACTS, json.dumps([src["iface"]] if src.get("iface") else [])]
    try:
        paramiko, _, CommandTimedOut = sources._ssh()
        with sources.connect(src, timeout_s) as c:
            r = c.run(sources.remote_cmd(*argv), hide=True, warn=True, timeout=timeout_s * 3)
    except Exception as e:  # noqa: BLE001 - any failure becomes the entry's error
        try:
            reason = str(sources._ssh_failure(src, e, timeout_s))
        except Exception:  # noqa: BLE001
            reason = f"{sources.where(src)}: {type(e).__name__}: {e}"
        return dict(entry, error=reason)
    if r.failed:
        return dict(entry, error=f"'{py}' failed there (exit {r.exited}): {r.stderr.strip()[:300]}")
    try:
        return dict(entry, host=json.loads(r.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return dict(entry, error=f"'{py}' printed nothing readable: {r.stdout[-200:]!r}")


def dut(description: dict, timeout_s: float = 30.0) -> dict:
    """The DUT as its agent describes itself (GET /environment)."""
    from .agentclient import AgentClient, AgentError

    entry = {"role": "dut", "collected_utc": _now(), "agent_url": description.get("agent_url")}
    try:
        client = AgentClient.from_description(description, timeout_s)
        return dict(entry, environment=client.environment())
    except AgentError as e:
        if e.status == 404:
            return dict(entry, error=f"{e} (this agent has no GET /environment: an older agent)",
                        status=404)
        return dict(entry, error=str(e), status=e.status)
    except OSError as e:
        return dict(entry, error=f"cannot read the agent's token {e.filename}: {e.strerror or e}")


def _name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def testbed_hosts(testbeds: list) -> tuple[dict, dict]:
    """The distinct source hosts and DUTs of some testbed descriptions (trial.json's
    "testbed"), each under a file-name-safe key."""
    sources, duts = {}, {}
    for tb in testbeds:
        for src in tb.get("sources") or []:
            key = _name(src.get("name") or f"{src.get('host')}-{src.get('iface')}")
            sources.setdefault(key, src)
        d = tb.get("dut")
        if d and d.get("agent_url"):
            key = _name(d["agent_url"].split("//", 1)[-1])
            duts.setdefault(key, d)
    return sources, duts


def collect(testbeds: list, log=print) -> dict:
    """{"controller.json": ..., "source-<name>.json": ..., "dut-<host:port>.json": ...}."""
    found = {"controller.json": controller()}
    log(f"environment: controller (python {found['controller.json']['python']['version']}, "
        f"snakemake {found['controller.json']['snakemake']})")
    sources, duts = testbed_hosts(testbeds)
    for key, src in sources.items():
        entry = source(src)
        found[f"source-{key}.json"] = entry
        log(f"environment: source {key}: " + (entry["error"] if "error" in entry else "collected"))
    for key, d in duts.items():
        entry = dut(d)
        found[f"dut-{key}.json"] = entry
        log(f"environment: DUT {key}: " + (entry["error"] if "error" in entry else "collected"))
    return found
