# The zero-loss rate search (RFC 2544 throughput): `snakemake --cores 1 ndr --config ...`.
# One search per payload size (and attach mode, collector, pattern); the logic is in
# workflow/xdplab/ndr.py, the method in workflow/rules/NDR.md.
#
# Each step of a search is a checkpoint, results/<exp>/ndr/<search>/step~<k>.json: it reads
# the previous step and the trial that step asked for, and decides the next trial (or ends
# the search).  Each trial is a normal trial of the trial rules (trials/<point>/rep~0, its
# duration ndr_probe_s or ndr_confirm_s in its point's name), so it is cached like any
# other: a finished search reruns nothing, and a grid trial at the same point is reused.

import json  # noqa: E402

from xdplab import ndr as ndr_search  # noqa: E402

NDR_PARAMS = ndr_search.Params.from_settings(S)
if NDR_PARAMS.problems():
    raise WorkflowError("xdplab: invalid configuration:\n" + "\n".join(f"  - {p}" for p in NDR_PARAMS.problems()))
# {search name: the settings its trials share}
NDR_SEARCHES = ndr_search.searches(S, NDR_PARAMS)
NDR_DIR = f"{RESULTS}/ndr/{{search}}"


wildcard_constraints:
    search=ndr_search.SEARCH_PATTERN,
    k=r"\d+",


def ndr_base(wildcards):
    try:
        return NDR_SEARCHES[wildcards.search]
    except KeyError:
        raise WorkflowError(f"xdplab: {wildcards.search} is not a zero-loss search of this configuration "
                            f"(these are: {', '.join(NDR_SEARCHES)})") from None


def ndr_step_input(wildcards):
    """Step k's inputs: step k-1 and the trial it asked for (none for step 0)."""
    k = int(wildcards.k)
    if k == 0:
        return {}
    previous = checkpoints.ndr_step.get(search=wildcards.search, k=k - 1).output.step
    with open(previous) as f:
        asked = json.load(f)["next"]
    if asked is None:
        raise WorkflowError(f"xdplab: {previous} ended its search; there is no step {k}")
    return {"previous": previous, "trial": f"{trials.trial_dir(RESULTS, asked['point'], 0)}/trial.json"}


checkpoint ndr_step:
    input:
        unpack(ndr_step_input),
    output:
        step=f"{NDR_DIR}/step~{{k}}.json",
    params:
        search=ndr_base,
        ndr=NDR_PARAMS.as_dict(),
    log:
        f"{NDR_DIR}/logs/step~{{k}}.log",
    script:
        "../scripts/ndr_step.py"


def ndr_last_step(search):
    """The step that ended a search: each step is read once it exists (a missing one is
    made first: the checkpoint), until one asks for no further trial."""
    k = 0
    while True:
        path = checkpoints.ndr_step.get(search=search, k=k).output.step
        with open(path) as f:
            if json.load(f)["next"] is None:
                return path
        k += 1


rule ndr_table:
    input:
        steps=lambda wildcards: [ndr_last_step(s) for s in NDR_SEARCHES],
    output:
        csv=report(f"{RESULTS}/ndr.csv", caption="../report/ndr.rst", category=REPORT_CATEGORY, subcategory="Zero-loss rate"),
        probes=f"{RESULTS}/ndr_probes.csv",
        md=f"{RESULTS}/ndr.md",
    params:
        experiment=EXP,
    log:
        f"{RESULTS}/logs/ndr_table.log",
    script:
        "../scripts/ndr_table.py"


rule ndr_figure:
    input:
        csv=rules.ndr_table.output.csv,
        probes=rules.ndr_table.output.probes,
    output:
        svg=report(f"{RESULTS}/ndr.svg", caption="../report/ndr.rst", category=REPORT_CATEGORY, subcategory="Zero-loss rate"),
        png=f"{RESULTS}/ndr.png",
    params:
        experiment=EXP,
    log:
        f"{RESULTS}/logs/ndr_figure.log",
    script:
        "../scripts/ndr_figure.py"


rule ndr:
    input:
        rules.ndr_table.output.csv,
        rules.ndr_figure.output.svg,
        rules.ndr_figure.output.png,
