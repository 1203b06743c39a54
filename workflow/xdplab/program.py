"""The program under test when it is the user's: built from C with clang on the controller,
taken as an ELF object, or attached on the DUT by the user's own loader; checked by the DUT
agent through the verifier before any traffic.

    build   (C sources only) clang -target bpf into results/build/programs/<key>.bpf.o, with
            the compiler's version and flags recorded beside it; a compile error ends the run
            with clang's own message.
    check   the object is sent to the DUT agent (POST /programs, when the agent allows
            uploads; an agent started with --allow-programs DIR finds it there by sha256) and
            loaded through the verifier with its program name and globals, nothing attached
            (POST /programs/check); a refusal names the global, the program or the verifier's
            last lines, and where the full log is.

The arm step then names the object by its sha256; the agent loads it again for the trial.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
from pathlib import Path

from .agentclient import AgentError
from .steps import Log, StepError, agent_for, read_json, write_json

# The flags `make agent` builds the observer with, less -Werror (a user's warnings are the
# user's); the source's own directory and bpf/ (xdplab.h) are on the include path.
CFLAGS = ["-O2", "-g", "-Wall", "-target", "bpf"]
CLANG = "clang"
COMPILE_TIMEOUT_S = 300


def program_key(program: str, sha256: str) -> str:
    """A build's file name: the program's slug and the first 12 hex digits of its sha256."""
    from .trials import program_slug

    return f"{program_slug(program)}-{sha256[:12]}"


def compile_command(source: str, output: str, repo: str = ".") -> list[str]:
    include = ["-I", str(Path(source).resolve().parent), "-I", str(Path(repo, "bpf").resolve()),
               "-I", f"/usr/include/{platform.machine()}-linux-gnu"]
    return [CLANG, *CFLAGS, *include, "-c", str(source), "-o", str(output)]


def build_source(source: str, output: str, manifest: str, log: Log) -> None:
    """Compile a C source into a BPF ELF object; record how."""
    if shutil.which(CLANG) is None:
        raise StepError(f"program {source}: clang is not installed on this controller (make setup "
                        f"installs it; on another machine: apt-get install clang libbpf-dev)")
    cmd = compile_command(source, output + ".tmp")
    log(f"building {source}: {' '.join(cmd)}", echo=True)
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=COMPILE_TIMEOUT_S)
    for line in r.stderr.splitlines():
        log(f"clang: {line}")
    if r.returncode != 0:
        Path(output + ".tmp").unlink(missing_ok=True)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        raise StepError(f"program {source} does not compile (clang exit {r.returncode}):\n  "
                        + "\n  ".join(lines[-15:]))
    Path(output + ".tmp").replace(output)
    version = subprocess.run([CLANG, "--version"], capture_output=True, text=True).stdout
    data = Path(output).read_bytes()
    write_json(manifest, {
        "source": source, "source_sha256": hashlib.sha256(Path(source).read_bytes()).hexdigest(),
        "object": output, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "compiler": version.splitlines()[0] if version else CLANG,
        "command": cmd[:-3] + ["-c", source, "-o", output], "warnings": r.stderr.strip() or None})
    log(f"built {output} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]})",
        echo=True)


def check_on_dut(obj: str, build_manifest: str | None, settings: dict, connectivity: str,
                 output: str, log: Log) -> None:
    """Have the DUT agent load the object through the verifier."""
    conn = read_json(connectivity)
    agent = agent_for(conn)
    data = Path(obj).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    allowed = (agent.health().get("user_programs") or {})
    where = conn["dut"].get("agent_url", "the DUT agent")
    if not allowed.get("allow_program_upload") and not allowed.get("allow_programs"):
        raise StepError(f"program {settings['program']}: the DUT agent at {where} does not load user "
                        f"programs; its operator must start it with --allow-programs DIR (and put "
                        f"{Path(obj).name} there) or --allow-program-upload")
    if allowed.get("allow_program_upload"):
        agent.upload_program(data, sha)
    spec = {"sha256": sha, "name": settings.get("program_name") or None,
            "globals": settings.get("program_globals") or {}}
    log(f"checking program {settings['program']} on the DUT (sha256 {sha[:16]}, "
        f"name {spec['name'] or '(the only XDP program)'}, globals {json.dumps(spec['globals'])})",
        echo=True)
    try:
        loaded = agent.check_program(spec, settings["port"])
    except AgentError as e:
        raise StepError(f"program {settings['program']}: {e}") from None
    out = {"program": settings["program"], "sha256": sha, "object": obj, "spec": spec,
           "loaded": loaded, "build": read_json(build_manifest) if build_manifest else None,
           "prog_tag": loaded.get("tag")}
    write_json(output, out)
    log(f"program {settings['program']}: {loaded.get('name')} loads and verifies: tag "
        f"{loaded.get('tag')}, {loaded.get('xlated_insns')} instructions "
        f"({loaded.get('jited_bytes')} bytes JIT-ed), {loaded.get('nr_map_ids')} maps", echo=True)


def upload_again(agent, health: dict, build: dict) -> None:
    """Before an arm: the agent that checked the object may have been restarted since (a new
    testbed, an empty state directory), and it names objects by sha256 only: send it again
    where uploads are allowed (an agent with --allow-programs finds it in its directory)."""
    if not (health.get("user_programs") or {}).get("allow_program_upload"):
        return
    data = Path(build["object"]).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != build["sha256"]:
        raise StepError(f"program {build['program']}: {build['object']} changed since it was "
                        f"checked on the DUT (sha256 {sha[:16]}, checked {build['sha256'][:16]})")
    agent.upload_program(data, sha)


def arm_fields(settings: dict, build: dict) -> dict:
    """The arm request's program fields for a trial's settings."""
    from .trials import OBSERVED_BY, program_kind

    kind = program_kind(settings.get("program") or "collector")
    if kind == "collector":
        return {}
    observe = OBSERVED_BY[settings.get("observe") or "full"]
    if kind == "attached":
        # The user's program holds the interface: xdplab cannot put its collector in
        # front of it without detaching it, so it observes from outside only.
        return {"program": "attached", "collector": "off", "expected_tag": None}
    return {"program": build["spec"], "collector": observe, "expected_tag": build.get("prog_tag")}
