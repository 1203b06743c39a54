"""Rule pool_testbeds: results/<experiment>/testbeds.csv, the pool's testbeds side by side
(xdplab.pool.testbeds_rows): each testbed's trials and source ceiling, and the difference
of their means with a 95 % confidence interval on every point two of them share."""
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import pool, steps  # noqa: E402
from xdplab.config import validate_config  # noqa: E402


def write(sm, log):
    records = [steps.read_json(p) for p in sm.input.trials]
    calibrations = {}
    for entry in validate_config(sm.config).values["testbeds"]:
        path = Path(pool.build_dir(entry), "calibration.json")
        if path.exists():
            calibrations[entry["name"]] = steps.read_json(str(path))
    rows = pool.testbeds_rows(records, calibrations)
    with open(sm.output.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=pool.TESTBEDS_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    log(f"{sm.output.csv}: {sum(1 for r in rows if not r.get('metric'))} testbeds, "
        f"{sum(1 for r in rows if r.get('metric'))} comparisons on shared points", echo=True)


steps.run_step(snakemake, write)
