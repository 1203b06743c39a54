"""What a failed run says at its end: each reason once, with what to do about it, and
advice to run the same command again only where that can help by itself.

The first tests need nothing but this machine: the agent client against a port where
nothing listens, a server that refuses the token and one that never answers (each a
real socket on 127.0.0.1), the end-of-run text from failure records, and run_step in a
subprocess.  The last ones run the workflow in lab mode against the embedded testbed
(root, namespaces, sshd: run them under the testbed lock), with the agent's URL on a
port where nothing listens, and with a token file that is not the agent's.
"""

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab import housekeeping  # noqa: E402
from xdplab.agentclient import AgentClient, AgentError  # noqa: E402

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
RERUN = re.compile(r"run the same command again", re.I)


def _closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _token_file(tmp_path, token="0" * 64) -> Path:
    path = tmp_path / "agent.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def _agent_error(url, token_file, timeout_s=2.0) -> AgentError:
    client = AgentClient.from_description({"agent_url": url, "token_file": str(token_file)},
                                          timeout_s=timeout_s)
    with pytest.raises(AgentError) as e:
        client.health()
    return e.value


# -- the agent client knows the cause ---------------------------------------------------

def test_a_refused_connection_says_to_check_that_the_agent_listens_there(tmp_path):
    port = _closed_port()
    e = _agent_error(f"http://127.0.0.1:{port}", _token_file(tmp_path))
    assert "Connection refused" in str(e), e
    assert f"127.0.0.1:{port}" in e.fix and "--listen" in e.fix and "agent runs" in e.fix, e.fix
    assert not e.transient


