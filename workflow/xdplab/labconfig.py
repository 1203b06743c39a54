"""Validate the `lab` section of the configuration (testbed: lab): the source hosts and
the DUT agent of real machines, as config/lab.example.yaml describes them.

Paths are expanded (~) and made absolute; key and token files must exist and be
readable; a source's address is an IPv4 address or 'auto' (resolved on the source
over SSH before any traffic); each source's dut_iface is one of the DUT's ifaces.
Reading files is all this does: nothing is contacted.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from urllib.parse import urlsplit

from .configvalues import IFNAME_RE, IFNAME_RULE, coerce_int, show

SOURCE_KEYS = {
    "host": "SSH target: an address, a host name or a ~/.ssh/config alias",
    "user": "SSH user (optional; ~/.ssh/config or the current user otherwise)",
    "port": "SSH port (optional)",
    "key_file": "SSH private key (optional)",
    "known_hosts": "known_hosts file holding the host's key (optional)",
    "iface": "the source's test interface",
    "address": "IPv4 address to send from, or auto (the address on iface)",
    "python": "Python interpreter on the source (optional)",
    "dut_iface": "the DUT interface this source sends to (optional with one)",
}
DUT_KEYS = {
    "agent": "the DUT agent's URL, http://HOST:PORT",
    "token_file": "file holding the agent's token",
    "ifaces": "the DUT interfaces to collect on",
}
HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$")
PYTHON_RE = re.compile(r"^[A-Za-z0-9_./-]{1,200}$")
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")


def _unknown(where: str, key, known) -> str:
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{where}: unknown key {show(key)}{hint}; known keys: {', '.join(known)}"


def _readable_file(where: str, value, problems: list, what: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: expected the path of {what}, got {show(value)}")
        return None
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        problems.append(f"{where}: {value} does not exist ({what})")
    elif not os.access(path, os.R_OK):
        problems.append(f"{where}: {value} is not readable ({what})")
    return path


def _ifname(where: str, value, problems: list) -> str | None:
    if not isinstance(value, str) or not IFNAME_RE.match(value) or value in (".", ".."):
        problems.append(f"{where}: {show(value)} is not valid; allowed: {IFNAME_RULE}")
        return None
    return value


def _ipv4_or_auto(where: str, value, problems: list) -> str | None:
    if value is None or value == "auto":
        return "auto"
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        problems.append(f"{where}: {show(value)} is not an IPv4 address or 'auto'")
        return None


def check_lab(raw, default_python: str = "python3") -> tuple[dict | None, list[str]]:
    """Validate the `lab` section; return (normalised lab, problems)."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        return None, ["lab: required when testbed is 'lab': a mapping with 'sources' and 'dut' "
                      "(see config/lab.example.yaml)"]
    for key in raw:
        if key not in ("sources", "dut"):
            problems.append(_unknown("lab", key, ["sources", "dut"]))
    dut_raw = raw.get("dut")
    dut = None
    if not isinstance(dut_raw, dict):
        problems.append("lab.dut: required: a mapping with agent, token_file and ifaces")
    else:
        dut = _check_dut(dut_raw, problems)
    sources_raw = raw.get("sources")
    sources = []
    if not isinstance(sources_raw, list) or not sources_raw:
        problems.append(f"lab.sources: expected a list of one or more source hosts, got "
                        f"{show(sources_raw)}")
        sources_raw = []
    for i, s in enumerate(sources_raw):
        where = f"lab.sources[{i}]"
        if not isinstance(s, dict):
            problems.append(f"{where}: expected a mapping with host and iface, got {show(s)}")
            continue
        sources.append(_check_source(where, f"src{i}", s, dut, default_python, problems))
    return {"sources": sources, "dut": dut}, problems


def _agent_url(url, problems: list) -> str | None:
    parts = urlsplit(url) if isinstance(url, str) else None
    try:
        port_ok = parts is not None and parts.port is not None
    except ValueError:
        port_ok = False
    if not (parts and parts.scheme == "http" and parts.hostname and port_ok
            and parts.path in ("", "/") and not parts.query and not parts.username):
        problems.append(f"lab.dut.agent: {show(url)} is not valid; expected http://HOST:PORT "
                        "(the address the agent was started with --listen)")
        return None
    return url


