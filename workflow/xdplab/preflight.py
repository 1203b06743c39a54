"""The pre-flight check (docs/preflight.md): before a run's first trial, every host is
checked for what would make its numbers meaningless, and everything wrong is said at once.

Pure decisions on facts the hosts already report: the DUT agent's `GET /health` and the
"preflight" block of its `GET /environment` (agent/environment.preflight_facts), and each
source's pre-flight program (sourcehost/preflight.py, its "facts":
sourcehost/facts.preflight_facts).  `decide` returns the problems (the run is refused),
the reports (said and recorded, not refused) and the clock decision (whether one-way
latency can be reported, and with what error).  `check` gathers the facts from a
connectivity check's findings, decides, writes the record (results/<experiment>/
preflight.json) and raises Refused naming every problem.
"""

from __future__ import annotations

import time

from .clocks import clock_decision
# Bytes on the wire per packet besides the UDP payload (IPv4 and UDP headers 28, Ethernet
# header and FCS 18; preamble, start of frame and inter-frame gap 20), defined once there.
from .frames import ETH_HLEN, IPV4_UDP_BYTES, frame_bytes  # noqa: F401  (frame_bytes: read here)
from .frames import l1_bits_per_s as wire_bits_per_s  # line time a rate takes, bits/s
# Native XDP without multi-buffer support (the collector is single-buffer) needs a frame
# in one page after the XDP headroom (256 bytes) and the skb_shared_info the driver keeps
# at the page's end (320 bytes on 64-bit): at 4 KiB pages an MTU of at most 3506 (veth's
# exact bound; other drivers' bounds are the same or lower, and the arm step names a
# driver's own refusal).
XDP_HEADROOM_BYTES = 256
SKB_SHARED_INFO_BYTES = 320
ETH_HEADER_BYTES = ETH_HLEN  # 14
# Neighbour states in which the kernel has the DUT's MAC address.
NEIGH_RESOLVED = ("REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP")

RECORD_FILE = "preflight.json"


def record_path(settings: dict) -> str:
    """Where a run's pre-flight record goes: results/<experiment>/preflight.json."""
    return f"results/{settings['experiment']}/{RECORD_FILE}"


class Refused(Exception):
    """The pre-flight check refused the run; str() names every problem."""


# -- what the run asks for ------------------------------------------------------------

def run_settings(settings: dict) -> dict:
    """What of the validated configuration the pre-flight checks against, every trial of
    the run together (lists for the grid's dimensions)."""
    from . import trials

    def as_list(v):
        return list(v) if isinstance(v, (list, tuple)) else [v]

    programs = as_list(settings.get("program") or ["collector"])
    collectors = as_list(settings.get("collector") or ["features"])
    # xdplab attaches a program unless every trial runs none (collector off, no program of
    # the user's) or observes one the user attached
    attaches = any(trials.program_kind(p) in ("source", "object") for p in programs) or \
        ("collector" in [trials.program_kind(p) for p in programs] and any(c != "off" for c in collectors))
    return {"xdp_mode": as_list(settings.get("xdp_mode") or ["native"]), "attaches": bool(attaches),
            "packet_size": sorted(as_list(settings.get("packet_size"))),
            "target_pps": sorted(as_list(settings.get("target_pps"))),
            "send_path": settings.get("send_path", "auto"), "generator": settings.get("generator", "python"),
            "ndr_max_pps": settings.get("ndr_max_pps")}


# -- arithmetic ----------------------------------------------------------------------

def xdp_single_buffer_mtu(page_size: int) -> int:
    """The largest MTU whose frames fit one buffer of native XDP (see the constants)."""
    return page_size - XDP_HEADROOM_BYTES - SKB_SHARED_INFO_BYTES - ETH_HEADER_BYTES


def _mbps(bits: float) -> str:
    return f"{bits / 1e6:,.1f} Mbit/s"


# -- the DUT --------------------------------------------------------------------------

