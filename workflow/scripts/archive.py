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


def run(sm, log):
    environment = hostenv.collect(testbeds_of(sm.input.trials), log=log)
    archive.build(sm.output.archive, experiment=sm.params.experiment,
                  results_dir=str(Path(sm.output.archive).parent), trial_paths=list(sm.input.trials),
                  settings=sm.params.settings, repo=sm.params.repo, pcaps=sm.params.pcaps,
                  environment=environment, skip=[sm.log[0]], log=log)
    print(f"xdplab archive: {sm.output.archive}", file=sys.stderr, flush=True)


steps.run_step(snakemake, run)
