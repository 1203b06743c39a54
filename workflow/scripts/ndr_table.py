"""Rule ndr_table: the zero-loss searches' results, one row per search (ndr.csv, and
ndr.md to read), and every trial they ran (ndr_probes.csv)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import atomic, ndr, steps  # noqa: E402


def markdown(rows, experiment) -> str:
    cols = ["frame_size", "packet_size", "ndr_pps", "ndr_l2_mbps", "ndr_wire_mbps", "limited_by", "fail_pps", "probes",
            "confirmations", "confirm_s", "confirm_sent", "confirm_lost"]
    lines = [f"# xdplab experiment `{experiment}`: zero-loss rate per search", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |")
    if rows:
        r = rows[0]
        lines += ["", f"Loss allowed: {r['loss_threshold_pct']} % of sent; resolution {r['resolution_pct']} %; "
                      f"probes of {r['probe_s']} s between {r['min_pps']} and {r['max_pps']} pps."]
    return "\n".join(lines) + "\n"


def table(sm, log):
    finals = [steps.read_json(p) for p in sm.input.steps]
    rows = [ndr.table_row(s) for s in finals]
    atomic.write_csv(sm.output.csv, ndr.COLUMNS, rows)
    atomic.write_csv(sm.output.probes, ndr.PROBE_COLUMNS, [r for s in finals for r in ndr.probe_rows(s)])
    Path(sm.output.md).write_text(markdown(rows, sm.params.experiment))
    log(f"{len(rows)} search(es) -> {sm.output.csv}")


steps.run_step(snakemake, table)
