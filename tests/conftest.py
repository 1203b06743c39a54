"""Shared fixtures: the embedded testbed, and a check after the whole session
that no test leaked a namespace or left an XDP program attached."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

# Namespace prefixes used by this project's tests and testbed (xlt-: test-only).
OUR_NETNS_PREFIXES = ("xdplab", "xlt-")

# Until workflow/xdplab/agent.py exists, the testbed fixture starts this
# stand-in: same command line, answers GET /health with the token.
STAND_IN_AGENT = textwrap.dedent('''\
    import argparse, json, http.server
    p = argparse.ArgumentParser()
    p.add_argument("--listen"); p.add_argument("--token-file"); p.add_argument("--bpf-dir")
    p.add_argument("--allow-interface", action="append"); p.add_argument("--state-dir")
    a = p.parse_args()
    token = open(a.token_file).read().strip()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("X-Xdplab-Token") == token
            body = json.dumps({"ok": True, "agent": "stand-in", "interfaces": a.allow_interface}
                              if ok else {"error": "bad token"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    host, port = a.listen.rsplit(":", 1)
    http.server.HTTPServer((host, int(port)), H).serve_forever()
    ''')


def _netns_names():
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_xdp_programs():
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    found = []
    for link in json.loads(out or "[]"):
        if "xdp" in link:
            prog = link["xdp"].get("prog", {})
            found.append(f"{link['ifname']}: prog id {prog.get('id')} {prog.get('name')}")
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_leaked():
    """After the whole session: no namespace of ours and no XDP program in the
    root namespace may remain, or the suite fails.  What was already there
    when the session started is not this session's leak: it is only warned
    about (another developer's run on the same machine, or an earlier crash)."""
    ns_before = {ns for ns in _netns_names() if ns.startswith(OUR_NETNS_PREFIXES)}
    xdp_before = set(_root_xdp_programs())
    if ns_before or xdp_before:
        warnings.warn(f"before the tests: namespaces {sorted(ns_before)}, root-namespace XDP "
                      f"programs {sorted(xdp_before)}; not counted as leaks of this session")
    yield
    leaked = [ns for ns in _netns_names() if ns.startswith(OUR_NETNS_PREFIXES) and ns not in ns_before]
    xdp = [p for p in _root_xdp_programs() if p not in xdp_before]
    assert not leaked and not xdp, (
        f"tests left behind namespaces {leaked} and/or root-namespace XDP programs {xdp}")


def skip_unless_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, veth, sshd")
    for tool in ("ip", "sysctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (run `make setup`)")
    for path in ("/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/python3"):
        if not os.access(path, os.X_OK):
            pytest.skip(f"needs {path} (run `make setup`)")


def testbed_repo_root(tmp_dir: Path) -> Path:
    """The repository, or, while agent.py is not written yet, a stand-in
    repository whose agent.py is STAND_IN_AGENT."""
    if (REPO / "workflow" / "xdplab" / "agent.py").is_file():
        return REPO
    fake = tmp_dir / "stand-in-repo"
    (fake / "workflow" / "xdplab").mkdir(parents=True, exist_ok=True)
    (fake / "bpf").mkdir(exist_ok=True)
    (fake / "workflow" / "xdplab" / "agent.py").write_text(STAND_IN_AGENT)
    return fake


def make_testbed(tmp_dir: Path, **kwargs):
    from xdplab.testbed import EmbeddedTestbed

    return EmbeddedTestbed(repo_root=testbed_repo_root(tmp_dir), **kwargs)


@pytest.fixture(scope="module")
def embedded_testbed(tmp_path_factory):
    """(testbed, description): the embedded testbed, up for the module and
    always torn down after it."""
    skip_unless_root()
    tb = make_testbed(tmp_path_factory.mktemp("testbed"))
    try:
        desc = tb.up()
        yield tb, desc
    finally:
        tb.down()
