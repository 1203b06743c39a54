# The embedded testbed is brought up and checked by the first step of an
# invocation that needs it (steps.connectivity), not by a rule: as a rule's
# output it made Snakemake rerun every finished trial whenever it was fresh.
# Here: what happens around the rules, at the start and at the end of a run.


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