def check_dut(dut: dict, run: dict, offered: dict) -> tuple[list[str], list[str]]:
    """(problems, reports) for the DUT.  `dut`: {"where", "interfaces": {if: {"mtu",
    "speed_mbps", "xdp_features" (list, or None when unknown), "xdp_features_unavailable",
    "offloads" (ethtool -k), "irqs": {irq: [cpus]}}}, "bpf_jit_enable", "page_size",
    "agent_cpus", "cpufreq_governors", "governors_unavailable"}; `offered`: {if: the
    highest rate in pps any trial offers to it}."""
    problems, reports = [], []
    where = dut.get("where") or "DUT"
    native = "native" in run["xdp_mode"] and run["attaches"]
    generic = "generic" in run["xdp_mode"] and run["attaches"]
    biggest = max(run["packet_size"]) if run["packet_size"] else None
    page = dut.get("page_size") or 4096
    for name, f in sorted((dut.get("interfaces") or {}).items()):
        at = f"{where}, interface {name}"
        feats = f.get("xdp_features")
        if native:
            if feats is None:
                reports.append(f"{at}: whether its driver has native XDP is unknown "
                               f"({f.get('xdp_features_unavailable') or 'not reported'}); the arm step "
                               f"attaches in native mode only (no fallback) and names a refusal")
            elif "basic" not in feats:
                problems.append(f"{at}: its driver ({f.get('driver') or 'unknown'}) has no native XDP "
                                f"(xdp-features: {', '.join(feats) or 'none'}), and xdp_mode native was "
                                f"asked; xdplab never falls back to generic silently: ask for "
                                f"xdp_mode: generic to measure it in skb mode")
            else:
                reports.append(f"{at}: native XDP ({f.get('driver') or 'driver unknown'}; "
                               f"xdp-features {', '.join(feats)})")
        mtu = f.get("mtu")
        if mtu and biggest is not None and biggest + IPV4_UDP_BYTES > mtu:
            too_big = [p for p in run["packet_size"] if p + IPV4_UDP_BYTES > mtu]
            problems.append(f"{at}: packet_size {', '.join(map(str, too_big))} B makes IPv4 packets of "
                            f"{too_big[-1] + IPV4_UDP_BYTES} B, above its MTU {mtu} B (payload at most "
                            f"{mtu - IPV4_UDP_BYTES} B)")
        if native and mtu and feats is not None and "basic" in feats \
                and mtu > xdp_single_buffer_mtu(page):
            problems.append(f"{at}: MTU {mtu} B is above native XDP's single-buffer limit "
                            f"{xdp_single_buffer_mtu(page)} B ({page}-byte pages; the collector is not "
                            f"multi-buffer): lower the MTU or use xdp_mode: generic")
        speed = f.get("speed_mbps") if f.get("physical") is not False else None
        rate = offered.get(name)
        if speed and rate and biggest is not None:
            worst = max(wire_bits_per_s(rate, p) for p in run["packet_size"])
            if worst > speed * 1e6:
                problems.append(f"{at}: {rate:,} pps of the largest packets take {_mbps(worst)} on the "
                                f"wire, above its line rate {speed:,} Mbit/s")
        elif rate and not speed:
            reports.append(f"{at}: {_no_line_rate(f)}: line rate not checked")
        p, r = _offloads(at, f.get("offloads"), native, generic)
        problems += p
        reports += r
        reports.append(_irq_report(at, f.get("irqs") or {}, set(dut.get("agent_cpus") or [])))
    p, r = _check_dut_host(dut, where)
    return problems + p, reports + r


def _irq_report(at: str, irqs: dict, agent_cpus: set) -> str:
    """Where an interface's IRQs are handled, and whether they share the agent's CPUs."""
    if not irqs:
        return (f"{at}: no IRQs of its own (a virtual interface: its packets are "
                f"processed in softirq on the sending CPU)")
    on = {c for cs in irqs.values() for c in (cs or [])}
    shared = sorted(on & agent_cpus)
    return (f"{at}: IRQs {', '.join(sorted(irqs, key=int))} on CPUs {_cpus(on)}" +
            (f": sharing CPUs {_cpus(shared)} with the agent (which reads the ring buffer)"
             if shared else ": none shared with the agent's CPUs"))


