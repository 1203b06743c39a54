# A pool of testbeds (configuration key `testbeds`; docs/lab.md#a-pool-of-testbeds): each
# trial is one job, pool_trial, instead of the five of trial.smk and testbed.smk.  The job
# takes a free testbed of the pool (workflow/xdplab/pool.py: a lock file per testbed, held
# by the job's process for its life), checks it, builds the collector (or checks the user's
# program) on its DUT the first time (xdplab.steps.pooled), and runs the trial with the
# trial rules' own steps in one process (workflow/xdplab/steps/inprocess.py), writing it
# where the rules write it.  Its resource
# `testbed` has the pool's size as its limit (common.smk): `snakemake --cores N` runs up to
# min(N, pool size) trials at once.  Included by the Snakefile only when a pool is given.

# A search (search, latency) takes a testbed of the pool for the whole search (search.smk,
# xdplab.steps.pooled), so `snakemake --cores N search` runs up to N searches at once.  The
# RFC 2544 binary search (ndr: a checkpoint per trial) and the pre-flight alone run on one
# testbed: refused with a pool, before anything runs.
for _target, _instead in (
    ("ndr", "snakemake search finds NDR (and PDR) over a pool"),
    (
        "preflight",
        "with a pool each testbed's pre-flight runs with its first check: results/build/pool-<name>/preflight.json",
    ),
):
    if snakemake_internals.asked_for(_target):
        raise WorkflowError(
            f"xdplab: `snakemake {_target}` does not run over a pool of testbeds (testbeds); {_instead}"
        )


ruleorder: pool_trial > gather_results


rule pool_trial:
    input:
        unpack(pool_trial_inputs),
    output:
        trial=f"{TRIAL}/trial.json",
        timeseries=f"{TRIAL}/timeseries.csv",
    log:
        trial_log("pool_trial"),
    priority: run_priority(10)
    resources:
        testbed=1,
    params:
        trial=trial_of,
        code=TRIAL_CODE,
    script:
        "../scripts/pool_trial.py"


# The pool's testbeds side by side: each one's trials and source ceiling, and the
# difference of their means on every point two of them share (docs/results.md).
rule pool_testbeds:
    input:
        trials=[f"{d}/trial.json" for d in TRIAL_DIRS],
    output:
        csv=f"{RESULTS}/testbeds.csv",
    log:
        f"{RESULTS}/logs/pool_testbeds.log",
    script:
        "../scripts/pool_testbeds.py"


POOL_TARGETS = [rules.pool_testbeds.output.csv]
