"""Shared fixtures: the embedded testbed, the test namespace lab (labnet.py), and a check
that no test leaked a namespace or left an XDP program attached."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

def find_trial(results_dir, pps, size=1458, rep=0):
    """A trial's directory under results/<experiment>/ (trials/<point>/rep~<n>, the point's
    name keyed by all its settings): the one whose point has this rate and size; a path
    that does not exist when there is none yet."""
    found = sorted(Path(results_dir, "trials").glob(f"pps~{pps}_size~{size}_*/rep~{rep}"))
    assert len(found) <= 1, f"several trials at {pps} pps, {size} B: {found}"
    return found[0] if found else Path(results_dir, "trials", f"pps~{pps}_size~{size}_(not yet)", f"rep~{rep}")


def planned_trial(results_dir, config: dict, rep=0):
    """The directory the workflow will give the trial of this configuration (one point:
    config/config.yaml's values under `config`)."""
    import yaml
    from xdplab import trials
    from xdplab.config import validate_config

    raw = dict(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), **config)
    s = validate_config(raw).values
    point = trials.point_name(trials.grid_points(s)[0])
    return Path(results_dir, "trials", point, f"rep~{rep}")


# Namespace prefixes used by this project's tests and testbed (xlt-: test-only).
OUR_NETNS_PREFIXES = ("xdplab", "xlt-")

def _netns_names():
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# Processes of ours, by what their command line says: the agent, the testbed's
# sshd, tcpdump writing an agent's capture, the generator uploaded to the source.
OUR_PROCESS_MARKS = ("xdplab-agent.pyz", "xdplab.agent", "sshd_config", "xdplab-generator", "xdplab-source",
                     ".pcap")


def _our_processes():
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in OUR_PROCESS_MARKS) and "pytest" not in cmd:
            found.append(f"{proc.name}: {cmd.strip()[:160]}")
    return found


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


# Root-namespace ends of our veths (testbed xl-msrc/xl-mdut, instance k's xl-msrc<k>/
# xl-mdut<k>, test-only xlt-*), and the embedded testbed's state directory (keys, token,
# logs; instance k's is /run/xdplab<k>).
OUR_LINK_PREFIXES = ("xl-", "xlt-")
EMBEDDED_STATE_DIR = Path("/run/xdplab")


def _root_links():
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    return [link["ifname"] for link in json.loads(out or "[]")
            if link["ifname"].startswith(OUR_LINK_PREFIXES)]


def _state_files():
    found = []
    for state_dir in (EMBEDDED_STATE_DIR, *sorted(Path("/run").glob("xdplab[0-9]*"))):
        try:
            found += [str(p) for p in state_dir.rglob("*")]
        except OSError:
            pass
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_leaked():
    """After the whole session: no namespace, root-namespace veth, process or
    XDP program of ours, and no file under /run/xdplab (keys, token, logs) may
    remain, or the suite fails.  What was already there
    when the session started is not this session's leak: it is only warned
    about (another developer's run on the same machine, or an earlier crash)."""
    ns_before = {ns for ns in _netns_names() if ns.startswith(OUR_NETNS_PREFIXES)}
    xdp_before = set(_root_xdp_programs())
    procs_before = {p.split(":")[0] for p in _our_processes()}
    links_before, state_before = set(_root_links()), set(_state_files())
    if ns_before or xdp_before:
        warnings.warn(f"before the tests: namespaces {sorted(ns_before)}, root-namespace XDP "
                      f"programs {sorted(xdp_before)}; not counted as leaks of this session")
    yield
    leaked = [ns for ns in _netns_names() if ns.startswith(OUR_NETNS_PREFIXES) and ns not in ns_before]
    xdp = [p for p in _root_xdp_programs() if p not in xdp_before]
    procs = [p for p in _our_processes() if p.split(":")[0] not in procs_before]
    links = [i for i in _root_links() if i not in links_before]
    state = [f for f in _state_files() if f not in state_before]
    assert not leaked and not xdp and not procs and not links and not state, (
        f"tests left behind namespaces {leaked}, root-namespace XDP programs {xdp}, "
        f"processes {procs}, root-namespace veths {links}, files under {EMBEDDED_STATE_DIR} {state}")


def skip_unless_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, veth, sshd")
    for tool in ("ip", "sysctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (run `make setup`)")
    for path in ("/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/python3"):
        if not os.access(path, os.X_OK):
            pytest.skip(f"needs {path} (run `make setup`)")


def make_testbed(tmp_dir: Path, **kwargs):
    from xdplab.testbed import EmbeddedTestbed

    return EmbeddedTestbed(repo_root=REPO, **kwargs)


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


@pytest.fixture(scope="module")
def netns_lab(tmp_path_factory):
    """labnet.Lab: the test namespace lab (two sources, a DUT with two test
    interfaces; see tests/labnet.py) up for the module, with its workflow
    config written to <tmp>/lab.yaml; always torn down after the module."""
    import labnet

    skip_unless_root()
    base = tmp_path_factory.mktemp("netns-lab")
    lab = labnet.make_lab(base / "state")
    try:
        desc = lab.up()
        config_path = base / "lab.yaml"
        config = labnet.write_lab_config(desc, config_path)
        yield labnet.Lab(lab=lab, desc=desc, config_path=config_path, config=config)
    finally:
        lab.down()


@pytest.fixture
def workflow_copy(tmp_path):
    """The repository copied into a temporary directory, as a user's clone: runs of the
    workflow there keep their results and Snakemake's metadata out of the developer's."""
    dest = tmp_path / "xdplab"
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".venv", "results", ".snakemake", ".git", "__pycache__", ".pytest_cache"))
    return dest


@contextlib.contextmanager
def testbed_up(workdir, timeout=120):
    """The embedded testbed up for a workflow copy (`python -m xdplab.testbed up`), torn
    down afterwards whatever happened."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(Path(workdir) / "workflow")}
    r = subprocess.run([sys.executable, "-m", "xdplab.testbed", "up"], cwd=workdir, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    try:
        yield workdir
    finally:
        subprocess.run([sys.executable, "-m", "xdplab.testbed", "down"], cwd=workdir, env=env,
                       capture_output=True, timeout=120)


@pytest.fixture
def testbed_up_copy(workflow_copy):
    """A workflow copy with the embedded testbed already up."""
    with testbed_up(workflow_copy) as workdir:
        yield workdir
