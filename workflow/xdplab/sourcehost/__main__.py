"""The source host's three commands:

    python3 xdplab-source.pyz send ...        the generator (cli.py for its options)
    python3 xdplab-source.pyz preflight ...   the check before a run (preflight.py)
    python3 xdplab-source.pyz facts ...       what this host is (facts.py)

Each imports only its own modules: the sender's start is part of every trial's
launch cost.
"""

import sys

USAGE = "usage: xdplab-source.pyz {send,preflight,facts} ...\n"


def send(argv):
    import json

    from . import cli, control
    args = cli.parse_args(argv)
    if args.backend == "trafgen":
        from .trafgen import run_trafgen as run
    else:
        from .sender import run
    result, status = run(args)
    if not control.write(sys.stdout, json.dumps(result) + "\n") and status == 0:
        status = control.EXIT_CONTROLLER_GONE  # nobody received the report
    return status


def main(argv=None):
    """Exits with the command's status (zipapp's entry point ignores a return value)."""
    sys.exit(run(sys.argv[1:] if argv is None else list(argv)))


def run(argv):
    command = argv[0] if argv else None
    if command == "send":
        return send(argv[1:])
    if command == "preflight":
        from . import preflight
        return preflight.main(argv[1:])
    if command == "facts":
        from . import facts
        return facts.main(argv[1:])
    if command in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    sys.stderr.write(USAGE + "xdplab-source.pyz: error: no command %r\n" % command)
    return 2


if __name__ == "__main__":
    main()
