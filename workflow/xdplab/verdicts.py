"""The program under test in the books, when it is the user's (program != collector):
its verdicts as the DUT's driver counted them over the armed window, its own cost, its
identity.  Pure functions (no I/O) on the agent's results at disarm."""

from __future__ import annotations

from .counts import count, rounded

# The last columns of summary.csv (accounting.COLUMNS), in order: empty for xdplab's own
# collector.
PROGRAM_COLUMNS = [
    "program", "observe", "prog_seen", "prog_pass", "prog_drop", "prog_aborted", "prog_tx",
    "prog_tx_errors", "prog_redirect", "prog_ns_per_pkt", "prog_insns", "prog_jited_bytes", "prog_maps",
    "program_sha256",
]

# A verdict that sends the frame somewhere other than up the stack (not seen by tcpdump).
NOT_PASSED = ("drop", "aborted", "tx", "tx_errors", "redirect")


def driver_verdicts(blk: dict) -> dict | None:
    """One interface's verdicts of a user's program over the armed window, as its driver
    counted them: {"seen", "pass", "drop", "aborted", "tx", "tx_errors", "redirect"}; None
    without such counters (no user's program, generic XDP, a driver whose names are not
    known).  tx_errors: XDP_TX verdicts the driver could not send (veth: its peer runs no
    XDP program) and dropped.  aborted: XDP_ABORTED and action values XDP does not know,
    from the xdp_exception tracepoint; the driver counts them among its drops (veth does),
    so they are taken out of drop.  What the program neither dropped, aborted on, sent
    back nor redirected, it passed."""
    prog = blk.get("program") or {}
    d = prog.get("driver_xdp")
    if d is None:
        return None
    out = {k: count(d.get(f"xdp_{k}")) for k in ("drop", "tx", "tx_errors", "redirect")}
    exc = prog.get("exceptions") or {}
    out["aborted"] = count(exc.get("aborted")) + count(exc.get("invalid"))
    out["drop"] -= out["aborted"]
    out["seen"] = count(d.get("xdp_packets"))
    out["pass"] = out["seen"] - sum(out[k] for k in NOT_PASSED)
    return out


def program_columns(settings: dict, arm: dict, gathered: dict) -> dict:
    """The program-under-test columns (PROGRAM_COLUMNS): empty (None) for xdplab's own
    collector."""
    program = settings.get("program") or "collector"
    out = {c: None for c in PROGRAM_COLUMNS}
    out["program"] = program
    if program == "collector":
        return out
    ifaces = gathered.get("interfaces") or {}
    blocks = [b.get("program") for b in ifaces.values() if b.get("program")]
    out["observe"] = "off" if program == "attached" else settings.get("observe")
    first = blocks[0] if blocks else (arm.get("program") or {})
    out["program_sha256"] = first.get("sha256")
    out["prog_insns"] = first.get("xlated_insns")
    out["prog_jited_bytes"] = first.get("jited_bytes")
    out["prog_maps"] = first.get("nr_map_ids")
    # Its own run-time statistics exist only when it runs by itself (collector off): reached
    # by the collector's tail call, its time is accounted to the collector (xdp_ns_per_pkt).
    if blocks and not any(b.get("chained") for b in blocks):
        run_time = sum(count(b.get("run_time_ns")) for b in blocks)
        run_cnt = sum(count(b.get("run_cnt")) for b in blocks)
        out["prog_ns_per_pkt"] = rounded(run_time / run_cnt, 1) if run_cnt else None
    verdicts = [driver_verdicts(b) for b in ifaces.values()]
    if verdicts and all(v is not None for v in verdicts):
        for col in ("seen", "pass") + NOT_PASSED:
            out[f"prog_{col}"] = sum(v[col] for v in verdicts)
    return out
