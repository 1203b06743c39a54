# The search's settings and the functions its rules use (search.smk): which searches the
# configuration asks for, the build their trials need, the latency table's inputs.

from types import SimpleNamespace  # noqa: E402

from xdplab import mlr  # noqa: E402

MLR_PARAMS = mlr.Params.from_settings(SETTINGS)
SEARCHES = mlr.searches(SETTINGS, MLR_PARAMS)
SEARCH_DIR = f"{RESULTS}/search/{{search}}"


def search_base(wildcards):
    try:
        return SEARCHES[wildcards.search]
    except KeyError:
        raise WorkflowError(
            f"xdplab: {wildcards.search} is not a search of this configuration (these are: {', '.join(SEARCHES)})"
        ) from None


def search_manifest(wildcards):
    """The build the search's trials need (as manifest_of for one of its trials)."""
    base = search_base(wildcards)
    return manifest_of(SimpleNamespace(point=trials.point_name(dict(base, target_pps=1000, duration_s=1))))


def search_inputs(wildcards):
    """The build a search's (or its latency trials') job needs: on one testbed the rules'
    build (search_manifest); with a pool, the user's program only, if any (the job takes a
    testbed of the pool and readies its program there itself, xdplab.steps.pooled)."""
    if POOL:
        return program_inputs(search_base(wildcards))
    return {"build": search_manifest(wildcards)}


SEARCH_SEQUENCE = dict(
    testbed=CONNECTIVITY_TESTBED,
    environment=f"results/build/{TESTBED_ID}/environment.json",
    sources=f"results/build/{TESTBED_ID}/sources_checked.json",
    preflight_record=PREFLIGHT_RECORD,
)


def latency_inputs(wildcards):
    """The plans, and the pre-flight's record when there is one (its clock decision says
    whether two hosts' clocks were synchronised)."""
    inputs = {"plan": expand(f"{SEARCH_DIR}/latency.json", search=list(SEARCHES))}
    if Path(PREFLIGHT_RECORD).exists():
        inputs["preflight"] = PREFLIGHT_RECORD
    return inputs
