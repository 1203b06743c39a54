"""Command line and signals of the xdplab DUT agent.

    /usr/bin/python3 dist/xdplab-agent.pyz --listen 10.201.2.2:7717 \\
        --token-file /etc/xdplab/agent.token --interface enp5s0 [--interface IF ...] \\
        [--state-dir /var/lib/xdplab]

SIGTERM, SIGINT and SIGHUP disarm any armed session, delete the session
captures, unload the programs, then exit 0.  One agent at a time may use a
state directory (flock); a second one exits with status 1 naming the first.
Nothing is pinned: programs, maps and bpf_links live only in this process's
file descriptors, and tcpdump gets a parent-death signal, so even SIGKILL
leaves neither behind.
"""

import argparse
import fcntl
import logging
import os
import signal
import stat
import sys
import threading

from . import AGENT

log = logging.getLogger("xdplab-agent")
MIN_TOKEN_CHARS = 16


def parse_listen(value):
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected ADDR:PORT, got %r" % value)
    return host.strip("[]"), int(port)


def parser():
    p = argparse.ArgumentParser(
        prog="xdplab-agent",
        description="xdplab DUT agent (%s): arms the XDP collector on this device under test "
                    "over a token-protected HTTP API (see API.md)." % AGENT,
        epilog="example: /usr/bin/python3 xdplab-agent.pyz --listen 192.0.2.10:7717 "
               "--token-file /etc/xdplab/agent.token --interface enp5s0")
    p.add_argument("--listen", type=parse_listen, required=True, metavar="ADDR:PORT",
                   help="address and port to serve on (no default: choose the management "
                        "network's address)")
    p.add_argument("--token-file", required=True, metavar="FILE",
                   help="file holding the shared token (keep it mode 0600)")
    p.add_argument("--interface", action="append", required=True, metavar="IF",
                   help="interface a session may attach to (repeatable); any other is refused")
    p.add_argument("--allow-programs", metavar="DIR",
                   help="let clients have XDP objects (*.o) found in DIR loaded as the program "
                        "under test, named by their sha256 (off by default: a user's program "
                        "is code running as root here)")
    p.add_argument("--allow-program-upload", action="store_true",
                   help="let whoever holds the token upload XDP objects to be loaded as the "
                        "program under test (off by default)")
    p.add_argument("--state-dir", default="/var/lib/xdplab", metavar="DIR",
                   help="directory for captures, locked by this agent (default %(default)s)")
    return p


def read_token(path):
    with open(path) as f:
        st = os.fstat(f.fileno())
        token = f.read().strip()
    if not token:
        raise SystemExit("token file %s is empty" % path)
    if len(token) < MIN_TOKEN_CHARS:
        raise SystemExit("token in %s is shorter than %d characters" % (path, MIN_TOKEN_CHARS))
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by group or others (mode %o)",
                    path, stat.S_IMODE(st.st_mode))
    return token


def lock_state_dir(path):
    """flock the state directory for this agent's lifetime; returns the fd.

    Two agents on one state directory would delete each other's captures (a
    starting agent removes the pcaps a killed predecessor left).  The lock
    goes away with the process, also on SIGKILL."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)   # O_CLOEXEC: children do not hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        ino = os.fstat(fd).st_ino
        os.close(fd)
        holders = []
        with open("/proc/locks") as f:
            for line in f:
                cols = line.split()
                if len(cols) >= 6 and cols[1] == "FLOCK" and \
                        cols[5].rsplit(":", 1)[-1] == str(ino):
                    holders.append(cols[4])
        raise SystemExit("state dir %s is in use by another agent (pid %s); stop it first"
                         % (path, ", ".join(holders) or "unknown"))
    return fd


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")
    # Imported after argument parsing: --help needs neither bcc nor root.
    from .bpfsrc import Sources
    from .capture import Spawner
    from .server import Server
    from .service import Agent

    token = read_token(args.token_file)
    state_dir = os.path.abspath(args.state_dir)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    lock_fd = lock_state_dir(state_dir)   # noqa: F841  held until exit
    sources = Sources.load()

    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("got %s; shutting down", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    from .userprog import ProgramStore
    if args.allow_programs and not os.path.isdir(args.allow_programs):
        log.error("--allow-programs %s: not a directory", args.allow_programs)
        return 2
    store = ProgramStore(state_dir, args.allow_programs, args.allow_program_upload)
    agent = Agent(args.interface, state_dir, token, sources, Spawner(), store=store)
    server = Server(args.listen, agent)
    log.info("%s listening on %s:%d (instance %s, pid %d, bcc %s, interfaces %s, bpf from %s, "
             "state dir %s)", AGENT, args.listen[0], args.listen[1], agent.instance, agent.pid,
             agent.bcc_version, agent.allowed, sources.source_origin, state_dir)
    t = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    t.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        agent.shutdown()
        server.server_close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
