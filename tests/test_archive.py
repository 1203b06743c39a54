"""The archive (workflow/xdplab/archive.py, rule archive): what goes in, SHA256SUMS that
`sha256sum -c` accepts, ./reaggregate rebuilding the tables byte for byte with only
pandas, the environment manifests; and once for real through snakemake on the
embedded testbed."""

import http.server
import json
import os
import random
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from xdplab import archive, breakdown, hostenv, report, stats
from xdplab.accounting import COLUMNS, INTERFACE_COLUMNS, SOURCE_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TABLES = ("summary.csv", "summary.md", "sources.csv", "ifaces.csv", "points.csv", "points.md", "points.tex")


# -- a small results tree, as the workflow leaves it ------------------------------------

def _value(col, rng):
    if col in ("experiment",):
        return "arc"
    if col in ("status",):
        return "ok"
    if col in ("loss_where",):
        return rng.choice(["", "dut_nic"])
    if col in ("latency_method", "prog_tag", "testbed", "sources", "interfaces", "xdp_mode", "source",
               "host", "address", "dut_iface", "interface"):
        return f"{col}-{rng.randint(0, 2)}"
    if col.endswith(("_pct", "_pps", "_us", "_ns_per_pkt", "_mbps")) or col.startswith("lat"):
        return rng.choice([None, rng.random() * 10 ** rng.randint(0, 6), 1 / 3])
    if col == "rate_sustained":
        return rng.choice([True, False])
    return rng.randint(0, 10 ** 6)


def fake_trial(exp, pps, size, rep, rng, testbed):
    point = {"experiment": exp, "target_pps": pps, "packet_size": size, "repeat": rep}
    summary = {c: _value(c, rng) for c in COLUMNS} | point
    src = [{c: _value(c, rng) for c in SOURCE_COLUMNS} | point | {"source": "src0"}]
    ifs = [{c: _value(c, rng) for c in INTERFACE_COLUMNS} | point | {"interface": "xl-dut0"}]
    return {"trial": point, "settings": {"duration_s": 1}, "summary": summary, "sources": src,
            "interfaces": ifs, "testbed": testbed, "agent": {}, "generators": [], "capture": {}}


def fake_results(root: Path, exp="arc", testbed=None):
    """results/<exp>/trials/.../trial.json for 2 rates x 2 sizes x 2 repeats, the tables
    written by the aggregate rule's own functions, a figure, a capture in one trial.
    Returns the trial.json paths in the order the rule would read them (not sorted)."""
    rng = random.Random(7)
    testbed = testbed or {"mode": "embedded", "sources": [], "dut": {}}
    results = root / "results" / exp
    paths = []
    for pps in (20000, 1000):
        for size in (1458, 18):
            for rep in range(2):
                d = results / "trials" / f"pps~{pps}" / f"size~{size}" / f"rep~{rep}"
                d.mkdir(parents=True)
                (d / "trial.json").write_text(json.dumps(fake_trial(exp, pps, size, rep, rng, testbed)))
                (d / "logs").mkdir()
                (d / "logs" / "gather_results.log").write_text("gathered\n")
                paths.append(str((d / "trial.json").relative_to(root)))
    Path(root, paths[0]).with_name("capture.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(60))
    # A trial of another configuration: not this archive's.
    other = results / "trials" / "pps~5" / "size~18" / "rep~0"
    other.mkdir(parents=True)
    (other / "trial.json").write_text("{}")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        r = f"results/{exp}"
        df = report.write_summary(paths, f"{r}/summary.csv", f"{r}/summary.md", exp)
        breakdown.write_breakdown(paths, f"{r}/sources.csv", f"{r}/ifaces.csv")
        stats.write_points(df, f"{r}/points.csv", f"{r}/points.md", f"{r}/points.tex")
    finally:
        os.chdir(cwd)
    (results / "summary.svg").write_text("<svg/>\n")
    (results / "config.yaml").write_text(f"experiment: {exp}\n")
    (results / "logs").mkdir()
    (results / "logs" / "aggregate.log").write_text("aggregated\n")
    (results / "older-2026-01-01.tar.gz").write_bytes(b"not this one")
    return paths


def build_in(root: Path, paths, repo, **kw):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        out = "results/arc/arc-2026-11-26.tar.gz"
        env = kw.pop("environment", {"controller.json": hostenv.controller()})
        manifest = archive.build(out, experiment="arc", results_dir="results/arc", trial_paths=paths,
                                 settings={"experiment": "arc", "repeats": 2}, repo=str(repo),
                                 environment=env, log=lambda m: None, **kw)
    finally:
        os.chdir(cwd)
    return root / out, manifest


def unpack(tgz: Path, dest: Path) -> Path:
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
    dest.mkdir()
    subprocess.run(["tar", "-C", str(dest), "-xzf", str(tgz)], check=True)
    assert len({n.split("/")[0] for n in names}) == 1, "one top-level directory"
    return dest / names[0].split("/")[0]


def pandas_only_path(dest: Path) -> Path:
    """A directory holding only pandas and what it needs (from the packages' metadata)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    dest.mkdir()
    todo, seen = ["pandas"], set()
    while todo:
        name = todo.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        dist = metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (dest / top).exists():
                (dest / top).symlink_to(src)
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return dest


def run_reaggregate(top: Path, tmp_path: Path, *args):
    """./reaggregate by the system's python3 without its site-packages, with only pandas."""
    python = os.path.realpath(sys.executable)
    libs = pandas_only_path(tmp_path / "pandas-only")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(libs)}
    return subprocess.run(["/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()], python, "-S",
                           "./reaggregate", *args], cwd=top, capture_output=True, text=True, timeout=120)


