# Validated configuration, the list of trials, and paths shared by the rules.

import hashlib
import re
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from snakemake.exceptions import WorkflowError  # noqa: E402
from xdplab.config import ConfigError, validate_config  # noqa: E402
from xdplab import housekeeping, program, snakemake_internals, trials  # noqa: E402

# No parameter here is a pandas object: Snakemake need not import pandas to compare them.
snakemake_internals.params_compared_without_pandas()
# Snakemake's process ends after its atexit handlers, without the interpreter's teardown (0.5 s).
snakemake_internals.exit_without_teardown()


def settings_to_report(settings):
    """`snakemake --report` of a configuration that has not run reports the run recorded
    in results/<experiment>/config.yaml instead, or says what to run.  xdplab.report loads
    pandas (0.3 s): imported for a report only, not at every invocation's start."""
    from xdplab import report as xdplab_report

    try:
        recorded = xdplab_report.configuration_to_report(settings)
    except xdplab_report.NothingToReport as e:
        raise WorkflowError(f"xdplab: {e}") from None
    if recorded is None:
        return settings
    print(
        f"xdplab: this configuration has not run; reporting the run recorded in "
        f"results/{settings['experiment']}/config.yaml",
        file=sys.stderr,
    )
    config.clear()
    config.update(recorded)
    return validate_config(config).values


# SETTINGS: the configuration, validated and with its defaults (`settings` in xdplab's
# Python; one trial's are trials.point_settings_of's).
try:
    SETTINGS = validate_config(config).values
    if snakemake_internals.reporting():
        SETTINGS = settings_to_report(SETTINGS)
except ConfigError as e:
    # Stop before any rule runs, i.e. before anything privileged happens.
    raise WorkflowError(f"xdplab: {e}") from None

# Trials share one testbed: at most one of their steps runs at a time, and a
# trial's later steps outrank the next trial's arm step (priorities in trial.smk).  With a
# pool of testbeds (`testbeds`, pool.smk) each trial is one job holding one testbed, and up
# to the pool's size run at once.
POOL = SETTINGS["testbeds"]
POOL_TARGETS = []  # pool.smk's, with a pool
workflow.register_resource("testbed", max(1, len(POOL)))

EXP = SETTINGS["experiment"]
RESULTS = f"results/{EXP}"
# A trial's directory is keyed by every setting that changes its numbers
# (workflow/xdplab/trials.py): results/<experiment>/trials/<point>/rep~<n>.
TRIAL = f"{RESULTS}/trials/{{point}}/rep~{{rep}}"
TRIAL_LOG = f"{TRIAL}/logs/{{step}}.log"
# The build and the testbed check belong to the DUT they ran on: the embedded
# testbed, or a lab's agent (its URL's digest).
TESTBED_ID = (
    "embedded"
    if SETTINGS["testbed"] == "embedded"
    else f"lab-{hashlib.sha256(SETTINGS['lab']['dut']['agent_url'].encode()).hexdigest()[:8]}"
)
BUILD_STAGE = f"results/build/{TESTBED_ID}/port~{SETTINGS['port']}"
# One build per collector program (features, counters); collector off loads none.
MANIFEST = f"results/build/{TESTBED_ID}/{{collector}}_port~{SETTINGS['port']}.json"

# The configuration's trials, and the order they run in (shuffled by seed).
TRIALS = trials.trials(SETTINGS)
RUN_ORDER = trials.run_order(TRIALS, SETTINGS["seed"])
ORDER = {(t["point"], t["rep"]): i for i, t in enumerate(RUN_ORDER)}
TRIAL_DIRS = [trials.trial_dir(RESULTS, t["point"], t["rep"]) for t in TRIALS]


wildcard_constraints:
    point=trials.POINT_PATTERN,
    rep=r"\d+",
    collector=r"features|counters",
    key=r"[A-Za-z0-9-]+-[0-9a-f]{12}",
    # What a connectivity check vouches for: the build, or one trial.
    stage=rf"results/(build/[^/]+/port~\d+|[^/]+/trials/{trials.POINT_PATTERN}/rep~\d+)",


def settings_of(wildcards):
    """All settings of the trial (its point's values, the configuration's others)."""
    try:
        return trials.settings_of_point(wildcards.point, SETTINGS)
    except trials.UnknownPoint as e:
        raise WorkflowError(f"xdplab: {e}") from None


def trial_of(wildcards):
    return dict(trials.trial_record(EXP, settings_of(wildcards), int(wildcards.rep)), point=wildcards.point)


# The user's programs (program: a C source or an ELF object), by their build key
# (slug-sha256 prefix): built (sources) and checked on the DUT once per testbed.
PROGRAM_DIR = "results/build/programs"
PROGRAM_CHECK = f"results/build/{TESTBED_ID}/program~{{key}}_port~{SETTINGS['port']}.json"
USER_PROGRAMS = {
    program.program_key(p, trials.program_sha256(p)): p
    for p in SETTINGS["program"]
    if trials.program_kind(p) in ("source", "object")
}


