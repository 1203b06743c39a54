"""Find what an interrupted invocation left in results/ and discard it.

A trial's four steps hold state on the DUT agent between them, so a trial
that stopped half-way cannot be continued: its step records are removed and
the whole trial runs again.  Complete trials (trial.json present) are never
touched.
"""

from __future__ import annotations

from pathlib import Path

STEP_FILES = ("arm.json", "generator.json", "capture.json", "capture.pcap")


def another_invocation_running(workdir: Path) -> bool:
    locks = Path(workdir, ".snakemake", "locks")
    return locks.is_dir() and any(locks.iterdir())


def discard_partial_trials(results: str, trials: list[dict]) -> list[str]:
    """Remove step records of trials without trial.json; return what was removed."""
    if another_invocation_running(Path(".")):
        return []
    notes = []
    for t in trials:
        d = Path(results, "trials", f"pps~{t['pps']}", f"size~{t['size']}", f"rep~{t['rep']}")
        if (d / "trial.json").exists():
            continue
        present = [f for f in STEP_FILES if (d / f).exists()]
        if present:
            for f in present:
                (d / f).unlink()
            notes.append(f"discarded the partial trial {d} ({', '.join(present)}) left by an "
                         f"interrupted run; it will run again from the start")
    return notes


def end_of_run(settings: dict, results: str, failed: bool) -> None:
    """Run by Snakemake when the workflow ends: leave nothing armed, tear down, show the table."""
    import sys

    if settings["testbed"] == "embedded":
        from .testbed import EmbeddedTestbed

        tb = EmbeddedTestbed(src_iface=settings["src_iface"], dut_iface=settings["dut_iface"],
                             mtu=settings["mtu"])
        if settings["keep_testbed"]:
            _disarm_quietly(tb)
            print("xdplab: the testbed is left up (keep_testbed=true); remove it with "
                  "`make clean-testbed`", file=sys.stderr)
        else:
            for item in tb.down():
                print(f"xdplab: testbed down: {item}", file=sys.stderr)
    table = Path(results, "summary.md")
    if not failed and table.exists():
        print("\n" + table.read_text())
        print(f"Results: {results}/summary.csv (one row per trial; columns explained in README.md)")


def _disarm_quietly(tb) -> None:
    """Disarm any session on a testbed that stays up, so it is reusable."""
    import json

    from .agentclient import AgentClient, AgentError

    try:
        desc = json.loads(Path(tb.state_dir, "testbed.json").read_text())
        AgentClient.from_description(desc["dut"], timeout_s=5).reset()
    except (OSError, ValueError, KeyError, AgentError):
        pass
