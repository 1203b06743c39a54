"""Rule compare: each program under test against the first one, per grid point and metric."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import steps  # noqa: E402


def compare(sm, log):
    import pandas as pd

    from xdplab import compare as cmp

    summary = pd.read_csv(sm.input.csv)
    programs = list(sm.params.programs)
    table = cmp.compare(summary, programs)
    cmp.write_tables(table, sm.output.csv, sm.output.md, sm.output.tex)
    cmp.plot_compare(summary, programs, [sm.output.svg, sm.output.png, sm.output.pdf])
    for verdict in table.get("verdict", []):
        log(verdict, echo=True)


steps.run_step(snakemake, compare)