def _check_dut(dut_raw: dict, problems: list) -> dict:
    """lab.dut normalised: {"agent_url", "token_file", "ifaces"}; its mistakes go to problems."""
    for key in dut_raw:
        if key not in DUT_KEYS:
            problems.append(_unknown("lab.dut", key, list(DUT_KEYS)))
    url = _agent_url(dut_raw.get("agent"), problems)
    token = _readable_file("lab.dut.token_file", dut_raw.get("token_file"), problems,
                           "the agent's token")
    if token and os.path.isfile(token) and os.access(token, os.R_OK):
        with open(token) as f:
            if not f.read().strip():
                problems.append(f"lab.dut.token_file: {dut_raw.get('token_file')} is empty")
    ifaces_raw = dut_raw.get("ifaces")
    if isinstance(ifaces_raw, str):
        ifaces_raw = [ifaces_raw]
    ifaces = []
    if not isinstance(ifaces_raw, list) or not ifaces_raw:
        problems.append(f"lab.dut.ifaces: expected a list of one or more interface names, "
                        f"got {show(ifaces_raw)}")
    else:
        for i, name in enumerate(ifaces_raw):
            ok = _ifname(f"lab.dut.ifaces[{i}]", name, problems)
            if ok in ifaces:
                problems.append(f"lab.dut.ifaces: {ok!r} is listed twice")
            elif ok:
                ifaces.append(ok)
    return {"agent_url": url.rstrip("/") if url else None, "token_file": token, "ifaces": ifaces}


def _check_source(where: str, name: str, s: dict, dut: dict | None, default_python: str,
                  problems: list) -> dict:
    """One entry of lab.sources normalised (SOURCE_KEYS and its name); its mistakes go to
    problems."""
    for key in s:
        if key not in SOURCE_KEYS:
            problems.append(_unknown(where, key, list(SOURCE_KEYS)))
    src = {"name": name}
    host = s.get("host")
    if not isinstance(host, str) or not HOST_RE.match(host):
        problems.append(f"{where}.host: {show(host)} is not a host name, address or "
                        "~/.ssh/config alias")
    src["host"] = host
    user = s.get("user")
    if user is not None and (not isinstance(user, str) or not USER_RE.fullmatch(user)):
        problems.append(f"{where}.user: {show(user)} is not a user name")
    src["user"] = user
    src["port"] = _ssh_port(where, s.get("port"), problems)
    src["key_file"] = (_readable_file(f"{where}.key_file", s["key_file"], problems, "an SSH key")
                       if s.get("key_file") is not None else None)
    src["known_hosts"] = (_readable_file(f"{where}.known_hosts", s["known_hosts"], problems,
                                         "a known_hosts file")
                          if s.get("known_hosts") is not None else None)
    src["iface"] = _ifname(f"{where}.iface", s.get("iface"), problems)
    src["address"] = _ipv4_or_auto(f"{where}.address", s.get("address", "auto"), problems)
    python = s.get("python", default_python)
    if not isinstance(python, str) or not PYTHON_RE.match(python):
        problems.append(f"{where}.python: {show(python)} is not valid; allowed: a command "
                        "or path of letters, digits, '_', '.', '/', '-'")
    src["python"] = python
    src["dut_iface"] = _source_dut_iface(where, s.get("dut_iface"), dut, problems)
    return src


def _ssh_port(where: str, port, problems: list) -> int | None:
    if port is None:
        return None
    try:
        port = coerce_int(f"{where}.port", port)
        if not 1 <= port <= 65535:
            raise ValueError(f"{where}.port: {port} is out of range; allowed: 1 to 65535")
    except ValueError as e:
        problems.append(str(e))
        return None
    return port


def _source_dut_iface(where: str, dut_iface, dut: dict | None, problems: list):
    """The DUT interface a source sends to: given, or the DUT's only one."""
    if dut is not None and dut["ifaces"]:
        if dut_iface is None:
            if len(dut["ifaces"]) > 1:
                problems.append(f"{where}.dut_iface: required when the DUT has several ifaces "
                                f"({', '.join(dut['ifaces'])})")
            dut_iface = dut["ifaces"][0]
        elif _ifname(f"{where}.dut_iface", dut_iface, problems) and dut_iface not in dut["ifaces"]:
            problems.append(f"{where}.dut_iface: {dut_iface!r} is not one of lab.dut.ifaces "
                            f"({', '.join(dut['ifaces'])})")
    return dut_iface


def lab_as_config(lab: dict | None) -> dict | None:
    """A normalised lab (check_lab) written back in the configuration's own keys, so
    that --configfile gives the same lab again."""
    if not lab:
        return None
    keys = [k for k in SOURCE_KEYS]
    sources = [{k: s[k] for k in keys if s.get(k) is not None} for s in lab["sources"]]
    dut = {"agent": lab["dut"]["agent_url"], "token_file": lab["dut"]["token_file"],
           "ifaces": list(lab["dut"]["ifaces"])}
    return {"sources": sources, "dut": dut}
