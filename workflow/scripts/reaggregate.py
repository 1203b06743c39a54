#!/usr/bin/env python3
"""Rebuild an archived xdplab experiment's tables from its raw trial records.

Shipped at the top of every archive as ./reaggregate (workflow/xdplab/archive.py).
Needs only python3 with pandas: no testbed, no Snakemake.  It calls the functions the
aggregate rule calls (report.write_summary, breakdown.write_breakdown,
stats.write_points) from the code in the archive (code/workflow), on the trials listed
in MANIFEST.json in the order the rule read them, writes the tables to reaggregated/
(or --out DIR) and compares each with the archived one, byte for byte.

    ./reaggregate                 # rebuild and compare; exit 0 when all are identical
    ./reaggregate --out /tmp/t    # somewhere else
"""

import argparse
import filecmp
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# What the aggregate rule writes that can be rebuilt from the trial records alone
# (summary.html and config.yaml also need the configuration as run: not rebuilt).
SUMMARY = ("summary.csv", "summary.md")
BREAKDOWN = ("sources.csv", "ifaces.csv")
POINTS = ("points.csv", "points.md", "points.tex")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "reaggregated"),
                    help="where the rebuilt tables go (default: reaggregated/ beside this script)")
    args = ap.parse_args(argv)

    with open(os.path.join(HERE, "MANIFEST.json")) as f:
        manifest = json.load(f)
    experiment = manifest["experiment"]
    archived = os.path.join(HERE, "results", experiment)
    trials = [os.path.join(HERE, p) for p in manifest["trials"]]
    missing = [p for p in trials if not os.path.isfile(p)]
    if missing:
        print(f"reaggregate: {len(missing)} trial record(s) listed in MANIFEST.json are missing, "
              f"e.g. {missing[0]}", file=sys.stderr)
        return 2

    sys.dont_write_bytecode = True  # leave the archived code as it is
    sys.path.insert(0, os.path.join(HERE, "code", "workflow"))
    import pandas
    from xdplab import breakdown, report, stats

    if manifest.get("pandas") and manifest["pandas"] != pandas.__version__:
        print(f"reaggregate: note: the tables were written with pandas {manifest['pandas']}, "
              f"this is pandas {pandas.__version__}: a number may be formatted differently",
              file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    out = {name: os.path.join(args.out, name) for name in SUMMARY + BREAKDOWN + POINTS}
    df = report.write_summary(trials, out["summary.csv"], out["summary.md"], experiment,
                              settings=manifest.get("settings"))
    breakdown.write_breakdown(trials, out["sources.csv"], out["ifaces.csv"])
    stats.write_points(df, out["points.csv"], out["points.md"], out["points.tex"])

    different = 0
    for name, path in out.items():
        old = os.path.join(archived, name)
        if not os.path.exists(old):
            verdict = "rebuilt (not in the archive to compare)"
        elif filecmp.cmp(old, path, shallow=False):
            verdict = "identical"
        else:
            verdict = "DIFFERENT"
            different += 1
        print(f"{name:<12} {verdict}: {os.path.relpath(path)}")
    print(f"reaggregate: {len(trials)} trial(s) of experiment '{experiment}'; "
          + (f"{different} table(s) differ from the archived ones" if different
             else "every table rebuilt is identical to the archived one"))
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
