# The testbed comes up once per invocation that needs it (the embedded testbed:
# idempotent, a healthy one is reused; a lab: its hosts' description), and is
# checked once for the build and again right before each trial ({stage}: the
# build's directory or a trial's).  Their outputs are temp() and every check belongs
# to one stage only: checking the testbed again for a new trial never makes a
# finished trial look outdated, and a long sweep checks the hosts before every
# trial it measures.


rule testbed_up:
    output:
        testbed=temp(f"{BUILD_STAGE}/testbed.json"),
    params:
        testbed=TESTBED_SETTINGS,
    resources:
        testbed=1,
    priority: 8
    log:
        f"{BUILD_STAGE}/logs/testbed_up.log",
    script:
        "../scripts/testbed_up.py"


rule check_connectivity:
    input:
        testbed=rules.testbed_up.output.testbed,
    output:
        connectivity=temp("{stage}/connectivity.json"),
    resources:
        testbed=1,
    priority: 9
    log:
        "{stage}/logs/check_connectivity.log",
    script:
        "../scripts/check_connectivity.py"


# What happens around the rules, at the start and at the end of a run.


# Before the first job: results/<experiment> must be writable, else stop here.
# Snakemake's own SIGTERM handler only waits for running jobs; ours passes the
# signal on to the running step first, so an interrupted trial stops at once
# (the step disarms the agent and stops the generator), then the run ends.
onstart:
    try:
        housekeeping.on_start(S, RESULTS, [TRIAL.format(**t) for t in TRIALS])
    except housekeeping.ResultsNotWritable as e:
        raise WorkflowError(str(e)) from None


onsuccess:
    housekeeping.end_of_run(S, RESULTS, failed=False)


onerror:
    housekeeping.end_of_run(S, RESULTS, failed=True)
