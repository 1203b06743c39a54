"""The README and docs/ stay true: every configuration key and every result column is
explained, the README stays a front door that names where each stage lives, and every
link and path the docs give leads somewhere."""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab import configdocs  # noqa: E402
from xdplab.accounting import COLUMNS  # noqa: E402
from xdplab.config import load_schema  # noqa: E402

README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
# The pages that hold the configuration table and the result columns' table.
CONFIGURATION = (DOCS / "configuration.md").read_text()
METHOD = (DOCS / "method.md").read_text()
# Every Markdown file a reader follows links through.
PAGES = [REPO / "README.md", REPO / "config/README.md", REPO / "benchmarks/README.md",
         *sorted(DOCS.glob("*.md"))]
# A README of a few screens (iperf3's, Flent's, xdp-tools' are), the manual in docs/.
README_MAX_LINES = 200
# The stages of the DAG a newcomer looks for in the README's map.
STAGES = ("build", "check_connectivity", "arm", "launch", "verify", "gather", "aggregate", "figures",
          "ndr", "archive")


def test_every_config_key_is_in_the_configuration_table():
    missing = [k for k in load_schema()["properties"] if f"| `{k}` |" not in CONFIGURATION]
    assert not missing, f"not in docs/configuration.md's table: {missing}"


def test_configuration_tables_are_generated_from_the_schema():
    """The schema's descriptions are the one place a key is explained; both tables are made
    from them, so a new key without a description, or a table edited by hand, fails here."""
    generated = configdocs.table()
    for path in configdocs.TARGETS:
        where = path.relative_to(REPO)
        text = path.read_text()
        assert configdocs.render(text, generated, str(where)) == text, (
            f"{where}: its configuration table is not the one the schema's descriptions give; "
            f"run `{configdocs.COMMAND}` (and edit descriptions in workflow/schemas/config.schema.yaml)")


def test_every_result_column_is_explained():
    missing = [c for c in COLUMNS if f"`{c}`" not in METHOD and not c.startswith("unexplained_")]
    assert not missing, f"not explained in docs/method.md: {missing}"
    assert "`unexplained_*`" in METHOD


def test_the_two_commands_come_first():
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block
    assert "make test" in (REPO / ".ci/run").read_text()


def test_config_readme_explains_every_key_without_sending_the_reader_back():
    text = (REPO / "config/README.md").read_text()
    missing = [k for k in load_schema()["properties"] if f"| `{k}` |" not in text]
    assert not missing, missing
    assert "config/README.md" in (REPO / "config/config.yaml").read_text()


def test_the_readme_is_a_front_door():
    lines = README.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the manual goes in docs/"
    figure = re.search(r"!\[[^\]]*\]\((docs/img/[^)]+\.png)\)", README)
    assert figure and (REPO / figure[1]).is_file(), "the README shows a figure a run makes"
    assert "summary.csv" in README and "experiment,target_pps," in README, "a sample of summary.csv"
    index = (DOCS / "README.md").read_text()
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert f"(docs/{page.name}" in README, (
                f"docs/{page.name} is not linked from README.md: add a line to its \"Documentation\" list")
            assert f"({page.name})" in index, (
                f"docs/{page.name} is not in the index, docs/README.md: add a row to its table")


def test_the_readme_says_where_each_stage_lives():
    stage_map = README.split("## Where each stage lives", 1)[1].split("\n## ", 1)[0]
    rows = {m[1]: m[0] for m in re.finditer(r"^\| (\w+) \|.*$", stage_map, re.M)}
    assert set(STAGES) <= set(rows), f"stages missing from the map: {set(STAGES) - set(rows)}"
    rule_files = {p.name for p in (REPO / "workflow/rules").glob("*.smk")}
    scripts = {p.name for p in (REPO / "workflow/scripts").glob("*.py")}
    for stage in STAGES:
        names = re.findall(r"`([\w.]+\.(?:smk|py))`", rows[stage])
        assert any(n in rule_files for n in names), f"{stage}: no rule file named"
        assert any(n in scripts for n in names), f"{stage}: no script named"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set:
    return {_slug(m[1]) for m in re.finditer(r"^#+ (.+)$", page.read_text(), re.M)}


def test_every_link_between_the_docs_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_path_the_docs_name_exists():
    missing = []
    for page in PAGES:
        for path in re.findall(r"`((?:workflow|bpf|benchmarks|envs|profiles|tests|config)/[\w./-]+)`",
                               page.read_text()):
            if not (REPO / path.rstrip("/")).exists():
                missing.append(f"{page.relative_to(REPO)}: {path}")
    assert not missing, "named in the docs but not in the repository:\n" + "\n".join(missing)


# `README.md, "Result columns"`, `README "Configuration"`, ``README.md`` ("Result columns")
SECTION_REFERENCE = re.compile(r"README(?:\.md)?`{0,2}(?:,\s*|\s+\(?)[\"']([A-Z][^\"'\n]{2,60})[\"']")


