# Build the XDP collector on the DUT (BCC compiles against the kernel it will
# run on) and load it through the verifier without attaching.  The manifest
# records what was built; arm_collector checks the loaded program has its tag.


rule build_collector:
    input:
        source="bpf/collector.bpf.c",
        header="bpf/xdplab.h",
        connectivity=f"{BUILD_STAGE}/connectivity.json",
    output:
        MANIFEST,
    log:
        f"{BUILD_STAGE}/logs/build_{{collector}}.log",
    # as soon as its testbed check is done: every trial waits for it
    priority: 14 * (len(ORDER) + 2)
    params:
        port=SETTINGS["port"],
        collector=lambda wildcards: wildcards.collector,
    script:
        "../scripts/build_collector.py"