def _check_dut_host(dut: dict, where: str) -> tuple[list[str], list[str]]:
    """(problems, reports) of the DUT as a whole: the BPF JIT, the CPU frequency governors."""
    problems, reports = [], []
    jit = dut.get("bpf_jit_enable")
    if jit == "0":
        problems.append(f"{where}: the BPF JIT is off (net.core.bpf_jit_enable = 0): XDP programs run "
                        f"in the interpreter, and their cost is not what a deployment sees; "
                        f"`sysctl -w net.core.bpf_jit_enable=1` on the DUT")
    elif jit == "2":
        reports.append(f"{where}: BPF JIT on, with its debug output (net.core.bpf_jit_enable = 2)")
    elif jit == "1":
        reports.append(f"{where}: BPF JIT on")
    else:
        reports.append(f"{where}: whether the BPF JIT is on is unknown (net.core.bpf_jit_enable unreadable)")
    govs = dut.get("cpufreq_governors")
    if govs:
        text = "; ".join(f"{g} on CPUs {_cpus(c)}" for g, c in sorted(govs.items()))
        varying = [g for g in govs if g != "performance"]
        reports.append(f"{where}: CPU frequency governor {text}" +
                       (" (the clock varies with load: rates and costs vary with it)" if varying else ""))
    else:
        reports.append(f"{where}: no CPU frequency governor ({dut.get('governors_unavailable') or 'none'})")
    return problems, reports


# ethtool -k features that change the frames XDP sees
LRO, GRO_HW = "large-receive-offload", "rx-gro-hw"
GRO_UDP = ("rx-gro-list", "rx-udp-gro-forwarding")


def _on(offloads: dict, name: str) -> bool:
    return str(offloads.get(name, "")).split(" ")[0] == "on"


def _offloads(at: str, offloads: dict | None, native: bool, generic: bool) -> tuple[list, list]:
    """LRO and hardware GRO merge frames on the NIC, before any XDP: refused with native
    mode (where many drivers also refuse to attach).  Generic XDP runs after GRO:
    rx-gro-list and rx-udp-gro-forwarding merge UDP datagrams before it (refused with
    generic mode).  VLAN stripping, FCS and bad frames kept change what XDP sees: reported."""
    if offloads is None:
        return [], [f"{at}: its offloads are unknown (ethtool -k failed)"]
    problems, reports = [], []
    for name in (LRO, GRO_HW):
        if _on(offloads, name) and (native or generic):
            problems.append(f"{at}: {name} is on: the NIC merges frames before XDP sees them "
                            f"(`ethtool -K {at.rsplit(' ', 1)[-1]} {'lro' if name == LRO else 'rx-gro-hw'} off`)")
    for name in GRO_UDP:
        if _on(offloads, name):
            (problems if generic else reports).append(
                f"{at}: {name} is on: UDP datagrams are merged by GRO, after native XDP but before "
                f"generic XDP" + (" (xdp_mode generic was asked)" if generic else ""))
    on = [n for n in ("generic-receive-offload", "rx-vlan-offload", "rx-fcs", "rx-all") if _on(offloads, n)]
    if on:
        reports.append(f"{at}: offloads on: {', '.join(on)} (GRO runs after native XDP; VLAN stripping, "
                       f"FCS and bad frames kept change what XDP sees of tagged, or broken, frames)")
    return problems, reports


def _no_line_rate(f: dict) -> str:
    if f.get("physical") is False:
        said = f" (it reports {f['speed_mbps']:,} Mbit/s)" if f.get("speed_mbps") else ""
        return f"no line rate: a virtual interface with no device behind it, e.g. veth{said}"
    return "no link speed reported"


def _cpus(cpus) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    cpus, out = sorted(set(cpus)), []
    for c in cpus:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out) or "none"


# -- the sources ----------------------------------------------------------------------

def auto_send_path(system: str, euid, dut_mac) -> tuple[str, str]:
    """What `send_path: auto` will take on a source, as the pre-flight sees it: the packet
    path on Linux as root with the DUT's MAC known, the UDP socket otherwise.  The
    generator decides for itself (sourcehost/cli.resolve_auto: an AF_PACKET socket that
    opens, also with CAP_NET_RAW without root) and records what it took."""
    if system != "Linux":
        return "udp", f"{system}: no AF_PACKET"
    if euid not in (0, None):
        return "udp", f"uid {euid}, not root: no AF_PACKET socket"
    if not dut_mac:
        return "udp", "the DUT interface's MAC is not known"
    return "packet", "Linux, root, the DUT interface's MAC known"


