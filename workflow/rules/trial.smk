# One trial: arm the collector, launch the generator, verify the capture,
# gather the results.  They read the testbed's description from the trial's own
# connectivity check (testbed.smk).  The four steps hold a session on the DUT
# agent between them, so they share the `testbed` resource (limit 1, common.smk) and later
# steps have higher priority: once a trial is armed, its own next step always
# wins over arming another trial.


rule arm_collector:
    input:
        build=manifest_of,
        connectivity=f"{TRIAL}/connectivity.json",
    output:
        arm=f"{TRIAL}/arm.json",
    log:
        trial_log("arm_collector"),
    priority: run_priority(10)
    resources:
        testbed=1,
    params:
        trial=trial_of,
        settings=settings_of,
        code=TRIAL_CODE,
    script:
        "../scripts/arm_collector.py"


rule launch_generator:
    input:
        arm=rules.arm_collector.output.arm,
        connectivity=f"{TRIAL}/connectivity.json",
    output:
        generator=f"{TRIAL}/generator.json",
    log:
        trial_log("launch_generator"),
    priority: run_priority(11)
    resources:
        testbed=1,
    params:
        trial=trial_of,
        settings=settings_of,
    script:
        "../scripts/launch_generator.py"


rule verify_capture:
    input:
        arm=rules.arm_collector.output.arm,
        generator=rules.launch_generator.output.generator,
        connectivity=f"{TRIAL}/connectivity.json",
    output:
        # The captures (capture.pcap, or capture-<if>.pcap per DUT interface) are kept
        # beside it unless keep_pcap=false; they are not outputs, so that they may go.
        capture=f"{TRIAL}/capture.json",
    log:
        trial_log("verify_capture"),
    priority: run_priority(12)
    resources:
        testbed=1,
    params:
        trial=trial_of,
        settings=settings_of,
    script:
        "../scripts/verify_capture.py"


rule gather_results:
    input:
        arm=rules.arm_collector.output.arm,
        generator=rules.launch_generator.output.generator,
        capture=rules.verify_capture.output.capture,
        connectivity=f"{TRIAL}/connectivity.json",
    output:
        trial=f"{TRIAL}/trial.json",
        # one row per second of the measured window (features.parquet, when kept, is
        # beside it and not an output: keep_features=false writes none)
        timeseries=f"{TRIAL}/timeseries.csv",
    log:
        trial_log("gather_results"),
    priority: run_priority(13)
    resources:
        testbed=1,
    params:
        trial=trial_of,
        settings=settings_of,
    script:
        "../scripts/gather_results.py"
