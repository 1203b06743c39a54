# The zero-loss search's settings and the functions its rules use (ndr.smk): which
# searches the configuration asks for, and how each step finds the one before it.

import json  # noqa: E402

from xdplab import ndr as ndr_search  # noqa: E402

NDR_PARAMS = ndr_search.Params.from_settings(SETTINGS)
if NDR_PARAMS.problems():
    raise WorkflowError("xdplab: invalid configuration:\n" + "\n".join(f"  - {p}" for p in NDR_PARAMS.problems()))
# {search name: the settings its trials share}
NDR_SEARCHES = ndr_search.searches(SETTINGS, NDR_PARAMS)
NDR_DIR = f"{RESULTS}/ndr/{{search}}"


def ndr_base(wildcards):
    try:
        return NDR_SEARCHES[wildcards.search]
    except KeyError:
        raise WorkflowError(
            f"xdplab: {wildcards.search} is not a zero-loss search of this configuration "
            f"(these are: {', '.join(NDR_SEARCHES)})"
        ) from None


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
