"""The last two steps of a trial: verify_capture (stop the captures, check them against
the generators' sequence numbers, keep them) and gather_results (disarm, keep the
feature records, do the books: trial.json, with the code that made it: `code`,
xdplab.provenance)."""

from __future__ import annotations

import time
from pathlib import Path

from .. import accounting, atomic, featurefile, provenance, timeseries
from ..agentclient import AgentClient
from .arm import agent_for, continue_session
from .machinery import FAILED_FILE, Log, StepError, previous_failures, read_json, trial_id, write_json, writing

def verify_capture(trial: dict, params: dict, arm_path: str, generator_path: str,
                   connectivity_path: str, output: str, log: Log) -> None:
    """Stop the captures; have the agent check each source's sequence numbers in its
    interface's capture where it was written (the controller never holds a capture it does
    not keep); download the captures that are kept, checked against the agent's sha256."""
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    gens = read_json(generator_path)["sources"]
    agent = agent_for(conn)
    continue_session(conn, agent, arm, arm_path, "verify_capture")
    stats = agent.stop_capture(arm["session"])
    trial_dir = Path(output).parent
    ifaces = list(conn["dut"]["ifaces"])
    checks = []
    for k, (src, gen) in enumerate(zip(conn["sources"], gens)):
        check = agent.check_capture(arm["session"], {
            "interface": src["dut_iface"], "run_id": arm["run_id"] + k, "scheduled": gen["scheduled"],
            "threads": gen.get("threads") or params["threads"],
            "failed_seqs": gen.get("failed_seqs", [])[:1000],
            "send_errors": gen["send_errors"]})
        checks.append(dict(check, source=src["name"], interface=src["dut_iface"]))
    kept = bool(params.get("keep_pcap", True))
    for iface in ifaces if kept else []:
        pcap_out = trial_dir / capture_name(iface, ifaces)
        # The capture lands under a temporary name and becomes its own name only when whole
        # and checked: a full disk never leaves a truncated capture behind.
        with writing(pcap_out), atomic.replacing(pcap_out) as tmp:
            sha = agent.download_capture(arm["session"], tmp, iface)
            expected = (stats.get(iface) or {}).get("pcap_sha256")
            if expected and sha != expected:
                raise StepError(f"the capture of {iface} downloaded from the DUT agent has sha256 {sha}, "
                                f"the agent computed {expected}: the download was corrupted")
    write_json(output, {"tcpdump": stats, "checks": checks, "kept": kept})
    for iface in ifaces:
        st = stats.get(iface) or {}
        log(f"tcpdump on {iface}: captured {st.get('captured')}, dropped by kernel "
            f"{st.get('dropped_by_kernel')}" + ("" if kept else "; not kept (keep_pcap=false)"), echo=True)
    for c in checks:
        log(f"capture vs generator ({c['source']} on {c['interface']}, checked on the DUT in "
            f"{c.get('check_s')} s): {c['unique']} unique, {c['missing']} missing, "
            f"{c['duplicated']} duplicated, {c['reordered']} reordered", echo=True)


TIMESERIES_FILE = "timeseries.csv"
FEATURES_FILE = "features.parquet"


def _keep_features(agent: AgentClient, arm: dict, gathered: dict, gens: list, trial_dir: Path,
                   log: Log) -> dict | None:
    """Download each interface's raw feature records (streamed to a file on the DUT while the
    trial ran), check them against the agent's sha256 and count, and write features.parquet;
    None when the trial kept none (keep_features=false, or collector counters/off)."""
    kept = {name: (blk.get("features") or {})["features_file"]
            for name, blk in (gathered.get("interfaces") or {}).items()
            if (blk.get("features") or {}).get("features_file")}
    for name, info in kept.items():
        if info.get("error"):
            raise StepError(f"the DUT agent could not keep every feature record of {name}: {info['error']}")
    if not kept:
        return None
    same_clock = bool(gens) and all(g.get("boot_id") and g.get("boot_id") == gathered.get("boot_id")
                                    for g in gens)
    raw = []
    try:
        for name, info in kept.items():
            path = trial_dir / f".features-{name}.bin"
            with writing(path):
                sha = agent.download_features(arm["session"], path, name)
            if info.get("sha256") and sha != info["sha256"]:
                raise StepError(f"the feature records of {name} downloaded from the DUT agent have "
                                f"sha256 {sha}, the agent computed {info['sha256']}: the download was "
                                f"corrupted")
            raw.append((name, path))
        # the send gaps are taken on the way, here rather than on the DUT (they would cost
        # its consumer ~0.5 us of CPU per record: benchmarks/README.md)
        send_gaps = featurefile.SendGaps()
        with writing(trial_dir / FEATURES_FILE):
            rows = featurefile.write_parquet(raw, trial_dir / FEATURES_FILE, same_clock, send_gaps)
    finally:
        for _, path in raw:
            path.unlink(missing_ok=True)
    expected = sum(int(info.get("records") or 0) for info in kept.values())
    if rows != expected:
        raise StepError(f"{FEATURES_FILE} has {rows} rows, the DUT agent wrote {expected} records")
    size = (trial_dir / FEATURES_FILE).stat().st_size
    log(f"kept {rows} feature records in {FEATURES_FILE} ({size / (1 << 20):.1f} MiB)", echo=True)
    return {"file": FEATURES_FILE, "rows": rows, "bytes": size, "raw": kept,
            "send_gap_ns": send_gaps.summary()}