def check_source(src: dict, run: dict, pps: int) -> tuple[list[str], list[str]]:
    """(problems, reports) for one source.  `src`: {"where", "system", "iface", "dut_iface",
    "dut_address", "dut_mac", "facts": {"euid", "mtu", "speed_mbps", "neighbour":
    {"state", "lladdr"}, "trafgen"}}; `pps`: the highest rate it is asked to send."""
    problems, reports = [], []
    where, f = src.get("where") or "source", src.get("facts") or {}
    iface = src.get("iface")
    system = src.get("system") or "unknown"
    send_path = run["send_path"]
    if send_path == "auto" and run["generator"] != "trafgen":
        send_path, why = auto_send_path(system, f.get("euid"), src.get("dut_mac"))
        reports.append(f"{where}: send_path auto: the generator will send with {send_path} ({why})")
    raw = send_path == "packet" or run["generator"] == "trafgen"
    path = "generator trafgen" if run["generator"] == "trafgen" else f"send_path {send_path}"
    if raw and system != "Linux":
        problems.append(f"{where}: {path} needs Linux (AF_PACKET); this host runs {system}, which "
                        f"sends with send_path udp only")
    elif raw and f.get("euid") not in (0, None):
        problems.append(f"{where}: {path} needs root there (AF_PACKET sockets need CAP_NET_RAW); "
                        f"the SSH user has uid {f.get('euid')}")
    if run["generator"] == "trafgen" and system == "Linux" and "trafgen" in f and not f.get("trafgen"):
        problems.append(f"{where}: generator trafgen: trafgen (netsniff-ng) is not installed there")
    mtu = f.get("mtu")
    if mtu and run["packet_size"]:
        too_big = [p for p in run["packet_size"] if p + IPV4_UDP_BYTES > mtu]
        if too_big:
            problems.append(f"{where}, interface {iface}: packet_size {', '.join(map(str, too_big))} B "
                            f"above its MTU {mtu} B (payload at most {mtu - IPV4_UDP_BYTES} B)")
    speed = f.get("speed_mbps") if f.get("physical") is not False else None
    if speed and pps and run["packet_size"]:
        over = [(p, wire_bits_per_s(pps, p)) for p in run["packet_size"] if wire_bits_per_s(pps, p) > speed * 1e6]
        if over:
            p, bits = over[-1]
            problems.append(f"{where}, interface {iface}: {pps:,} pps of {p}-byte payloads "
                            f"({frame_bytes(p)}-byte frames) take {_mbps(bits)} on the wire, above its "
                            f"line rate {speed:,} Mbit/s")
        else:
            reports.append(f"{where}, interface {iface}: link {speed:,} Mbit/s; the highest offered load "
                           f"takes {_mbps(max(wire_bits_per_s(pps, p) for p in run['packet_size']))}")
    elif pps:
        reports.append(f"{where}, interface {iface}: {_no_line_rate(f)}: line rate not checked")
    neigh = f.get("neighbour")
    if neigh is not None:
        state = str(neigh.get("state") or "")
        resolved = any(s in state.split("/") for s in NEIGH_RESOLVED) and neigh.get("lladdr")
        if not resolved:
            text = (f"{where}, interface {iface}: the neighbour (ARP) entry of the DUT "
                    f"({src.get('dut_address')}) is not resolved ({state or 'unknown'}"
                    f"{': ' + neigh['said'] if neigh.get('said') else ''})")
            # the udp path goes through the neighbour table; packet and trafgen frames carry
            # the DUT's MAC from its agent
            (reports if raw else problems).append(
                text + ("" if raw else ": the kernel would drop the first packets while every send succeeds"))
        elif src.get("dut_mac") and neigh["lladdr"].lower() != src["dut_mac"].lower() and not raw:
            problems.append(f"{where}, interface {iface}: the DUT's address {src.get('dut_address')} "
                            f"resolves to {neigh['lladdr']}, not to the MAC of the DUT's "
                            f"{src.get('dut_iface')} ({src['dut_mac']}): the traffic would go elsewhere")
    return problems, reports


# -- all together ----------------------------------------------------------------------

def decide(dut: dict, sources: list, run: dict) -> dict:
    """{"problems", "reports", "clock"} for a run's hosts (facts as check_dut, check_source
    and clock_decision take them)."""
    from .steps.arm import source_shares as shares   # each source's share, as the trials send

    problems, reports = [], []
    n = len(sources) or 1
    top = max(run["target_pps"]) if run["target_pps"] else 0
    per_source = shares(top, n)
    offered = {}
    for src, pps in zip(sources, per_source):
        offered[src.get("dut_iface")] = offered.get(src.get("dut_iface"), 0) + pps
    p, r = check_dut(dut, run, offered)
    problems += p
    reports += r
    for src, pps in zip(sources, per_source):
        p, r = check_source(src, run, pps)
        problems += p
        reports += r
    ndr_max = run.get("ndr_max_pps")
    if ndr_max and run["packet_size"]:
        for src, pps in zip(sources, shares(ndr_max, n)):
            f = src.get("facts") or {}
            speed = f.get("speed_mbps") if f.get("physical") is not False else None
            bits = wire_bits_per_s(pps, min(run["packet_size"]))
            if speed and bits > speed * 1e6:
                reports.append(f"{src.get('where')}: a zero-loss search's ndr_max_pps ({ndr_max:,} pps) "
                               f"is above its line rate ({_mbps(bits)} > {speed:,} Mbit/s): the search's "
                               f"upper end is the link's")
    clock = clock_decision(dut, sources)
    reports.append(f"clocks: latency {clock['latency']}: {clock['why']}")
    return {"problems": problems, "reports": reports, "clock": clock}