@pytest.fixture
def git_repo(workflow_copy):
    """The repository copied and committed, then one file changed: a dirty tree."""
    git = ["git", "-C", str(workflow_copy), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    with open(workflow_copy / "README.md", "a") as f:
        f.write("\nchanged after the commit\n")
    (workflow_copy / "notes.txt").write_text("untracked\n")
    return workflow_copy


# -- tests -------------------------------------------------------------------------

def test_archive_checks_and_reaggregates_byte_for_byte_with_only_pandas(tmp_path, git_repo):
    root = tmp_path / "run"
    paths = fake_results(root)
    tgz, manifest = build_in(root, paths, git_repo)
    top = unpack(tgz, tmp_path / "unpacked")
    assert top.name == "arc-2026-11-26"

    check = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=top, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {line.split("  ", 1)[1] for line in (top / "SHA256SUMS").read_text().splitlines()}
    on_disk = {"./" + p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()} - {"./SHA256SUMS"}
    assert listed == on_disk

    # What is in: this config's trials (not the other), the tables, the figure, the logs.
    assert manifest["trials"] == paths, "the order the aggregate rule read them"
    for p in paths:
        assert (top / p).is_file() and (top / p).with_name("logs").is_dir()
    assert not (top / "results/arc/trials/pps~5").exists()
    for name in (*TABLES, "summary.svg", "config.yaml", "logs/aggregate.log"):
        assert (top / "results/arc" / name).read_bytes() == (root / "results/arc" / name).read_bytes(), name
    assert not list(top.rglob("*.tar.gz")), "no archive inside an archive"
    # Captures left out by default, and listed.
    assert not list(top.rglob("*.pcap"))
    assert [p["path"] for p in manifest["pcaps"]["left_out"]] == [str(Path(paths[0]).with_name("capture.pcap"))]

    # The code as it ran: the commit, dirty, the diff, the untracked file.
    code = json.loads((top / "MANIFEST.json").read_text())["code"]
    assert len(code["commit"]) == 40 and code["dirty"] is True
    assert "changed after the commit" in (top / "code.diff").read_text()
    assert code["untracked"] == ["notes.txt"] and (top / "code/notes.txt").exists()
    assert (top / "code/README.md").read_text().endswith("changed after the commit\n")
    assert (top / "code/workflow/xdplab/report.py").read_bytes() == (git_repo / "workflow/xdplab/report.py").read_bytes()
    assert "with uncommitted changes" in (top / "README.md").read_text()

    # ./reaggregate with pandas alone rebuilds every table byte for byte.
    r = run_reaggregate(top, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in TABLES:
        assert (top / "reaggregated" / name).read_bytes() == (root / "results/arc" / name).read_bytes(), name
    assert "every table rebuilt is identical" in r.stdout
    assert not list((top / "code").rglob("__pycache__")), "the archived code is left as it is"


def test_reaggregate_says_when_a_table_differs(tmp_path, workflow_copy):
    root = tmp_path / "run"
    paths = fake_results(root)
    tgz, _ = build_in(root, paths, workflow_copy)
    top = unpack(tgz, tmp_path / "unpacked")
    with open(top / "results/arc/points.csv", "a") as f:
        f.write("tampered\n")
    r = subprocess.run([sys.executable, "reaggregate", "--out", str(tmp_path / "again")], cwd=top,
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "points.csv   DIFFERENT" in r.stdout and "summary.csv  identical" in r.stdout


def test_pcaps_when_asked_and_code_without_git(tmp_path, workflow_copy):
    root = tmp_path / "run"
    paths = fake_results(root)
    tgz, manifest = build_in(root, paths, workflow_copy, pcaps=True)
    top = unpack(tgz, tmp_path / "unpacked")
    assert (top / Path(paths[0]).with_name("capture.pcap")).stat().st_size == 64
    assert manifest["pcaps"] == {"included": True, "left_out": []}
    assert manifest["code"]["commit"] is None and "not from a git checkout" in manifest["code"]["no_git"]
    assert (top / "code/workflow/xdplab/stats.py").is_file() and (top / "code/Snakefile").is_file()
    assert not (top / "code/results").exists() and not (top / "code.diff").exists()
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=top).returncode == 0


def test_sha256sums_names_sha256sum_must_unescape(tmp_path):
    (tmp_path / "odd\nname\\x").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "plain").write_text("b")
    (tmp_path / "SHA256SUMS").write_text(archive.sha256sums(tmp_path))
    r = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": OK") == 2


class _NoEnvironment(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"error": f"no route {self.path}"}).encode())

    def log_message(self, *args):
        pass


