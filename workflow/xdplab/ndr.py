"""Zero-loss rate search (RFC 2544 throughput; "NDR", no-drop rate): which trial to run
next, given the trials a search ran so far, and its result once it is over.

Per search (one payload size, attach mode, collector and pattern), between ndr_min_pps
and ndr_max_pps:

1. Probes of ndr_probe_s seconds: the highest rate first (RFC 2544 starts at the
   maximum); if it fails, the lowest; then a binary search between the highest rate
   that passed and the lowest that failed, each new rate the geometric mean of the two
   (the resolution is relative, so the geometric mean halves the remaining ratio),
   until the failing rate is at most ndr_resolution_pct above the passing one.
2. A confirmation trial of ndr_confirm_s seconds at the highest rate that passed.  If it
   passes, that rate is the result.
3. If it fails, the search steps down with trials of ndr_confirm_s seconds only (a short
   probe that passed says nothing about a long trial): below the lowest long trial that
   failed, to the rate that trial delivered ((sent - lost) / duration) or one resolution
   step, whichever is lower, the step doubling with each further failure, until one
   passes; then one resolution step above it (the rate a lossy trial delivered is
   usually just below the answer), then a binary search between the highest long trial
   that passed and the lowest that failed, with long trials, to the resolution.
   The result is the highest long trial that passed, which is its own confirmation.

A trial passes when its source offered the whole rate (rate_sustained) and its loss,
lost / sent, is at most ndr_loss_pct.  A trial whose source could not offer its rate is
a failure of the source, never a pass: the rate is not known to be lossless.

Pure functions: no Snakemake, no files (workflow/rules/ndr.smk drives them, one
checkpoint per step; tests/test_ndr.py drives them against simulated devices).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from .frames import frame_bytes, mbps

PASS, LOSS, SOURCE = "pass", "loss", "source"   # a trial's outcome
PROBE, CONFIRM = "probe", "confirm"            # a trial's kind (ndr_probe_s, ndr_confirm_s)
# What bounded the result: a trial above it lost packets (dut), its source could not
# offer the rate above it (source), or the answer lies at an end of the range tried
# (range: ndr_max_pps passed, or ndr_min_pps failed and there is no rate).
DUT, RANGE = "dut", "range"

# The grid's dimensions a search is per (the offered rate is what it searches).
SEARCH_DIMENSIONS = ("packet_size", "xdp_mode", "collector", "pattern", "program", "observe")


@dataclass(frozen=True)
class Params:
    min_pps: int
    max_pps: int
    resolution_pct: float
    loss_pct: float
    probe_s: int
    confirm_s: int

    @classmethod
    def from_settings(cls, s: dict) -> "Params":
        return cls(min_pps=int(s["ndr_min_pps"]), max_pps=int(s["ndr_max_pps"]),
                   resolution_pct=float(s["ndr_resolution_pct"]), loss_pct=float(s["ndr_loss_pct"]),
                   probe_s=int(s["ndr_probe_s"]), confirm_s=int(s["ndr_confirm_s"]))

    def problems(self) -> list[str]:
        if self.min_pps > self.max_pps:
            return [f"ndr_min_pps ({self.min_pps}) is above ndr_max_pps ({self.max_pps}); "
                    "the search needs min <= max"]
        return []

    def as_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]


# -- one trial -------------------------------------------------------------------------

def loss_pct(sent: int, lost: int) -> float | None:
    """Loss in percent of the packets sent (None when nothing was sent)."""
    return max(lost, 0) / sent * 100.0 if sent else None


def judge(summary: dict, threshold_pct: float) -> str:
    """A trial's outcome from its summary row: source when its source did not offer the
    whole rate (or sent nothing), else pass when lost / sent <= threshold_pct, else loss."""
    sent = int(summary.get("sent") or 0)
    if not _true(summary.get("rate_sustained")) or sent <= 0:
        return SOURCE
    return PASS if loss_pct(sent, int(summary.get("lost") or 0)) <= threshold_pct else LOSS


def _true(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true") or value == 1


def entry(kind: str, pps: int, duration_s: int, summary: dict, threshold_pct: float) -> dict:
    """What a search keeps of one finished trial."""
    sent, lost = int(summary.get("sent") or 0), max(int(summary.get("lost") or 0), 0)
    return {"kind": kind, "pps": int(pps), "duration_s": int(duration_s),
            "outcome": judge(summary, threshold_pct), "sent": sent, "lost": lost,
            "loss_pct": _round(loss_pct(sent, lost)),
            "rate_sustained": _true(summary.get("rate_sustained")),
            "not_offered": int(summary.get("not_offered") or 0),
            "loss_where": summary.get("loss_where") or "",
            # What got through per second: where a long trial that lost steps down to.
            "delivered_pps": _round((sent - lost) / duration_s if duration_s else 0.0)}


def _round(x, nd=4):
    return None if x is None else round(float(x), nd)


# -- the search ------------------------------------------------------------------------

def converged(lo: int, hi: int, resolution_pct: float) -> bool:
    """Whether a passing rate lo and a failing rate hi are within the resolution."""
    return hi - lo <= 1 or hi <= lo * (1.0 + resolution_pct / 100.0)


def midpoint(lo: int, hi: int) -> int:
    """The next rate between lo (passed) and hi (failed): their geometric mean, an integer
    strictly between them (callers make sure hi - lo > 1)."""
    return min(max(int(round(math.sqrt(lo * hi))), lo + 1), hi - 1)


def _lowest(entries):
    return min(entries, key=lambda e: e["pps"]) if entries else None


def _highest(entries):
    return max(entries, key=lambda e: e["pps"]) if entries else None


def decide(p: Params, history: list[dict]) -> dict:
    """The next trial, {"next": {"kind", "pps", "duration_s"}, "result": None}, or the end of
    the search, {"next": None, "result": {...}} (see result_of)."""
    probes = [e for e in history if e["kind"] == PROBE]
    longs = [e for e in history if e["kind"] == CONFIRM]

    def trial(kind, pps):
        return {"next": {"kind": kind, "pps": int(pps),
                         "duration_s": p.probe_s if kind == PROBE else p.confirm_s}, "result": None}

    def done(ndr, bound, confirmation):
        return {"next": None, "result": result_of(p, history, ndr, bound, confirmation)}

    if not longs:
        # Phase 1: short probes.
        if not probes:
            return trial(PROBE, p.max_pps)
        lo = _highest([e for e in probes if e["outcome"] == PASS])
        hi = _lowest([e for e in probes if e["outcome"] != PASS])
        if lo is None:
            if not any(e["pps"] == p.min_pps for e in probes):
                return trial(PROBE, p.min_pps)
            return done(None, hi, None)
        if hi is None or converged(lo["pps"], hi["pps"], p.resolution_pct):
            return trial(CONFIRM, lo["pps"])
        return trial(PROBE, midpoint(lo["pps"], hi["pps"]))

    first = longs[0]
    if first["outcome"] == PASS:
        # Confirmed at once: bounded above by the lowest probe that failed, if any.
        return done(first["pps"], _lowest([e for e in probes if e["outcome"] != PASS]), first)

    # Phase 3: the confirmation lost; step down and search again with long trials.
    hi = _lowest([e for e in longs if e["outcome"] != PASS])
    lo = _highest([e for e in longs if e["outcome"] == PASS and e["pps"] < hi["pps"]])
    if lo is None:
        if hi["pps"] <= p.min_pps:
            return done(None, hi, None)
        failures = sum(1 for e in longs if e["outcome"] != PASS)
        step = min(p.resolution_pct / 100.0 * 2 ** (failures - 1), 1.0)
        rate = min(hi["pps"] * (1.0 - step), hi["delivered_pps"] or 0.0)
        rate = max(p.min_pps, min(int(math.floor(rate)), hi["pps"] - 1))
        return trial(CONFIRM, rate)
    if converged(lo["pps"], hi["pps"], p.resolution_pct):
        return done(lo["pps"], hi, lo)
    if history[-1] is lo and sum(1 for e in longs if e["outcome"] == PASS) == 1:
        # The first long pass, usually at what a failed trial delivered: the answer is
        # likely just above it, so try one resolution step up before bisecting.
        up = int(math.floor(lo["pps"] * (1.0 + p.resolution_pct / 100.0)))
        return trial(CONFIRM, max(lo["pps"] + 1, min(up, hi["pps"] - 1)))
    return trial(CONFIRM, midpoint(lo["pps"], hi["pps"]))


def result_of(p: Params, history: list[dict], ndr: int | None, bound: dict | None,
              confirmation: dict | None) -> dict:
    """The search's result: the rate found (None: even ndr_min_pps failed), what limited
    it, the failing trial just above it, the confirmation trial, and the trial counts."""
    if ndr is None or bound is None:
        limited_by = RANGE
    else:
        limited_by = SOURCE if bound["outcome"] == SOURCE else DUT
    return {
        "ndr_pps": ndr,
        "limited_by": limited_by,
        "probes": sum(1 for e in history if e["kind"] == PROBE),
        "confirmations": sum(1 for e in history if e["kind"] == CONFIRM),
        "confirm_s": confirmation["duration_s"] if confirmation else None,
        "confirm_sent": confirmation["sent"] if confirmation else None,
        "confirm_lost": confirmation["lost"] if confirmation else None,
        "confirm_loss_pct": confirmation["loss_pct"] if confirmation else None,
        "fail_pps": bound["pps"] if bound else None,
        "fail_kind": bound["kind"] if bound else None,
        "fail_outcome": bound["outcome"] if bound else None,
        "fail_loss_pct": bound["loss_pct"] if bound else None,
        "fail_loss_where": bound["loss_where"] if bound else None,
        "resolution_pct": p.resolution_pct,
        "loss_threshold_pct": p.loss_pct,
    }


def run(p: Params, measure, limit: int = 1000) -> tuple[dict, list[dict]]:
    """Run a whole search against `measure(kind, pps, duration_s) -> summary row`; returns
    (result, history).  The workflow does the same one checkpoint at a time; tests use it."""
    history: list[dict] = []
    for _ in range(limit):
        d = decide(p, history)
        if d["next"] is None:
            return d["result"], history
        n = d["next"]
        history.append(entry(n["kind"], n["pps"], n["duration_s"],
                             measure(n["kind"], n["pps"], n["duration_s"]), p.loss_pct))
    raise RuntimeError(f"the search did not end within {limit} trials")


# -- names -----------------------------------------------------------------------------

def _search_pattern() -> str:
    from .trials import SLUG_RE

    return (r"size~\d+_xdp~[a-z]+_coll~[a-z]+_pat~[a-z]+" + f"(?:_prog~{SLUG_RE})?"
            + r"_cfg~[0-9a-f]{8}_ndr~[0-9a-f]{8}")


SEARCH_PATTERN = _search_pattern()


def search_name(point: dict, cfg_digest: str, p, tag: str = "ndr") -> str:
    """The directory of one search: its grid point (without a rate; a user's program by its
    slug, as in a trial's point name), the trials' settings digest (trials.config_digest)
    and the search's own settings' digest (`p.digest()`), after its kind's tag (ndr; mlr for
    snakemake search)."""
    from .trials import program_slug

    program = point.get("program") or "collector"
    prog = "" if program == "collector" else f"_prog~{program_slug(program)}"
    return (f"size~{point['packet_size']}_xdp~{point['xdp_mode']}_coll~{point['collector']}"
            f"_pat~{point['pattern']}{prog}_cfg~{cfg_digest}_{tag}~{p.digest()}")


def unsearchable(base: dict) -> str | None:
    """Why a search's trials cannot tell loss (None when they can): a zero-loss rate needs
    the collector counting what reached XDP, which collector off (or a user's program with
    observe off, or attached) does not do."""
    if base.get("collector") != "off":
        return None
    program = base.get("program") or "collector"
    if program == "collector":
        return ("collector: off counts no packet at XDP, so a trial's loss is unknown; "
                "a zero-loss search needs collector: features or counters")
    return (f"program {program} is observed with observe: off (always so for attached), which "
            "counts no packet before the program, so a trial's loss is unknown; a zero-loss "
            "search of a user's program needs observe: full or verdicts")


def searches(config: dict, p, tag: str = "ndr") -> dict[str, dict]:
    """{search name: the settings its trials share (all but the offered rate and the
    duration)} for every combination of the grid's dimensions other than the rate."""
    from . import trials

    out = {}
    for s in trials.grid_points(dict(config, target_pps=[1])):
        # Settings that do not change a trial's numbers (keep_pcap, ...) are left out, so
        # that changing them does not rerun the search's steps.
        leave_out = set(trials.FOLLOWED) | {"target_pps", "duration_s"}
        base = {k: v for k, v in sorted(s.items()) if k not in leave_out}
        out[search_name(s, trials.config_digest(s), p, tag)] = base
    return out


