# Testbed up and check connectivity, once for the build and once before each
# trial ({stage}: results/build/port~N or a trial's directory).  Their outputs are
# temp() and belong to one stage only: a fresh testbed for a new trial never makes
# a finished trial look outdated, and a check runs right before the trial it
# vouches for.  Bringing the testbed up is idempotent: a healthy one is reused.


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
        housekeeping.on_start(S, RESULTS)
    except housekeeping.ResultsNotWritable as e:
        raise WorkflowError(str(e)) from None


onsuccess:
    housekeeping.end_of_run(S, RESULTS, failed=False)


onerror:
    housekeeping.end_of_run(S, RESULTS, failed=True)
