# The pre-flight check (docs/preflight.md, workflow/xdplab/preflight.py): before the
# run's first trial, every host is checked for what would make its numbers meaningless
# (native XDP, MTU, offloads, the BPF JIT, the send path, line rate, the DUT's neighbour
# entry, the clocks), and everything wrong is said at once.  check_connectivity runs it
# at an invocation's first, full check (testbed.smk); `snakemake --cores 1 preflight`
# runs it alone.  Its record: results/<experiment>/preflight.json.

from xdplab import preflight  # noqa: E402

# What of the configuration the pre-flight checks: every trial of the run together.
PREFLIGHT_RUN = preflight.run_settings(SETTINGS)
PREFLIGHT_RECORD = preflight.record_path(SETTINGS)


# A target without outputs: it runs whenever it is asked for, and writes its record.
rule preflight:
    log:
        f"{RESULTS}/logs/preflight.log",
    resources:
        testbed=1,
    params:
        testbed=CONNECTIVITY_TESTBED,  # as check_connectivity's: a lab's credentials from the config
        run=PREFLIGHT_RUN,
        record=PREFLIGHT_RECORD,
        scratch=f"{RESULTS}/.preflight",
    script:
        "../scripts/preflight.py"