class _Refuses(http.server.BaseHTTPRequestHandler):
    """Answers every request as the agent answers a wrong token."""

    def do_GET(self):
        body = json.dumps({"error": "X-Xdplab-Token header: missing or wrong token"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_refused_token_names_the_file_read_and_the_agents_token_file(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        token = _token_file(tmp_path)
        e = _agent_error(f"http://127.0.0.1:{server.server_port}", token)
    finally:
        server.shutdown()
        server.server_close()
    assert e.status == 401 and "the token was refused" in str(e), e
    assert str(token) in e.fix and "--token-file" in e.fix, e.fix
    assert "X-Xdplab-Token" in e.fix and "Authorization: Bearer" in e.fix, e.fix
    assert not e.transient


def test_an_agent_that_never_answers_is_a_passing_failure(tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        e = _agent_error(f"http://127.0.0.1:{silent.getsockname()[1]}", _token_file(tmp_path),
                         timeout_s=0.5)
    assert "no answer to GET /health within 0.5 s" in str(e), e
    assert e.transient and "log" in e.fix


# -- the end of the run --------------------------------------------------------------------

REFUSED = ("connectivity check failed:\n  DUT agent at http://192.0.2.10:7717: cannot connect "
           "([Errno 111] Connection refused)")
REFUSED_FIX = ("nothing listens at http://192.0.2.10:7717: check that the DUT agent runs and "
               "listens at 192.0.2.10:7717 (the address and port of its --listen)")


def _failure(where, reason=REFUSED, fix=REFUSED_FIX, rerun=False, step="check_connectivity"):
    return {"step": step, "reason": reason, "fix": fix, "rerun": rerun, "where": where,
            "time": "2026-12-06T18:00:00+0000", "unix_s": 1.0}


def test_steps_that_failed_alike_are_said_once_with_the_fix_and_no_rerun_advice():
    failures = [_failure("the build")] + [_failure(f"trial default/p{i}/rep~0") for i in range(18)]
    text = "\n".join(housekeeping.verdict(failures, "results/default"))
    assert text.count("Connection refused") == 1, text
    assert text.count("fix: ") == 1 and REFUSED_FIX in text, text
    assert "check_connectivity FAILED 19 times (the build and 18 trials)" in text, text
    assert not RERUN.search(text), text
    assert text.splitlines()[-1].startswith("xdplab: the run failed; each step's log is in"), text


def test_a_trial_step_says_trial_and_step_and_an_interruption_says_run_again():
    failures = [_failure("trial default/p1/rep~0", reason="interrupted by SIGINT", fix=None,
                         rerun=True, step="launch_generator")]
    lines = housekeeping.verdict(failures, "results/default")
    assert lines[0] == ("xdplab: trial default/p1/rep~0 FAILED in launch_generator at "
                        "2026-12-06T18:00:00+0000: interrupted by SIGINT"), lines
    assert RERUN.search(lines[-1]) and "fix:" not in "\n".join(lines), lines


def test_one_mistake_among_passing_failures_means_no_rerun_advice():
    failures = [_failure("trial a/p1/rep~0", reason="interrupted by SIGTERM", fix=None, rerun=True),
                _failure("trial a/p2/rep~0")]
    text = "\n".join(housekeeping.verdict(failures, "results/a"))
    assert not RERUN.search(text) and "once the cause above is dealt with" in text, text


def test_cleaning_up_does_not_repeat_a_reason_the_end_gives(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    desc = {"dut": {"agent_url": url, "token_file": str(_token_file(tmp_path))}, "sources": []}
    notes = housekeeping._quiesce(desc)
    assert len(notes) == 1 and notes[0].startswith("could not disarm the DUT agent"), notes
    fix = _agent_error(url, desc["dut"]["token_file"]).fix
    assert housekeeping._quiesce(desc, known=f"GET /health ...\n{fix}") == []


STEP = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    sys.path.insert(0, sys.argv[1])
    from xdplab.steps import machinery
    from xdplab.agentclient import AgentClient

    def check(sm, log):
        AgentClient.from_description({"agent_url": sys.argv[2], "token_file": sys.argv[3]},
                                     timeout_s=2).health()

    stage = sys.argv[4]
    sm = SimpleNamespace(rule="check_connectivity", output=[stage + "/connectivity.json"],
                         log=[stage + "/logs/check_connectivity.log"], params=SimpleNamespace())
    machinery.run_step(sm, check)
""")


def test_a_step_that_fails_again_alike_says_so_in_one_line(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    token = _token_file(tmp_path)
    said = []
    for stage in ("results/build/lab-1/port~12345", "results/default/trials/pps~1_x/rep~0"):
        proc = subprocess.run([sys.executable, "-c", STEP, str(REPO / "workflow"), url, str(token), stage],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stderr
        said.append(proc.stderr.strip())
    assert said[0] == f"xdplab check_connectivity: DUT agent at {url}: cannot connect ([Errno 111] Connection refused)"
    assert said[1] == ("xdplab check_connectivity: the same failure as above "
                       "(trial default/pps~1_x/rep~0)"), said[1]
    records = [json.loads(line) for line in (tmp_path / ".snakemake/xdplab-failures.jsonl").read_text().splitlines()]
    assert [r["where"] for r in records] == ["the build", "trial default/pps~1_x/rep~0"], records
    assert all("--listen" in r["fix"] and r["rerun"] is False for r in records), records
    log = (tmp_path / "results/build/lab-1/port~12345/logs/check_connectivity.log").read_text()
    assert "fix: nothing listens at" in log, log


# -- a lab run on the embedded testbed -------------------------------------------------------

@pytest.fixture(scope="module")
def lab_source(embedded_testbed):
    """The embedded testbed's source host and DUT, as a lab's configuration names them."""
    from xdplab.steps.connectivity import describe_embedded

    desc = describe_embedded(embedded_testbed[1], "python3")
    s = desc["sources"][0]
    source = {k: s[k] for k in ("host", "user", "port", "key_file", "known_hosts", "iface",
                                "address", "dut_iface")}
    return source, desc["dut"]


def _lab_run(workdir, config: dict):
    import yaml

    path = workdir / "lab.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(workdir / "workflow")}
    proc = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--configfile", str(path), "--config",
                           "duration_s=2", "target_pps=1000,2000"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("mistake", ["agent not listening", "token not the agent's"])
def test_a_lab_run_ends_with_the_reason_once_and_its_fix(lab_source, workflow_copy, tmp_path, mistake):
    source, dut = lab_source
    url, token = dut["agent_url"], dut["token_file"]
    if mistake == "agent not listening":
        url = url.rsplit(":", 1)[0] + ":7799"
        reason = f"DUT agent at {url}: cannot connect ([Errno 111] Connection refused)"
        fix = f"fix: nothing listens at {url}: check that the DUT agent runs and listens at"
    else:
        token = str(_token_file(tmp_path))
        reason = f"DUT agent at {url}: GET /health failed with HTTP 401: the token was refused"
        fix = f"fix: the token read from {token} is not the agent's: copy the file the agent was started with (its --token-file)"
    rc, out = _lab_run(workflow_copy, {"testbed": "lab", "lab": {
        "sources": [source], "dut": {"agent": url, "token_file": token, "ifaces": dut["ifaces"]}}})
    assert rc == 1, out[-3000:]
    # The end: after Snakemake's own closing lines, each reason once, with its fix.
    end = out.split("At least one job did not complete successfully.", 1)[1]
    assert end.count(reason) == 1 and end.count(fix) == 1, end
    assert "check_connectivity FAILED 3 times (the build and 2 trials), each time:" in end, end
    assert "Authorization: Bearer" in end or mistake == "agent not listening", end
    # Three checks failed alike: said in full when it happened, once, and at the end.
    assert out.count(reason) == 2, out
    assert out.count("xdplab check_connectivity: the same failure as above (trial ") == 2, out
    assert not RERUN.search(out) and "could not disarm" not in out, out[-3000:]
