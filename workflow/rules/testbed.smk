# The embedded testbed (two network namespaces on this machine) and the
# connectivity check.  Both outputs are temp(): they describe this invocation's
# testbed, and consumers take them as ancient() so a fresh testbed never makes
# finished trials look outdated.


rule testbed_up:
    output:
        temp(f"{STATE}/testbed.json"),
    params:
        src_iface=S["src_iface"],
        dut_iface=S["dut_iface"],
        mtu=S["mtu"],
        source_python=S["source_python"],
    log:
        f"{STATE}/logs/testbed_up.log",
    script:
        "../scripts/testbed_up.py"


rule check_connectivity:
    input:
        testbed=rules.testbed_up.output[0],
    output:
        temp(CONNECTIVITY),
    log:
        f"{STATE}/logs/check_connectivity.log",
    script:
        "../scripts/check_connectivity.py"


# Snakemake's own SIGTERM handler only waits for running jobs; ours passes the
# signal on to the running step first, so an interrupted trial stops at once
# (the step disarms the agent and stops the generator), then the run ends.
onstart:
    housekeeping.forward_stop_signals()


onsuccess:
    housekeeping.end_of_run(S, RESULTS, failed=False)


onerror:
    housekeeping.end_of_run(S, RESULTS, failed=True)