def trial_point(base: dict, pps: int, duration_s: int) -> str:
    """The trial point (trials.point_name) of one trial of a search."""
    from . import trials

    return trials.point_name(dict(base, target_pps=int(pps), duration_s=int(duration_s)))


# -- tables ----------------------------------------------------------------------------

# ndr.csv: one row per search.  Units in the names; the method in docs/ndr.md.
COLUMNS = [
    "packet_size", "frame_size", "ndr_pps", "probes", "confirm_sent", "confirm_lost", "limited_by",
    "resolution_pct", "loss_threshold_pct", "confirm_loss_pct", "confirm_s", "confirmations",
    "fail_pps", "fail_kind", "fail_outcome", "fail_loss_pct", "fail_loss_where",
    "ndr_l2_mbps", "ndr_wire_mbps", "min_pps", "max_pps", "probe_s", "xdp_mode", "collector", "pattern",
    "program", "observe", "search",
]
# ndr_probes.csv: one row per trial of every search, in the order they ran.
PROBE_COLUMNS = [
    "packet_size", "frame_size", "step", "kind", "target_pps", "duration_s", "outcome", "sent", "lost",
    "loss_pct", "rate_sustained", "not_offered", "delivered_pps", "loss_where",
    "xdp_mode", "collector", "pattern", "program", "observe", "search", "trial",
]


