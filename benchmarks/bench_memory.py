"""The DUT agent's peak memory against the packet count (issue 11): trials of 1, 5 and
15 million packets on the embedded testbed at a rate this machine sustains, each
reporting the agent's VmHWM (reset before the trial), and the growth from the first to
the last.  Figures, no assertions.

    .venv/bin/python benchmarks/bench_memory.py [--pps 100000] [--millions 1,5,15] [--json FILE]

bench_workflow.py measures the same at 300,000 pps, which the shared 2-CPU machine
cannot offer: its "15 million" trial sends about 4 million.  Here the duration is
packets / pps at a rate the generator reaches, so the counts are the packets sent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_workflow as bw  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pps", type=int, default=100000)
    p.add_argument("--millions", default="1,5,15")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    workdir = bw.copy_repo()
    try:
        bw.warm(workdir)
        rows = bw.memory(workdir, pps=args.pps,
                         counts=[int(m) for m in args.millions.split(",")])
    finally:
        subprocess.run([sys.executable, "-m", "xdplab.testbed", "down"], cwd=workdir,
                       env=bw.env(workdir), capture_output=True)
        shutil.rmtree(workdir.parent, ignore_errors=True)
    first, last = rows[0]["agent_vm_hwm_mib"], rows[-1]["agent_vm_hwm_mib"]
    figures = {"pps": args.pps, "memory": rows,
               "agent_hwm_growth_pct": round((last / first - 1) * 100, 1)}
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
