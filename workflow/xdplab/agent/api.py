"""Request validation for the agent's REST API: pure functions, no root needed.

Every field is checked for type and range; an error names the field first
("<field>: ..."), and the server answers it as {"error": ...} with a status.
"""

import math
import re

SNAPLEN_MIN, SNAPLEN_MAX = 42, 262144
DEADLINE_MAX_S = 86400
EXPECTED_PACKETS_MAX = 1 << 32        # seq is a u32
RINGBUF_PAGES_MAX = 16384             # XDPLAB_RING_PAGES limit in collector.bpf.c
RUN_IDS_MAX = 16                      # XDPLAB_MAX_RUN_IDS in xdplab.h (checked at start)
TRIAL_MAX_CHARS = 512
COLLECTORS = ("features", "counters", "off")
XDP_MODES = ("native", "generic")
HEX16_RE = re.compile(r"^[0-9a-f]{16}$")
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ApiError(Exception):
    """An error answered to the client as {"error": message} with a status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def require_object(body):
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object")
    return body


def check_fields(body, allowed):
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, "%s: unknown field" % unknown[0])


def get_int(body, name, lo, hi, default=None):
    if name not in body and default is not None:
        return default
    v = body.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(400, "%s: must be an integer from %d to %d" % (name, lo, hi))
    if not lo <= v <= hi:
        raise ApiError(400, "%s: %d is out of range %d..%d" % (name, v, lo, hi))
    return v


def get_choice(body, name, choices, default=None):
    v = body.get(name, default)
    if v not in choices:
        raise ApiError(400, "%s: must be one of %s" % (name, ", ".join('"%s"' % c for c in choices)))
    return v


def get_ring_pages(body):
    """The optional ringbuf_pages field: None (the compiled default) or a power of two."""
    v = body.get("ringbuf_pages")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= RINGBUF_PAGES_MAX \
            or v & (v - 1):
        raise ApiError(400, "ringbuf_pages: must be a power of two from 1 to %d (or null for "
                            "the collector's default)" % RINGBUF_PAGES_MAX)
    return v


def validate_build(body):
    """POST /build -> {"port", "collector", "ringbuf_pages"}."""
    body = require_object(body)
    check_fields(body, ("port", "collector", "ringbuf_pages"))
    return {"port": get_int(body, "port", 1, 65535),
            "collector": get_choice(body, "collector", COLLECTORS[:2], "features"),
            "ringbuf_pages": get_ring_pages(body)}


def validate_arm(body, allowed):
    """POST /sessions -> a normalized request; `allowed` are the agent's interfaces."""
    body = require_object(body)
    check_fields(body, ("trial", "run_id", "run_ids", "interfaces", "xdp_mode", "port",
                        "expected_tag", "snaplen", "deadline_s", "expected_packets",
                        "ringbuf_pages", "collector", "measured_run_ids", "keep_features",
                        "program"))
    req = {}
    trial = body.get("trial")
    if not isinstance(trial, str) or not 1 <= len(trial) <= TRIAL_MAX_CHARS or \
            any(ord(ch) < 32 or ord(ch) == 127 for ch in trial):
        raise ApiError(400, "trial: must be a non-empty string of at most %d printable "
                            "characters" % TRIAL_MAX_CHARS)
    req["trial"] = trial
    req["run_id"] = get_int(body, "run_id", 1, 65535)
    req["run_ids"] = get_int(body, "run_ids", 1, RUN_IDS_MAX, default=1)
    if req["run_id"] + req["run_ids"] - 1 > 65535:
        raise ApiError(400, "run_ids: run_id %d + run_ids %d - 1 exceeds 65535"
                       % (req["run_id"], req["run_ids"]))
    ifaces = body.get("interfaces")
    if not isinstance(ifaces, list) or not ifaces or \
            not all(isinstance(i, str) for i in ifaces):
        raise ApiError(400, "interfaces: must be a non-empty list of interface names")
    if len(set(ifaces)) != len(ifaces):
        raise ApiError(400, "interfaces: lists an interface twice")
    for i in ifaces:
        if i not in allowed:
            raise ApiError(403, "interfaces: %s is not one the agent was started with "
                                "(--interface %s)" % (i[:64], ", ".join(allowed)))
    req["interfaces"] = list(ifaces)
    req["xdp_mode"] = get_choice(body, "xdp_mode", XDP_MODES)
    req["port"] = get_int(body, "port", 1, 65535)
    tag = body.get("expected_tag")
    if tag is not None and (not isinstance(tag, str) or not HEX16_RE.match(tag)):
        raise ApiError(400, "expected_tag: must be 16 lowercase hex digits or null")
    req["expected_tag"] = tag
    req["snaplen"] = get_int(body, "snaplen", SNAPLEN_MIN, SNAPLEN_MAX)
    dl = body.get("deadline_s")
    if isinstance(dl, bool) or not isinstance(dl, (int, float)) or \
            not math.isfinite(dl) or not 0 < dl <= DEADLINE_MAX_S:
        raise ApiError(400, "deadline_s: must be a number > 0 and <= %d" % DEADLINE_MAX_S)
    req["deadline_s"] = float(dl)
    req["expected_packets"] = get_int(body, "expected_packets", 0, EXPECTED_PACKETS_MAX)
    req["collector"] = get_choice(body, "collector", COLLECTORS, "features")
    req["ringbuf_pages"] = get_ring_pages(body)
    if req["collector"] != "features" and req["ringbuf_pages"] is not None:
        raise ApiError(400, "ringbuf_pages: only with collector \"features\"")
    # The first measured_run_ids ids of the range are measured; the rest are warm-up,
    # counted but kept out of the latency figures, the features file and the time series.
    req["measured_run_ids"] = get_int(body, "measured_run_ids", 1, req["run_ids"],
                                      default=req["run_ids"])
    keep = body.get("keep_features", False)
    if not isinstance(keep, bool):
        raise ApiError(400, "keep_features: must be true or false")
    req["keep_features"] = keep
    # The program under test: null (the collector), "attached", or an object by sha256;
    # checked by userprog.validate_program.  Its observer is what `collector` says:
    # features (records), counters (verdicts and counts only) or off.
    req["program"] = body.get("program")
    return req