def capture_name(iface: str, ifaces: list) -> str:
    """capture.pcap with one DUT interface; capture-<if>.pcap with several."""
    return "capture.pcap" if len(ifaces) == 1 else f"capture-{iface}.pcap"


def gather_results(trial: dict, params: dict, arm_path: str, generator_path: str, capture_path: str,
                   connectivity_path: str, output: str, log: Log) -> None:
    conn = read_json(connectivity_path)
    arm = read_json(arm_path)
    gens = read_json(generator_path)["sources"]
    capture = read_json(capture_path)
    agent = agent_for(conn)
    continue_session(conn, agent, arm, arm_path, "gather_results")
    gathered = agent.disarm(arm["session"])
    log(f"disarmed session {arm['session']}")
    trial_dir = Path(output).parent
    features = _keep_features(agent, arm, gathered, gens, trial_dir, log)
    summary = accounting.summarize(params, trial, arm, conn["sources"], gens, capture,
                                   dict(gathered, send_gap_ns=(features or {}).get("send_gap_ns")))
    with writing(trial_dir / TIMESERIES_FILE):
        atomic.write_text(trial_dir / TIMESERIES_FILE, timeseries.csv_text(summary["timeseries"]))
    # Earlier failed attempts of this trial stay on record in trial.json.
    failed_path = Path(output).parent / FAILED_FILE
    earlier = previous_failures(failed_path)
    disk = {"estimate": arm.get("disk_estimate"),
            "actual": {"dut_bytes": sum(int(st.get("pcap_bytes") or 0)
                                        for st in (capture.get("tcpdump") or {}).values()
                                        if isinstance(st, dict)),
                       "features_bytes": sum(int(((b.get("features") or {}).get("features_file") or {})
                                                 .get("bytes") or 0)
                                             for b in (gathered.get("interfaces") or {}).values()),
                       "results_bytes": sum(p.stat().st_size for p in Path(output).parent.rglob("*")
                                            if p.is_file())}}
    wall = {"armed_unix_s": arm.get("armed_unix_s"), "gathered_unix_s": time.time()}
    # The code that made the trial, read now (never a rule's parameter: a commit reruns nothing).
    code = provenance.code_version()
    log(f"code: {provenance.code_label(code)}" + (f" ({code['why']})" if code["why"] else ""))
    # The DUT's kernel, as its agent said at the trial's own connectivity check.
    dut_kernel = (conn.get("agent") or {}).get("kernel")
    write_json(output, {"trial": trial, "settings": params, "code": code, "dut_kernel": dut_kernel,
                        "summary": summary["row"],
                        "disk": disk, "wall": wall,
                        "sources": summary["sources"], "interfaces": summary["interfaces"],
                        "identities": summary["identities"], "arm": arm, "generators": gens,
                        "testbed": {"mode": conn["testbed"]["mode"], "sources": conn["sources"],
                                    "dut": conn["dut"]},
                        "capture": capture, "features": features, "agent": gathered,
                        "previous_failures": earlier})
    failed_path.unlink(missing_ok=True)
    row = summary["row"]
    if earlier:
        log(f"this trial had failed {len(earlier)} time(s) before; the reasons are in trial.json "
            f"(previous_failures)", echo=True)
    log(f"trial {trial_id(trial)}: sent {row['sent']}, nic_rx {row['nic_rx']}, xdp_matched "
        f"{row['xdp_matched']}, tcpdump_captured {row['tcpdump_captured']}, lost {row['lost']}"
        f"{' (' + row['loss_where'] + ')' if row.get('loss_where') else ''}, "
        f"unexplained {row['unexplained']}", echo=True)
    if row.get("observers_busy"):
        log(f"the DUT lost packets at its receive side while its own observers used "
            f"{(row['agent_cpu_pct'] or 0) + (row['capture_cpu_pct'] or 0):.1f} % of one CPU (agent "
            f"{row['agent_cpu_pct']} %, capture {row['capture_cpu_pct']} %): they may have been the "
            f"bottleneck (observers_busy; docs/method.md)", echo=True)
