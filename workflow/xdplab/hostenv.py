"""Environment manifests: what each host of a testbed runs, for the archive.

- the controller (this machine): Python, the packages of its environment, Snakemake,
  and the same host facts as a source host;
- each source host: kernel release and its BPF-related build options, CPU model and
  count, OS, Python, and for its test interface the driver, firmware and offloads
  (ethtool), collected over SSH by the source host's own program
  (`xdplab-source.pyz facts`, sourcehost/facts.py), as the generator needs nothing
  else on the source either;
- the DUT: the agent's `GET /environment` (PROTOCOL.md); an agent that does not have
  it, or cannot be reached, gives an entry saying so.

Nothing here fails: a host that cannot be asked gets {"error": reason} instead of its
facts, and a fact that cannot be read is null with its reason under "unavailable".
"""

from __future__ import annotations

import json
import sys
import time


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _facts_here(ifaces=()) -> dict:
    """The source host's facts program (sourcehost/facts.py) run on this machine."""
    from .sourcehost import facts

    try:
        return facts.collect(list(ifaces))
    except Exception as e:  # noqa: BLE001 - any failure becomes the entry's error
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
    argv = ["facts", json.dumps([src["iface"]] if src.get("iface") else [])]
    try:
        with sources.connect(src, timeout_s) as c:
            r = sources.run_program(c, py, argv, timeout_s * 3)
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
