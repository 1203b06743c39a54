"""A namespace lab for tests, met the way a user meets real machines: two
source hosts and a DUT with two test interfaces, each in its own namespace,
reached from the root namespace (the controller) only through their
management addresses.  Each source runs its own sshd with its own host key and
accepts only its own client key; the DUT runs the agent by its documented
command with a token.  write_lab_config() writes the workflow's `testbed: lab`
configuration (contract, section 3) for it, which is all the workflow knows
(lab_config() makes it from the lab's description).

    source 0  xlt-lab-src0  mgmt 10.204.1.2  xl-src0 10.204.0.1/30 <-> xl-dut0 10.204.0.2/30
    source 1  xlt-lab-src1  mgmt 10.204.1.6  xl-src1 10.204.0.5/30 <-> xl-dut1 10.204.0.6/30
    DUT       xlt-lab-dut   mgmt 10.204.2.2  agent http://10.204.2.2:7717
    root namespace: xlt-lab-m0 10.204.1.1, xlt-lab-m1 10.204.1.5, xlt-lab-md 10.204.2.1
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from xdplab.agent import TOKEN_HEADER

LAB_NAME = "xlt-lab"            # namespace prefix; xlt-: test-only (conftest's leak check)
LAB_NET = "10.204.0.0/16"
LAB_SOURCES = 2
AGENT_PORT = 7717
REPO = Path(__file__).resolve().parents[1]


def ip_json(*args, netns=None):
    """`ip -j ...` (in a namespace) as parsed JSON; [] when it prints nothing."""
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + list(args)
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def agent(desc, method, path, token=True):
    """(status, JSON body or None) of a request to a testbed's agent, with its token unless
    told otherwise, whatever http_proxy says."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers[TOKEN_HEADER] = Path(desc["dut"]["token_file"]).read_text().strip()
    req = urllib.request.Request(desc["dut"]["agent_url"] + path, method=method, headers=headers,
                                 data=b"{}" if method == "POST" else None)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def netns_names():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@dataclasses.dataclass
class Lab:
    lab: object          # xdplab.testbed.NamespaceLab: up(), down(), status(), copy_logs(dir)
    desc: dict           # its description (testbed.json): sources[...], dut.ifaces[...], ...
    config_path: Path    # the workflow's lab config: snakemake --configfile <config_path>
    config: dict         # the same, parsed


def make_lab(state_dir: Path, repo_root: Path = REPO):
    from xdplab.testbed import NamespaceLab, lab_layout

    return NamespaceLab(lab_layout(LAB_NAME, LAB_SOURCES, LAB_NET), state_dir,
                        repo_root=repo_root, agent_port=AGENT_PORT)


def lab_config(desc: dict, auto_address: tuple[int, ...] = ()) -> dict:
    """The workflow's `testbed: lab` configuration (contract, section 3) for a
    lab that is up, from its description: what a user writes for real machines.
    Sources whose index is in auto_address get `address: auto`."""
    sources = []
    for i, s in enumerate(desc["sources"]):
        sources.append({"host": s["host"], "user": s["user"], "port": s["port"],
                        "key_file": s["key_file"], "known_hosts": s["known_hosts"],
                        "iface": s["iface"], "address": "auto" if i in auto_address else s["address"],
                        "python": s["python"], "dut_iface": s["dut_iface"]})
    dut = desc["dut"]
    return {"testbed": "lab",
            "lab": {"sources": sources,
                    "dut": {"agent": dut["agent_url"], "token_file": dut["token_file"],
                            "ifaces": [d["name"] for d in dut["ifaces"]]}}}


def write_lab_config(desc: dict, path: Path) -> dict:
    """The lab as a user describes real machines: source 0 with `address: auto`
    (found on its iface), source 1 with its address written out."""
    import yaml

    config = lab_config(desc, auto_address=(0,))
    path.write_text("# xdplab lab config for the test namespace lab (tests/labnet.py)\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return config
