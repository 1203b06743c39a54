# A pool of testbeds (configuration key `testbeds`; docs/lab.md#a-pool-of-testbeds): each
# trial is one job, pool_trial, instead of the five of trial.smk and testbed.smk.  The job
# takes a free testbed of the pool (workflow/xdplab/pool.py: a lock file per testbed, held
# by the job's process for its life), checks it, builds the collector on its DUT the first
# time, and runs the trial with the trial rules' own steps in one process
# (workflow/xdplab/steps/inprocess.py), writing it where the rules write it.  Its resource
# `testbed` has the pool's size as its limit (common.smk): `snakemake --cores N` runs up to
# min(N, pool size) trials at once.  Included by the Snakefile only when a pool is given.

# The searches (search, latency, ndr) and the pre-flight alone run on the one testbed
# `testbed` names: refused with a pool, before anything runs, rather than run elsewhere.
for _target in ("search", "latency", "ndr", "preflight"):
    if snakemake_internals.asked_for(_target):
        raise WorkflowError(
            f"xdplab: `snakemake {_target}` does not run over a pool of testbeds yet (testbeds); "
            "run it with one testbed (testbed: lab and lab:, or the embedded one), without testbeds"
        )


ruleorder: pool_trial > gather_results


rule pool_trial:
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
