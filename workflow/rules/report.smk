# Aggregate every trial of the experiment into summary.csv and summary.md.


rule aggregate:
    input:
        trials=expand(
            f"{TRIAL}/trial.json", zip, pps=[t["pps"] for t in TRIALS], size=[t["size"] for t in TRIALS], rep=[t["rep"] for t in TRIALS]
        ),
    output:
        csv=f"{RESULTS}/summary.csv",
        md=f"{RESULTS}/summary.md",
        sources=f"{RESULTS}/sources.csv",
        ifaces=f"{RESULTS}/ifaces.csv",
    params:
        experiment=EXP,
    log:
        f"{RESULTS}/logs/aggregate.log",
    script:
        "../scripts/aggregate.py"
