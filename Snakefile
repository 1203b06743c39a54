# xdplab: measure an XDP program under real traffic between a source host and a
# device under test (DUT).  One trial per (offered rate, payload size, repeat):
#   build XDP object -> testbed up -> check connectivity -> arm the collector ->
#   launch the generator over SSH -> verify the tcpdump capture -> gather results
#   -> aggregate into results/<experiment>/summary.csv
# Run: snakemake --cores 1 --config target_pps=10000 duration_s=10   (README.md)

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/preflight.smk"
include: "workflow/rules/testbed.smk"
include: "workflow/rules/build.smk"
include: "workflow/rules/program.smk"
include: "workflow/rules/trial.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/archive.smk"
include: "workflow/rules/ndr.smk"
include: "workflow/rules/search.smk"


if POOL:

    include: "workflow/rules/pool.smk"


rule all:
    default_target: True
    input:
        rules.aggregate.output.csv,
        rules.figures.output,
        COMPARE_TARGETS,
        POOL_TARGETS,
