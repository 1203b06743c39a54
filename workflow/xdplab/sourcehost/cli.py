"""The generator's command line (``xdplab-source.pyz send``): parsed and checked
before anything is opened or sent, each error one line on stderr, exit status 2.

The options are the contract in ``workflow/xdplab/PROTOCOL.md`` ("Generator
command line and output").
"""

import argparse
import ipaddress
import math
import os
import shutil
import sys

from .wire import HEADER_LEN, MAX_PAYLOAD, mac_bytes

PROG = "xdplab-source send"
MAX_PROGRESS_S = 1.0  # a broken SSH session is noticed within about this long
PATTERNS = ("constant", "burst", "poisson")
DEFAULT_BURST = 16
SEND_PATHS = ("udp", "packet", "auto")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit status 2."""

    def error(self, message):
        sys.stderr.write("%s: error: %s\n" % (self.prog, message))
        sys.exit(2)


def _ipv4(text):
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an IPv4 address" % text)


def _mac(text):
    try:
        return mac_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a MAC address (aa:bb:cc:dd:ee:ff)" % text)


def parser():
    p = _Parser(
        prog=PROG,
        description="Send paced UDP packets with the xdplab payload header.",
        epilog="example: xdplab-source.pyz send --dst 10.201.0.2 --port 12345 --pps 10000 "
        "--size 1458 --duration 5 --threads 2 --run-id 4242",
    )
    p.add_argument("--dst", required=True, type=_ipv4, help="destination IPv4 address")
    p.add_argument("--port", required=True, type=int, help="destination UDP port (1..65535)")
    p.add_argument("--pps", required=True, type=int, help="offered rate, packets per second, summed over senders")
    p.add_argument("--size", required=True, type=int,
                   help="UDP payload bytes (%d..%d)" % (HEADER_LEN, MAX_PAYLOAD))
    p.add_argument("--duration", required=True, type=float, help="seconds of traffic")
    p.add_argument("--threads", type=int, default=1,
                   help="sender processes, one socket each (default 1)")
    p.add_argument("--run-id", required=True, type=int, help="run identifier written into every packet (0..65535)")
    p.add_argument("--src", type=_ipv4, default=None, help="source IPv4 address to bind to")
    p.add_argument("--progress-s", type=float, default=1.0,
                   help="seconds between progress lines on stderr, at most %g; 0 turns them "
                   "off (default 1)" % MAX_PROGRESS_S)
    p.add_argument("--pattern", choices=PATTERNS, default="constant",
                   help="packet spacing: constant (default), burst, poisson")
    p.add_argument("--burst-size", type=int, default=None,
                   help="burst pattern: packets back to back per burst (default %d)" % DEFAULT_BURST)
    p.add_argument("--seed", type=int, default=None,
                   help="poisson pattern: random seed (default: drawn, and recorded)")
    p.add_argument("--send-path", choices=SEND_PATHS, default="udp",
                   help="udp (default): UDP socket; packet: AF_PACKET with PACKET_QDISC_BYPASS "
                   "(Linux, root; needs --iface and --dst-mac); auto: packet where it can be "
                   "opened, udp otherwise (the report says which, and why)")
    p.add_argument("--iface", default=None, help="the source's test interface")
    p.add_argument("--dst-mac", type=_mac, default=None, help="next hop's MAC address (packet path)")
    p.add_argument("--counters-iface", default=None,
                   help="interface whose NIC and qdisc counters are read (default --iface)")
    p.add_argument("--backend", choices=("python", "trafgen"), default="python",
                   help="python (default): this program sends; trafgen: netsniff-ng's trafgen sends "
                   "(Linux, root; needs --iface and --dst-mac; constant pattern, one sender)")
    p.add_argument("--trafgen", default=None,
                   help="trafgen's path for --backend trafgen (default: found on PATH or in /usr/sbin)")
    p.add_argument("--warmup-s", type=float, default=0.0,
                   help="seconds of warm-up before the measured --duration, at the same rate and pattern, "
                   "with --warmup-run-id (default 0: none)")
    p.add_argument("--warmup-run-id", type=int, default=None,
                   help="run identifier of the warm-up's packets (0..65535, not --run-id)")
    return p


def parse_args(argv=None):
    p = parser()
    a = p.parse_args(argv)
    _check_ranges(p, a)
    _check_pattern(p, a)
    _check_interfaces(p, a)
    _check_backend(p, a)
    _check_warmup(p, a)
    _schedule(p, a)
    return a


def _check_ranges(p, a):
    if not 1 <= a.port <= 65535:
        p.error("--port must be 1..65535, got %d" % a.port)
    if a.pps < 1:
        p.error("--pps must be at least 1, got %d" % a.pps)
    if not HEADER_LEN <= a.size <= MAX_PAYLOAD:
        p.error("--size must be %d..%d bytes, got %d" % (HEADER_LEN, MAX_PAYLOAD, a.size))
    if not (a.duration > 0 and math.isfinite(a.duration)):
        p.error("--duration must be a positive number of seconds, got %s" % a.duration)
    if not 1 <= a.threads <= 256:
        p.error("--threads must be 1..256, got %d" % a.threads)
    if not 0 <= a.run_id <= 0xFFFF:
        p.error("--run-id must be 0..65535 (it is a u16 in the header), got %d" % a.run_id)
    if not (0 <= a.progress_s <= MAX_PROGRESS_S):
        p.error("--progress-s must be 0 (off) or a number of seconds up to %g, got %s"
                % (MAX_PROGRESS_S, a.progress_s))


def _check_pattern(p, a):
    if a.burst_size is not None and a.pattern != "burst":
        p.error("--burst-size applies to --pattern burst only (pattern is %s)" % a.pattern)
    if a.pattern == "burst":
        if a.burst_size is None:
            a.burst_size = DEFAULT_BURST
        if not 1 <= a.burst_size <= 1 << 20:
            p.error("--burst-size must be 1..%d, got %d" % (1 << 20, a.burst_size))
    if a.seed is not None and a.pattern != "poisson":
        p.error("--seed applies to --pattern poisson only (pattern is %s)" % a.pattern)
    if a.pattern == "poisson" and a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "big")
    if a.seed is not None and not 0 <= a.seed < 1 << 64:
        p.error("--seed must be 0..2^64-1, got %d" % a.seed)


def _check_interfaces(p, a):
    for name in ("iface", "counters_iface"):
        value = getattr(a, name)
        if value is not None and (not value or len(value) > 15 or "/" in value or value in (".", "..")
                                  or any(c.isspace() for c in value)):
            p.error("--%s %r is not an interface name" % (name.replace("_", "-"), value))
    if a.counters_iface is None:
        a.counters_iface = a.iface


def _check_backend(p, a):
    """The backend and send path, and what each needs."""
    if a.backend == "trafgen":
        if not sys.platform.startswith("linux"):
            p.error("--backend trafgen needs Linux; this is %s" % sys.platform)
        if a.pattern != "constant":
            p.error("--backend trafgen sends the constant pattern only (trafgen's own pacing); "
                    "--pattern %s needs --backend python" % a.pattern)
        if a.threads != 1:
            p.error("--backend trafgen runs one sender (trafgen paces with --rate in one process, "
                    "pinned); --threads %d needs --backend python" % a.threads)
        if a.iface is None:
            p.error("--backend trafgen needs --iface")
        if a.dst_mac is None:
            p.error("--backend trafgen needs --dst-mac")
        a.send_path = "packet"
        a.trafgen = a.trafgen or shutil.which("trafgen") or next(
            (x for x in ("/usr/sbin/trafgen", "/usr/local/sbin/trafgen") if os.access(x, os.X_OK)), None)
        if a.trafgen is None:
            p.error("--backend trafgen: no trafgen found (install netsniff-ng, or give --trafgen PATH)")
        a.send_path_requested, a.send_path_why = a.send_path, None
        return
    if a.trafgen is not None:
        p.error("--trafgen applies to --backend trafgen only")
    a.send_path_requested, a.send_path_why = a.send_path, None
    if a.send_path == "auto":
        a.send_path, a.send_path_why = resolve_auto(sys.platform, a.iface, a.dst_mac, packet_socket_opens)
    if a.send_path == "packet":
        if not sys.platform.startswith("linux"):
            p.error("--send-path packet needs Linux (AF_PACKET); this is %s" % sys.platform)
        if a.iface is None:
            p.error("--send-path packet needs --iface")
        if a.dst_mac is None:
            p.error("--send-path packet needs --dst-mac")
    elif a.dst_mac is not None and a.send_path_requested != "auto":
        p.error("--dst-mac applies to --send-path packet or auto, or --backend trafgen only")


def resolve_auto(platform, iface, dst_mac, can_open):
    """--send-path auto: ("packet" or "udp", why).  The packet path where it can be taken:
    Linux, --iface and --dst-mac given (the controller gives them when it knows the
    DUT's MAC), and an AF_PACKET socket opens (root or CAP_NET_RAW); the UDP socket
    otherwise (macOS, no privilege, no next hop)."""
    if not platform.startswith("linux"):
        return "udp", "not Linux (%s): no AF_PACKET" % platform
    if iface is None:
        return "udp", "no --iface"
    if dst_mac is None:
        return "udp", "no --dst-mac (the next hop's MAC)"
    err = can_open()
    if err:
        return "udp", "an AF_PACKET socket does not open (%s)" % err
    return "packet", "Linux, --iface and --dst-mac given, an AF_PACKET socket opens"


def packet_socket_opens():
    """None when this process can open an AF_PACKET socket, else why not."""
    import socket
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        return None
    except (OSError, AttributeError) as e:
        return str(e) or e.__class__.__name__


def _check_warmup(p, a):
    if not (a.warmup_s >= 0 and math.isfinite(a.warmup_s)):
        p.error("--warmup-s must be 0 (none) or a positive number of seconds, got %s" % a.warmup_s)
    if a.warmup_s > 0:
        if a.warmup_run_id is None:
            p.error("--warmup-s needs --warmup-run-id")
        if not 0 <= a.warmup_run_id <= 0xFFFF:
            p.error("--warmup-run-id must be 0..65535 (it is a u16 in the header), got %d" % a.warmup_run_id)
        if a.warmup_run_id == a.run_id:
            p.error("--warmup-run-id must differ from --run-id (%d): the DUT tells the two apart by it"
                    % a.run_id)
    elif a.warmup_run_id is not None:
        p.error("--warmup-run-id applies with --warmup-s > 0 only")


def _schedule(p, a):
    """a.scheduled and a.warmup_scheduled: the packets of each run."""
    # Packets i with i/pps < duration; the epsilon keeps 10000 * 0.3 from becoming 3001.
    a.scheduled = int(math.ceil(a.pps * a.duration - 1e-9))
    a.warmup_scheduled = int(math.ceil(a.pps * a.warmup_s - 1e-9)) if a.warmup_s > 0 else 0
    if a.warmup_scheduled > 1 << 32:
        p.error("--pps x --warmup-s schedules %d packets; seq is a u32 (at most %d)"
                % (a.warmup_scheduled, 1 << 32))
    if a.scheduled < 1:
        p.error("--pps x --duration schedules no packet")
    if a.scheduled > 1 << 32:
        p.error("--pps x --duration schedules %d packets; seq is a u32 (at most %d)"
                % (a.scheduled, 1 << 32))