def test_references_to_readme_sections_name_sections_it_has():
    """A message or comment that sends the reader to a section of README.md names one that is
    there (the manual moved to docs/)."""
    headings = {m[1].strip() for m in re.finditer(r"^#+ (.+)$", README, re.M)}
    wrong = []
    files = [REPO / "Makefile", REPO / "Snakefile", *(REPO / "workflow").rglob("*.*"),
             *(REPO / "benchmarks").glob("*.py"), *(REPO / "config").glob("*"),
             *(p for p in (REPO / "tests").glob("*.py") if p.name != "test_readme.py")]
    for f in files:
        if f.suffix not in ("", ".py", ".smk", ".rst", ".md", ".yaml") or not f.is_file():
            continue
        for section in SECTION_REFERENCE.findall(f.read_text()):
            if section not in headings:
                wrong.append(f"{f.relative_to(REPO)}: README, {section!r}")
    assert not wrong, "sections README.md no longer has (see docs/):\n" + "\n".join(wrong)


def test_benchmarks_readme_shows_the_latest_figures():
    newest = sorted((REPO / "benchmarks/results").glob("*.md"))[-1]
    text = (REPO / "benchmarks/README.md").read_text()
    m = re.search(r"<!-- latest benchmark: (\S+) [^>]*-->\n(.*?)<!-- end of latest benchmark -->", text, re.S)
    assert m, "benchmarks/README.md has lost its markers"
    assert m[1] == newest.relative_to(REPO).as_posix() and m[2] == newest.read_text(), (
        f"benchmarks/README.md does not show the newest figures: copy {newest.relative_to(REPO)} whole "
        "between its markers (and name it in the first one)")


def test_no_reference_to_files_the_repository_does_not_have():
    for name in ("TWO_MACHINE_TEST_APPROACH.md",):
        for page in PAGES:
            assert name not in page.read_text(), page
    for path in (REPO / "benchmarks").glob("*.py"):
        assert "/tmp/pv/" not in path.read_text(), path


# -- the docs' commands, run where they can run here -----------------------------------------

LAB = (DOCS / "lab.md").read_text()


def _sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def _commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split("  #", 1)[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _env_with_venv(workdir: Path) -> dict:
    """What `. .venv/bin/activate` gives: the venv's bin first on PATH."""
    import os

    venv_bin = Path(sys.executable).parent
    return {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv_bin.parent),
            "PYTHONPATH": str(workdir / "workflow")}


def test_the_lab_pages_first_commands_plan_a_lab_run(workflow_copy, tmp_path):
    """docs/lab.md's first block as a user runs it: copy the example, edit it (here: key and
    token files that exist), activate .venv, and its snakemake line, planned (-n)."""
    import subprocess

    cp, activate, run = _commands(_sh_blocks(LAB)[0])
    assert cp == "cp config/lab.example.yaml config/lab.yaml" and activate == ". .venv/bin/activate", (cp, activate)
    assert run.startswith("snakemake --cores 1 --configfile config/lab.yaml"), run
    subprocess.run(cp.split(), cwd=workflow_copy, check=True)
    key, token = tmp_path / "id_ed25519", tmp_path / "agent.token"
    key.write_text("not read by a dry run\n")
    token.write_text("0" * 64 + "\n")
    key.chmod(0o600)
    token.chmod(0o600)
    lab = workflow_copy / "config/lab.yaml"
    lab.write_text(lab.read_text().replace("~/.ssh/id_ed25519", str(key))
                   .replace("~/.config/xdplab/agent.token", str(token)))
    proc = subprocess.run(["bash", "-c", run + " -n"], cwd=workflow_copy, env=_env_with_venv(workflow_copy),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "check_connectivity" in out and "arm_collector" in out, out[-3000:]


def test_the_agents_token_line_makes_a_private_token(tmp_path):
    """The docs' token line (umask 077, 32 random bytes in hex) gives a file the controller
    accepts: mode 0600, 64 characters."""
    import subprocess

    line = next(c for b in _sh_blocks(LAB) for c in _commands(b) if "token_hex" in c)
    path = tmp_path / "agent.token"
    subprocess.run(["bash", "-c", line.replace("/etc/xdplab/agent.token", str(path))], check=True)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}\n", path.read_text())


def test_the_metrics_curl_line_answers_with_the_token_as_bearer(embedded_testbed, tmp_path):
    """docs/lab.md's curl for /metrics, against the embedded testbed's agent (root: run under
    the testbed lock): the Bearer header is accepted, and the counters are there."""
    import subprocess

    desc = embedded_testbed[1]
    line = next(c for b in _sh_blocks(LAB) for c in _commands(b) if c.startswith("curl") and "/metrics" in c)
    hostport = desc["dut"]["agent_url"].split("//", 1)[1]
    line = line.replace("/etc/xdplab/agent.token", desc["dut"]["token_file"]).replace("192.0.2.10:7717", hostport)
    proc = subprocess.run(["bash", "-c", line + " --fail --silent --show-error --noproxy '*'"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "xdplab_agent_info{" in proc.stdout and "xdplab_session_armed 0" in proc.stdout, proc.stdout
    wrong = tmp_path / "wrong.token"
    wrong.write_text("0" * 64)
    proc = subprocess.run(["bash", "-c", line.replace(desc["dut"]["token_file"], str(wrong))
                           + " --silent --noproxy '*' -o /dev/null -w '%{http_code}'"],
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout == "401", proc