def query_interface(query, interfaces):
    """The `interface` query parameter of capture.pcap; may be omitted with one interface."""
    from urllib.parse import parse_qs
    values = parse_qs(query or "", keep_blank_values=True).get("interface")
    if not values:
        if len(interfaces) == 1:
            return interfaces[0]
        raise ApiError(400, "interface: the session has interfaces %s; name one"
                       % ", ".join(interfaces))
    if values[0] not in interfaces:
        raise ApiError(404, "interface: %s is not one of the session's (%s)"
                       % (values[0][:64], ", ".join(interfaces)))
    return values[0]


FAILED_SEQS_MAX = 1000                # the generator lists at most this many failed sends


def validate_capture_check(body, interfaces):
    """POST /sessions/<id>/capture/check: which interface's capture, and what the
    generator of one run id says it scheduled and failed to send."""
    body = require_object(body)
    check_fields(body, {"interface", "run_id", "scheduled", "threads", "failed_seqs", "send_errors"})
    iface = body.get("interface")
    if iface not in interfaces:
        raise ApiError(404 if isinstance(iface, str) else 400,
                       "interface: %s is not one of this session's interfaces (%s)"
                       % (str(iface)[:40], ", ".join(interfaces)))
    failed = body.get("failed_seqs", [])
    if not isinstance(failed, list) or len(failed) > FAILED_SEQS_MAX or any(
            isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < EXPECTED_PACKETS_MAX
            for s in failed):
        raise ApiError(400, "failed_seqs: must be a list of at most %d sequence numbers"
                       % FAILED_SEQS_MAX)
    return {"interface": iface, "run_id": get_int(body, "run_id", 1, 65535),
            "scheduled": get_int(body, "scheduled", 0, EXPECTED_PACKETS_MAX),
            "threads": get_int(body, "threads", 1, 256),
            "failed_seqs": failed, "send_errors": get_int(body, "send_errors", 0, EXPECTED_PACKETS_MAX, 0)}