def wire_mbps(pps: int | None, payload: int) -> float | None:
    """The rate on an Ethernet wire (L1), Mbit/s: frame + preamble + inter-frame gap per
    packet (as summary.csv's throughput_wire_mbps)."""
    return mbps(pps, payload, 1)


def table_row(step: dict) -> dict:
    """ndr.csv's row of a search, from the step that ended it."""
    r, s, p = step["result"], step["settings"], step["params"]
    row = {k: r.get(k) for k in COLUMNS if k in r}
    row.update({k: s.get(k) for k in SEARCH_DIMENSIONS}, search=step["search"],
               min_pps=p["min_pps"], max_pps=p["max_pps"], probe_s=p["probe_s"],
               frame_size=frame_bytes(s["packet_size"]), ndr_l2_mbps=mbps(r["ndr_pps"], s["packet_size"], 2),
               ndr_wire_mbps=wire_mbps(r["ndr_pps"], s["packet_size"]))
    return {k: row.get(k) for k in COLUMNS}


def probe_rows(step: dict) -> list[dict]:
    """ndr_probes.csv's rows of a search: each of its trials, in order."""
    s = step["settings"]
    out = []
    for e in step["history"]:
        row = dict(e, target_pps=e["pps"], search=step["search"], frame_size=frame_bytes(s["packet_size"]),
                   **{k: s.get(k) for k in SEARCH_DIMENSIONS})
        out.append({k: row.get(k) for k in PROBE_COLUMNS})
    return out
