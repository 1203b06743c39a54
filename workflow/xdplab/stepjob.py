"""The steps that run once per trial (check_connectivity and the four trial steps), as
their Snakemake rules run them: a `shell:` command, `python workflow/scripts/step.py
<log> <job>`, where <job> is the JSON of the step's name and the job's named inputs,
outputs and params (common.smk, step_job).

Why not `script:`: a script job starts by loading Snakemake in the new interpreter to
unpickle its job object, ~40 ms before the step's first line, five times per trial.
This gives the steps the same object (`sm.input.<name>`, `sm.output[0]`, `sm.params.<name>`,
`sm.log[0]`, `sm.rule`) from plain JSON.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

from . import steps


class Named(list):
    """A list whose items also have names, like Snakemake's input, output and params."""

    def __init__(self, named: dict):
        super().__init__(named.values())
        self.__dict__.update(named)


def _check_connectivity(sm, log):
    desc = steps.bring_up(dict(sm.params.testbed), log)
    steps.check_connectivity(desc, sm.output.connectivity, log, sources_record=sm.params.sources)
    steps.record_environment_once(desc, sm.params.environment, log)


STEPS = {
    "check_connectivity": _check_connectivity,
    "arm_collector": lambda sm, log: steps.arm_collector(
        sm.params.trial, sm.params.settings, sm.input.build, sm.input.connectivity, sm.output.arm, log),
    "launch_generator": lambda sm, log: steps.launch_generator(
        sm.params.trial, sm.params.settings, sm.input.arm, sm.input.connectivity, sm.output.generator, log),
    "verify_capture": lambda sm, log: steps.verify_capture(
        sm.params.trial, sm.params.settings, sm.input.arm, sm.input.generator, sm.input.connectivity,
        sm.output.capture, log),
    "gather_results": lambda sm, log: steps.gather_results(
        sm.params.trial, sm.params.settings, sm.input.arm, sm.input.generator, sm.input.capture,
        sm.input.connectivity, sm.output.trial, log),
}


def job(log: str, text: str) -> SimpleNamespace:
    """The job as the step sees it, from the command line's JSON."""
    j = json.loads(text)
    return SimpleNamespace(rule=j["step"], log=[log], input=Named(j["input"]), output=Named(j["output"]),
                           params=Named(j["params"]))


def main(argv: list[str]) -> None:
    sm = job(*argv) if len(argv) == 2 else None
    if sm is None or sm.rule not in STEPS:
        sys.exit(f"usage: step.py <log> <job JSON>, the job's step one of {', '.join(STEPS)}")
    steps.run_step(sm, STEPS[sm.rule])
