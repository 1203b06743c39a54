"""The embedded testbed's command line:

    PYTHONPATH=workflow python -m xdplab.testbed up|down|status [--instance K] [--keep-logs DIR]

prints JSON (the description, what was removed, or the status); exit 1 with
the reason on stderr when a part cannot be set up.  Instance 0, the default, is
the testbed `make run` and `make clean-testbed` use; --instance K (1..32) is
another one beside it, with its own names and addresses (layout.instance_names)."""

from __future__ import annotations

import argparse
import json
import sys

from .lab import EmbeddedTestbed
from .layout import MAX_INSTANCE
from .services import REPO_ROOT
from .system import TestbedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xdplab.testbed",
        description="Bring the embedded two-namespace testbed up or down, or show its status (JSON). "
                    "`down` removes everything under the state directory; --keep-logs DIR copies "
                    "the logs there first.")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--instance", type=int, default=0, metavar="K",
                        help=f"which embedded testbed, 0..{MAX_INSTANCE} (default 0: xdplab-src/-dut, "
                             "10.201.0.0/16, /run/xdplab; K >= 1: xdplabK-src/-dut, 10.(210+K).0.0/16, "
                             "/run/xdplabK)")
    parser.add_argument("--name", help="namespace prefix (default: the instance's, xdplab or xdplabK)")
    parser.add_argument("--state-dir", help="runtime state (default: the instance's, /run/xdplab or /run/xdplabK)")
    parser.add_argument("--repo-root", default=str(REPO_ROOT),
                        help="repository holding dist/xdplab-agent.pyz (or the Makefile that builds it)")
    parser.add_argument("--mtu", type=int, default=1500, help="test link MTU (default: 1500)")
    parser.add_argument("--keep-logs", metavar="DIR", help="with down: copy agent.log and sshd.log to DIR first")
    args = parser.parse_args(argv)
    if not 0 <= args.instance <= MAX_INSTANCE:
        parser.error(f"--instance {args.instance} is outside 0..{MAX_INSTANCE}")
    tb = EmbeddedTestbed(name=args.name, state_dir=args.state_dir, repo_root=args.repo_root, mtu=args.mtu,
                         instance=args.instance)
    try:
        if args.action == "up":
            out = tb.up()
        elif args.action == "down":
            kept = [str(p) for p in tb.copy_logs(args.keep_logs)] if args.keep_logs else []
            out = {"removed": tb.down(), **({"logs_copied": kept} if args.keep_logs else {})}
        else:
            out = tb.status()
    except TestbedError as e:
        print(f"xdplab.testbed {args.action}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
