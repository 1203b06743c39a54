"""Rule search_table: the searches' results in RFC 9971's terms, one row per search and goal
(search.csv, and search.md, the test report), and every trial they ran (search_trials.csv)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import atomic, mlr, steps  # noqa: E402


def _v(x, unit=""):
    return "none" if x is None or x == "" else f"{x:,}{unit}" if isinstance(x, (int, float)) else str(x)


def report(records, rows) -> str:
    """search.md: the test report, in the RFC's terms."""
    lines = ["# Search report (RFC 9971, Multiple Loss Ratio Search)", ""]
    if records:
        p = records[0]["params"]
        g = p["goals"][0]
        lines += [
            "Controller: FD.io CSIT's MLRsearch 1.2.1 (PyPI) behind xdplab's measurer (docs/search.md).",
            f"Min Load {p['min_pps']:,} pps; Max Load {p['max_pps']:,} pps; loads are offered rates of UDP packets "
            "from the source to the DUT, one direction.",
            "Goals: " + ", ".join(f"{x['name']} (Goal Loss Ratio {x['loss_pct']:g} %)" for x in p["goals"]) + "; "
            f"each with Goal Exceed Ratio {g['exceed_pct']:g} %, Goal Width {g['width_pct']:g} %, "
            f"Goal Initial Trial Duration {g['initial_trial_s']:g} s, Goal Final Trial Duration {g['final_trial_s']:g} s, "
            f"Goal Duration Sum {g['duration_sum_s']:g} s.",
            "Trial loss ratio: lost / sent of the trial's measured window (its warm-up not counted), "
            "lost = sent - packets that reached XDP on the DUT; a trial whose source did not offer its load "
            "is not counted towards any goal.", ""]
    cols = ["frame_size", "goal", "lower_bound_pps", "upper_bound_pps", "conditional_throughput_pps",
            "conditional_l2_mbps", "conditional_wire_mbps", "result", "limited_by", "trials", "trial_s", "search_wall_s"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_v(r[c]) for c in cols) + " |")
    irregular = [r for r in rows if r["result"] == "irregular"]
    if irregular:
        lines += ["", "Irregular goal results:"]
        lines += [f"- {r['frame_size']} B frames, {r['goal']}: {r['irregular_why']}" for r in irregular]
    lines += ["", "Relevant Lower Bound: the highest load classified a lower bound below the Relevant Upper "
              "Bound (the lowest load classified an upper bound); Conditional Throughput: the Relevant Lower "
              "Bound times one minus the trial loss ratio at the Goal Exceed Ratio quantile of its trials. "
              "Frame sizes are Ethernet frames with FCS (RFC 2544); L2 Mbit/s counts frames, wire Mbit/s "
              "adds preamble and inter-frame gap (20 B per frame)."]
    return "\n".join(lines) + "\n"


def table(sm, log):
    records = [steps.read_json(p) for p in sm.input.records]
    rows = [r for rec in records for r in mlr.table_rows(rec)]
    atomic.write_csv(sm.output.csv, mlr.COLUMNS, rows)
    # Each trial's row of summary.csv's columns beside the search's: a trial of a search is
    # a normal trial, its summary row in its trial.json.
    trial_rows, extra = [], []
    for r in (r for rec in records for r in mlr.trial_rows(rec)):
        try:
            summary = steps.read_json(str(Path(r["trial"]) / "trial.json"))["summary"]
        except (OSError, ValueError, KeyError):
            summary = {}
        extra += [k for k in summary if k not in mlr.TRIAL_COLUMNS and k not in extra]
        trial_rows.append({**{k: v for k, v in summary.items() if k not in mlr.TRIAL_COLUMNS}, **r})
    columns = mlr.TRIAL_COLUMNS + extra
    atomic.write_csv(sm.output.trials, columns, [{k: r.get(k) for k in columns} for r in trial_rows])
    Path(sm.output.md).write_text(report(records, rows))
    log(f"{len(records)} search(es), {len(rows)} goal result(s) -> {sm.output.csv}")


steps.run_step(snakemake, table)
