# Testbed up and check connectivity, once per invocation that has trials to run
# ({stage}: results/build/<testbed>/port~N).  Their outputs are temp(): the next
# invocation checks again (the testbed may be gone), and the rules that use the
# check take it as ancient(), so a fresh check never makes a finished trial look
# outdated.  Bringing the embedded testbed up is idempotent: a healthy one is
# reused; in lab mode testbed_up only writes the lab's description.


rule testbed_up:
    output:
        testbed=temp("{stage}/testbed.json"),
    params:
        testbed=TESTBED_SETTINGS,
    resources:
        testbed=1,
    priority: 8
    log:
        "{stage}/logs/testbed_up.log",
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