def program_headers(source):
    """What a C source's build depends on besides itself: the headers beside it, xdplab.h."""
    if trials.program_kind(source) != "source":
        return []
    return sorted(str(h) for h in Path(source).parent.glob("*.h")) + ["bpf/xdplab.h"]


def program_object(wildcards):
    p = USER_PROGRAMS[wildcards.key]
    return f"{PROGRAM_DIR}/{wildcards.key}.bpf.o" if trials.program_kind(p) == "source" else p


def program_build_manifest(wildcards):
    p = USER_PROGRAMS[wildcards.key]
    return [f"{PROGRAM_DIR}/{wildcards.key}.json"] if trials.program_kind(p) == "source" else []


def manifest_of(wildcards):
    """The build a trial's program needs: the collector's (none with collector off), a
    user's program's check on the DUT, or none for a program the user attached."""
    s = settings_of(wildcards)
    kind = trials.program_kind(s.get("program") or "collector")
    if kind == "attached":
        return []
    if kind != "collector":
        return PROGRAM_CHECK.format(key=program.program_key(s["program"], s["program_sha256"]))
    collector = trials.parse_point(wildcards.point)["collector"]
    return [] if collector == "off" else MANIFEST.format(collector=collector)


def program_inputs(s):
    """The user's program of a pool's job (settings `s`): its object, built on the
    controller (rule build_program) when it is a C source, and that build's record; the job
    checks it on its own testbed's DUT (xdplab.steps.pooled).  None for the collector or
    an attached program."""
    if trials.program_kind(s.get("program") or "collector") not in ("source", "object"):
        return {}
    key = SimpleNamespace(key=program.program_key(s["program"], s["program_sha256"]))
    build = program_build_manifest(key)
    return dict(program_obj=program_object(key), **({"program_build": build[0]} if build else {}))


def pool_trial_inputs(wildcards):
    return program_inputs(settings_of(wildcards))


def run_priority(step_rank):
    """A step's priority: a trial's later step outranks any trial's earlier one (so an armed
    trial finishes before another is armed); among trials, the run order decides."""
    n = len(ORDER) + 1

    def priority(wildcards):
        key = (getattr(wildcards, "point", None), int(getattr(wildcards, "rep", 0) or 0))
        return step_rank * (n + 1) + (n - ORDER.get(key, n - 1))

    return priority


def stage_priority(wildcards):
    """check_connectivity's: the build's first, then each trial's in the run order."""
    m = re.search(r"trials/([^/]+)/rep~(\d+)$", wildcards.stage)
    n = len(ORDER) + 1
    return 9 * (n + 1) + (n - ORDER.get((m[1], int(m[2])), n - 1) if m else n + 1)


def trial_log(step):
    return TRIAL_LOG.replace("{step}", step)


def code_digest(paths):
    """sha256 over the code that decides a trial's numbers: a change reruns the trial.
    A directory stands for the .py files in it."""
    h = hashlib.sha256()
    files = []
    for p in paths:
        path = Path(workflow.basedir, p)
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    for f in sorted(files):
        h.update(f.read_bytes())
    return h.hexdigest()


TRIAL_CODE = code_digest(
    [f"workflow/scripts/{s}.py" for s in ("arm_collector", "launch_generator", "verify_capture", "gather_results")]
    + [
        f"workflow/xdplab/{m}.py"
        for m in (
            "atomic",
            "pcapcheck",
            "accounting",
            "counts",
            "trialrows",
            "verdicts",
            "source",
            "agentclient",
            "program",
            "timeseries",
            "featurefile",
        )
    ]
    + ["workflow/xdplab/steps", "workflow/xdplab/agent", "workflow/xdplab/sourcehost"]
)

# The testbed as check_connectivity brings it up.
TESTBED_SETTINGS = {k: SETTINGS[k] for k in trials.TESTBED_KEYS[SETTINGS["testbed"]] + ("mtu",)}
# ... as its parameters: a lab's identity, not its credentials (trials.lab_identity).  Its
# record is temp and made again before each trial, and Snakemake reruns a job whose
# parameters changed, and every trial after it: a moved token or key file would measure
# everything again.  The step reads the credentials from the configuration
# (trials.lab_with_credentials).
CONNECTIVITY_TESTBED = (
    dict(TESTBED_SETTINGS, lab=trials.lab_identity(SETTINGS["lab"])) if "lab" in TESTBED_SETTINGS else TESTBED_SETTINGS
)

# Partial trials left by an interrupted invocation are discarded, not continued;
# so are testbed records (testbed.json, connectivity.json) an invocation left.
for _note in housekeeping.discard_partial_trials(RESULTS, TRIAL_DIRS):
    print(f"xdplab: {_note}", file=sys.stderr)