# -- from a connectivity check's findings ----------------------------------------------

def dut_facts(description: dict, health: dict, environment: dict | None, env_error: str | None) -> dict:
    """The DUT's facts as check_dut and clock_decision take them, from the agent's health and
    its /environment (None when it could not be read: env_error says why)."""
    env = environment or {}
    pre = env.get("preflight") or {}
    unavailable = env.get("unavailable") or {}
    where = f"DUT {health.get('hostname') or ''} (agent {description.get('agent_url')})".replace("DUT  ", "DUT ")
    ifaces = {}
    for name in description.get("ifaces") or []:
        h = ((health.get("interfaces") or {}).get(name)) or {}
        p = (pre.get("interfaces") or {}).get(name) or {}
        e = (env.get("interfaces") or {}).get(name) or {}
        why = unavailable.get(f"preflight.interfaces.{name}.xdp_features") or \
            (env_error if environment is None else None) or \
            ("this agent reports no XDP features (an older agent)" if not pre else None)
        ifaces[name] = {"mtu": p.get("mtu") or h.get("mtu"), "speed_mbps": p.get("speed_mbps"),
                        "driver": e.get("driver") or h.get("driver"),
                        "xdp_features": p.get("xdp_features"), "xdp_features_unavailable": why,
                        "offloads": e.get("offloads"), "irqs": p.get("irqs"), "physical": p.get("physical")}
    return {"where": where, "boot_id": health.get("boot_id") or pre.get("boot_id"), "interfaces": ifaces,
            "bpf_jit_enable": pre.get("bpf_jit_enable"), "page_size": pre.get("page_size"),
            "agent_cpus": pre.get("agent_cpus"), "cpufreq_governors": pre.get("cpufreq_governors"),
            "governors_unavailable": unavailable.get("preflight.cpufreq_governors"),
            "clock": pre.get("clock")}


def source_facts(resolved: list) -> list:
    """Each source as check_source and clock_decision take it, from the connectivity check's
    resolved sources (their "facts" from sourcehost/preflight.py)."""
    from . import source

    return [{"where": source.where(s), "name": s.get("name"), "system": s.get("system"),
             "iface": s.get("iface"), "dut_iface": s.get("dut_iface"), "dut_address": s.get("dut_address"),
             "dut_mac": s.get("dut_mac"), "facts": s.get("facts") or {}} for s in resolved]


def check(description: dict, health: dict, agent, resolved: list, run: dict, record: str | None,
          log) -> dict:
    """Gather the DUT's /environment, decide, log every report, write the record (when
    `record` names a file) and raise Refused with every problem."""
    from .agentclient import AgentError
    from . import atomic

    t0 = time.monotonic()
    try:
        environment, env_error = agent.environment(), None
    except (AgentError, OSError) as e:
        environment, env_error = None, f"GET /environment failed: {e}"
    dut = dut_facts(description, health, environment, env_error)
    sources = source_facts(resolved)
    result = decide(dut, sources, run)
    out = {"checked_unix_s": time.time(), "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "verdict": "refused" if result["problems"] else "ok", **result, "run": run,
           "facts": {"dut": dut, "sources": sources}, "check_s": round(time.monotonic() - t0, 3)}
    for line in result["reports"]:
        log(f"pre-flight: {line}")
    if record:
        atomic.write_json(record, out)
    if result["problems"]:
        raise Refused("pre-flight refused the run:\n  " + "\n  ".join(result["problems"]))
    log(f"pre-flight: ok ({len(result['reports'])} report(s)"
        + (f", recorded in {record}" if record else "") + f"); latency: {result['clock']['latency']}",
        echo=True)
    return out
