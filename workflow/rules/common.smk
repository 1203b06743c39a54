# Validated configuration, the list of trials, and paths shared by the rules.

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from snakemake.exceptions import WorkflowError  # noqa: E402
from xdplab.config import ConfigError, validate_config  # noqa: E402
from xdplab import housekeeping  # noqa: E402

try:
    S = validate_config(config).values
except ConfigError as e:
    # Stop before any rule runs, i.e. before anything privileged happens.
    raise WorkflowError(f"xdplab: {e}") from None

# Trials share one testbed: at most one of their steps runs at a time, and a
# trial's later steps outrank the next trial's arm step (priorities in trial.smk).
workflow.register_resource("testbed", 1)

EXP = S["experiment"]
RESULTS = f"results/{EXP}"
TRIAL = f"{RESULTS}/trials/pps~{{pps}}/size~{{size}}/rep~{{rep}}"
TRIAL_LOG = f"{TRIAL}/logs/{{step}}.log"
# The build and the testbed check belong to the DUT they ran on: the embedded
# testbed, or a lab's agent (its URL's digest).
TESTBED_ID = (
    "embedded"
    if S["testbed"] == "embedded"
    else f"lab-{hashlib.sha256(S['lab']['dut']['agent_url'].encode()).hexdigest()[:8]}"
)
BUILD_STAGE = f"results/build/{TESTBED_ID}/port~{S['port']}"
MANIFEST = f"results/build/{TESTBED_ID}/collector_port~{S['port']}.json"

TRIALS = [
    {"pps": p, "size": s, "rep": r}
    for p in S["target_pps"]
    for s in S["packet_size"]
    for r in range(S["repeats"])
]


wildcard_constraints:
    pps=r"\d+",
    size=r"\d+",
    rep=r"\d+",
    port=r"\d+",
    # What a connectivity check vouches for: the build, or one trial.
    stage=r"results/(build/[^/]+/port~\d+|[^/]+/trials/pps~\d+/size~\d+/rep~\d+)",


def trial_of(wildcards):
    return {
        "experiment": EXP,
        "target_pps": int(wildcards.pps),
        "packet_size": int(wildcards.size),
        "repeat": int(wildcards.rep),
    }


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
    + [f"workflow/xdplab/{m}.py" for m in ("steps", "agent", "generator", "pcapcheck", "accounting", "source", "agentclient")]
    + ["workflow/xdplab/agent"]
)

# Everything a trial's numbers depend on; a change reruns the trial from arm on.
TESTBED_KEYS = (
    ("testbed", "src_iface", "dut_iface", "mtu", "source_python")
    if S["testbed"] == "embedded"
    else ("testbed", "lab", "mtu")
)
TRIAL_SETTINGS = {
    k: S[k]
    for k in ("duration_s", "threads", "port", "xdp_mode", "keep_pcap", "send_path", "pattern", "watchdog_grace_s")
    + TESTBED_KEYS
    # a pattern's own knob only where it changes the traffic
    + {"burst": ("burst_size",), "poisson": ("seed",)}.get(S["pattern"], ())
}

# The testbed as check_connectivity brings it up.
TESTBED_SETTINGS = {k: S[k] for k in TESTBED_KEYS}

# Partial trials left by an interrupted invocation are discarded, not continued;
# so are testbed records (testbed.json, connectivity.json) an invocation left.
for _note in housekeeping.discard_partial_trials(RESULTS, TRIALS):
    print(f"xdplab: {_note}", file=sys.stderr)
