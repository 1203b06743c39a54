"""Rule archive: the experiment packed into results/<experiment>/<experiment>-<UTC
date>.tar.gz with the code that ran, an environment manifest per host, SHA256SUMS and
./reaggregate (workflow/xdplab/archive.py says what is where)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import archive, hostenv, steps  # noqa: E402


def testbeds_of(trial_paths) -> list:
    """The testbed descriptions the trials ran on (trial.json "testbed"), each once."""
    found = []
    for p in trial_paths:
        with open(p) as f:
            tb = json.load(f).get("testbed")
        if tb and tb not in found:
            found.append(tb)
    return found


def recorded_environment() -> tuple[dict, dict]:
    """The hosts' environment as the last run's connectivity check recorded it
    (results/build/<testbed>/environment.json), and when."""
    hosts, when = {}, {}
    for f in sorted(Path("results/build").glob(f"*/{steps.ENVIRONMENT_FILE}")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for key, entry in (rec.get("hosts") or {}).items():
            if isinstance(entry, dict) and "error" not in entry:
                hosts[key], when[key] = entry, f"{rec.get('recorded')} ({f})"
    return hosts, when


def run(sm, log):
    environment = hostenv.collect(testbeds_of(sm.input.trials), log=log)
    # A host that cannot be asked now (the embedded testbed is down after a run): what the
    # run's own check recorded of it.
    recorded, when = recorded_environment()
    for key, entry in list(environment.items()):
        if isinstance(entry, dict) and "error" in entry and key in recorded:
            environment[key] = dict(recorded[key], source_of_record=f"recorded at the run's connectivity "
                                    f"check, {when[key]}; asked now: {entry['error']}")
            log(f"environment: {key}: taken from the run's record ({when[key]})")
    archive.build(sm.output.archive, experiment=sm.params.experiment,
                  results_dir=str(Path(sm.output.archive).parent), trial_paths=list(sm.input.trials),
                  settings=sm.params.settings, repo=sm.params.repo, pcaps=sm.params.pcaps,
                  environment=environment, skip=[sm.log[0]], log=log)
    print(f"xdplab archive: {sm.output.archive}", file=sys.stderr, flush=True)


steps.run_step(snakemake, run)
