# Check connectivity, once for the build and again right before each trial
# ({stage}: the build's directory or a trial's): bring the testbed up (the embedded
# one is idempotent: a healthy testbed is reused; a lab's hosts are taken from the
# configuration), then check every host: in full (SSH login, ping) at an invocation's
# first check, then whether each source's SSH server still answers.  The record is temp() and belongs to one
# stage only: checking the testbed again for a new trial never makes a finished
# trial look outdated (a check shared by several trials would: Snakemake reruns
# whatever depends on a job that runs), and a long sweep checks the hosts before
# every trial it measures.


rule check_connectivity:
    output:
        connectivity=temp("{stage}/connectivity.json"),
    log:
        "{stage}/logs/check_connectivity.log",
    priority: stage_priority
    resources:
        testbed=1,
    params:
        testbed=CONNECTIVITY_TESTBED,
        # each host's environment, recorded at an invocation's first check (for archives)
        environment=f"results/build/{TESTBED_ID}/environment.json",
        # what the invocation's first check found of the sources (the later checks reuse it)
        sources=f"results/build/{TESTBED_ID}/sources_checked.json",
        # The pre-flight check (preflight.smk), what it checks against (every trial's rates
        # and sizes) and where its record goes (results/<experiment>/preflight.json) are read
        # from the configuration by the step, not given here: a parameter that changed would
        # rerun this check and what follows it (the record's path, as a parameter, rebuilt
        # the collector, 3.5 s, in every run of a new experiment).
    script:
        "../scripts/check_connectivity.py"


# What happens around the rules, at the start and at the end of a run.


# Before the first job: results/<experiment> must be writable, else stop here.
# Snakemake's own SIGTERM handler only waits for running jobs; ours passes the
# signal on to the running step first, so an interrupted trial stops at once
# (the step disarms the agent and stops the generator), then the run ends.
onstart:
    try:
        housekeeping.on_start(
            SETTINGS, RESULTS, [trials.trial_dir(RESULTS, t["point"], t["rep"]) for t in RUN_ORDER]
        )
    except housekeeping.ResultsNotWritable as e:
        raise WorkflowError(str(e)) from None


onsuccess:
    housekeeping.end_of_run(SETTINGS, RESULTS, failed=False)


onerror:
    housekeeping.end_of_run(SETTINGS, RESULTS, failed=True)