def test_environment_entries_say_what_could_not_be_asked(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoEnvironment)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("t\n")
    try:
        testbed = {"sources": [{"name": "src0", "host": "127.0.0.1", "port": 1, "iface": "lo",
                                "key_file": str(tmp_path / "none")}],
                   "dut": {"agent_url": f"http://127.0.0.1:{server.server_port}", "token_file": str(token)}}
        gone = {"sources": [], "dut": {"agent_url": "http://127.0.0.1:1", "token_file": str(tmp_path / "no-token")}}
        env = hostenv.collect([testbed, testbed, gone], log=lambda m: None)
    finally:
        server.shutdown()
    assert sorted(env) == ["controller.json", "dut-127.0.0.1_1.json", f"dut-127.0.0.1_{server.server_port}.json",
                           "source-src0.json"]
    c = env["controller.json"]
    assert c["packages"]["pandas"] == c["pandas"] and c["snakemake"]
    assert c["host"]["cpu"]["count"] >= 1 and c["host"]["kernel"]["release"] == os.uname().release
    assert "source host root" not in env["source-src0.json"]["error"]
    assert "127.0.0.1:1" in env["source-src0.json"]["error"]
    old_agent = env[f"dut-127.0.0.1_{server.server_port}.json"]
    assert old_agent["status"] == 404 and "no GET /environment" in old_agent["error"]
    assert "cannot read the agent's token" in env["dut-127.0.0.1_1.json"]["error"]


def test_host_facts_name_the_interface_driver():
    from xdplab.source import source_pyz   # the program a source host runs

    r = subprocess.run([sys.executable, str(source_pyz()), "facts", json.dumps(["lo", "xlt-none"])],
                       capture_output=True, text=True, timeout=60)
    facts = json.loads(r.stdout)
    assert facts["kernel"]["release"] == os.uname().release
    assert facts["interfaces"]["lo"]["mtu"] == 65536
    assert facts["interfaces"]["xlt-none"]["driver"] is None
    assert facts["interfaces"]["xlt-none"]["unavailable"], "a reason for what could not be read"


# -- for real: snakemake on the embedded testbed ------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")
def test_snakemake_archive_on_the_embedded_testbed(workflow_copy, tmp_path):
    assert 'include: "workflow/rules/archive.smk"' in (workflow_copy / "Snakefile").read_text(), \
        "the Snakefile must include workflow/rules/archive.smk"
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}
    # warmup_s=0 keep_features=false: an agent without the warm-up and features file works too
    config = ["--config", "duration_s=1", "target_pps=2000", "repeats=2", "experiment=arc", "warmup_s=0",
              "keep_features=false"]

    def snakemake(*args):
        return subprocess.run([str(SNAKEMAKE), "--cores", "1", *args, *config], cwd=workflow_copy, env=env,
                              capture_output=True, text=True, timeout=900)

    try:
        # Trials and archive in one invocation: the testbed is up when the archive asks.
        run = snakemake("all", "archive")
        assert run.returncode == 0, run.stderr[-4000:]
        (tgz,) = (workflow_copy / "results/arc").glob("arc-*.tar.gz")
        top = unpack(tgz, tmp_path / "unpacked")
        assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=top).returncode == 0
        r = run_reaggregate(top, tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        for name in TABLES:
            assert (top / "reaggregated" / name).read_bytes() == (workflow_copy / "results/arc" / name).read_bytes()
        manifest = json.loads((top / "MANIFEST.json").read_text())
        assert len(manifest["trials"]) == 2 and manifest["code"]["commit"] is None
        src = json.loads((top / "environment/source-src0.json").read_text())
        assert src["host"]["interfaces"]["xl-src0"]["driver"] == "veth", src
        (dut,) = top.glob("environment/dut-*.json")
        dut = json.loads(dut.read_text())
        assert "environment" in dut or dut.get("status") == 404, dut
        assert (workflow_copy / "results/arc/logs/archive.log").read_text()

        # Nothing to do afterwards; a new archive alone runs no trial and needs no testbed.
        again = snakemake("-n", "archive")
        assert "Nothing to be done" in again.stdout + again.stderr, again.stdout
        tgz.unlink()
        alone = snakemake("archive")
        assert alone.returncode == 0, alone.stderr[-4000:]
        log = Path(workflow_copy / ".snakemake/log").glob("*.log")
        last = max(log, key=lambda p: p.stat().st_mtime).read_text()
        assert "rule archive" in last and "rule arm_collector" not in last and "check_connectivity" not in last
        (tgz,) = (workflow_copy / "results/arc").glob("arc-*.tar.gz")
        with tarfile.open(tgz) as tar:
            name = next(n for n in tar.getnames() if n.endswith("environment/source-src0.json"))
            src = json.load(tar.extractfile(name))
        # The testbed is down after the run: the entry is what the run's own check recorded.
        assert "error" not in src and "recorded at the run's connectivity check" in src["source_of_record"], src
    finally:
        subprocess.run([sys.executable, "-m", "xdplab.testbed", "down"], cwd=workflow_copy,
                       env={**os.environ, "PYTHONPATH": str(workflow_copy / "workflow")}, capture_output=True)
