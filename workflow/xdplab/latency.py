"""Latency at fractions of the found rate (issue 20, docs/latency.md): which loads to run
after a search, the percentiles of a trial's saved latency histogram, one row per load,
and the table of them.  Pure functions (no I/O).

Every packet of an xdplab trial is a latency sample: its one-way latency, the send time
in its payload (CLOCK_MONOTONIC read on the source before the send call) to its arrival
at XDP on the DUT (bpf_ktime_get_ns), goes into the agent's log-linear histogram, which
trial.json keeps whole per DUT interface (agent.interfaces.<iface>.features.latency_ns;
the format: xdplab/agent/hist.py).  So any percentile can be read later, from one
interface's histogram or from several added together, with the agent's own method:
nearest rank, reported as its bucket's highest value (never below the true value, at
most 1/1024 above it; exact below 2,048 ns).

A number is reported only when both timestamps come from one clock (the generators' and
the agent's boot ids match, as trialrows decides per trial) or from clocks the
pre-flight found synchronised (xdplab.clocks.clock_decision); otherwise the latency
columns are empty (n/a in the table) and `latency_method` says why.
"""

from __future__ import annotations

import math
from fractions import Fraction

from .frames import frame_bytes

# The percentiles of a row, and their column names (p99.9 -> p999).
PERCENTILES = (50, 90, 99, 99.9)

# The idle load: at most IDLE_PPS, and at most IDLE_FRACTION of the PDR.  CSIT's no-load
# latency is its latency streams alone (9 kpps per direction) beside PDRs of millions of
# packets/s; xdplab has no separate latency stream (every packet is one), so its idle
# trial is the whole load kept low: at most 1 % of the PDR, an order of magnitude below
# the 10 % load, and at most 1,000 pps, which still gives 10,000 samples in a 10 s trial
# (ten above its p99.9).
IDLE_PPS = 1000
IDLE_FRACTION = 0.01

# The loads, in the order they are reported: (name, fraction of the PDR or None, what it
# is relative to).  "idle" is IDLE_PPS capped at IDLE_FRACTION of the PDR; "ndr" is the
# NDR itself (its fraction of the PDR is computed).
LOADS = (
    ("idle", IDLE_FRACTION, "pdr"),
    ("10% pdr", 0.10, "pdr"),
    ("50% pdr", 0.50, "pdr"),
    ("90% pdr", 0.90, "pdr"),
    ("ndr", None, "ndr"),
)
LOAD_NAMES = tuple(name for name, _, _ in LOADS)

CLOCK_ONE = "one kernel"
CLOCK_SYNCHRONISED = "synchronised"
CLOCK_NA = "n/a"

COLUMNS = [
    "search", "frame_size", "packet_size", "load", "fraction_of_pdr_pct", "target_pps", "achieved_pps",
    "rate_sustained", "pdr_pps", "ndr_pps", "packets", "lost", "min_us", "p50_us", "p90_us", "p99_us",
    "p999_us", "max_us", "pdv_us", "clock", "latency_method", "note", "trial",
]

# The markdown table's headers, units given.
HEADERS = {
    "search": "search", "frame_size": "frame B", "packet_size": "payload B", "load": "load",
    "fraction_of_pdr_pct": "% of PDR", "target_pps": "offered pps", "achieved_pps": "achieved pps",
    "rate_sustained": "sustained", "pdr_pps": "PDR pps", "ndr_pps": "NDR pps", "packets": "samples",
    "lost": "lost", "min_us": "min µs", "p50_us": "p50 µs", "p90_us": "p90 µs", "p99_us": "p99 µs",
    "p999_us": "p99.9 µs", "max_us": "max µs", "pdv_us": "PDV µs", "clock": "clock",
    "latency_method": "method", "note": "note", "trial": "trial",
}
# Said once under the table rather than in every row.
BELOW_TABLE = ("latency_method", "trial")

METHOD = ("send timestamp in the payload (CLOCK_MONOTONIC before the send call on the source) to "
          "bpf_ktime_get_ns() in XDP on the DUT; percentiles by nearest rank from the merged "
          "log-linear histograms of the DUT interfaces (exact below 2,048 ns, then at most 1/1024 "
          "above the true value)")


# -- the histogram -----------------------------------------------------------------------

def _histogram(h: dict) -> dict:
    """The histogram of a latency block ({"count", ..., "histogram": {...}}) or a histogram."""
    return h.get("histogram") if "histogram" in h else h


def merge(blocks: list) -> dict | None:
    """Several DUT interfaces' latency blocks (agent.interfaces.<iface>.features.latency_ns)
    added together, as one block of the same form: count, min, max, mean, out_of_range and
    the histogram; None when no block has a sample.  Buckets are added by their bounds, so
    histograms of one scheme merge exactly; two schemes refuse (ValueError).  Bare
    histograms ({"buckets": ...}) are taken too; min and max are then the lowest bucket's
    lowest and the highest bucket's highest value."""
    blocks = [b for b in blocks if b]
    scheme, counts = None, {}
    count = out_of_range = 0
    lo = hi = None
    weighted = 0.0
    for b in blocks:
        h = _histogram(b) or {}
        this = (h.get("scheme"), h.get("exact_below"), h.get("buckets_per_octave"))
        if h.get("buckets"):
            if scheme is not None and this != scheme:
                raise ValueError(f"latency histograms of two schemes cannot be merged: {scheme} and {this}")
            scheme = this
        n = 0
        for low, high, c in h.get("buckets") or []:
            counts[(low, high)] = counts.get((low, high), 0) + c
            n += c
        if not n:
            out_of_range += b.get("out_of_range") or 0
            continue
        bucket_lo = min(low for low, _, c in h["buckets"] if c)
        bucket_hi = max(high for _, high, c in h["buckets"] if c)
        b_min = b.get("min") if b.get("min") is not None else bucket_lo
        b_max = b.get("max") if b.get("max") is not None else bucket_hi
        lo = b_min if lo is None else min(lo, b_min)
        hi = b_max if hi is None else max(hi, b_max)
        weighted += (b["mean"] if b.get("mean") is not None else (bucket_lo + bucket_hi) / 2) * n
        count += n
        out_of_range += b.get("out_of_range") or 0
    if not count:
        return None
    return {"count": count, "min": lo, "max": hi, "mean": round(weighted / count, 1),
            "out_of_range": out_of_range,
            "histogram": {"scheme": scheme[0], "exact_below": scheme[1], "buckets_per_octave": scheme[2],
                          "buckets": [[low, high, c] for (low, high), c in sorted(counts.items())]}}


def percentile(hist, q: float):
    """The q-th percentile (0 < q <= 100) of a saved latency histogram, in its unit (ns):
    the agent's method (nearest rank: the smallest recorded value with at least q % of the
    samples at or below it, reported as its bucket's highest value and never above the
    exact maximum).  `hist`: one latency block, one histogram, or a list of them (merged
    first); None without samples.  q = 100 is the exact maximum; the exact minimum is the
    block's `min`."""
    if not 0 < q <= 100:
        raise ValueError(f"a percentile is between 0 (excluded) and 100, not {q}")
    block = merge(hist) if isinstance(hist, list) else hist
    if not block:
        return None
    h = _histogram(block) or {}
    buckets = h.get("buckets") or []
    total = sum(c for _, _, c in buckets)
    if not total:
        return None
    top = block.get("max") if "histogram" in block else None
    rank = max(1, math.ceil(Fraction(str(q)) * total / 100))   # exact: 99.9 % of 1,000 is 999
    seen = 0
    for _, high, c in sorted(buckets):
        seen += c
        if seen >= rank:
            return high if top is None else min(high, top)
    return top if top is not None else buckets[-1][1]


def _name(q: float) -> str:
    return "p" + ("%g" % q).replace(".", "")


# -- the loads ---------------------------------------------------------------------------

def _rate(pps: float) -> int:
    return max(1, round(pps))


def _given(pps) -> str:
    return "" if pps is None else f" ({pps} pps)"


def plan(pdr_pps, ndr_pps, idle_pps: float = IDLE_PPS) -> list[dict]:
    """The latency trials after one search, in LOADS order: [{"load", "fraction_of_pdr",
    "target_pps", "pdr_pps", "ndr_pps", "why"}].  `pdr_pps`, `ndr_pps`: the rates the search
    found (packets/s; the search's lower bound of each goal), None where it found none.
    Rates are rounded to whole packets/s, at least 1.  A load that cannot be run (no PDR:
    idle and the fractions of it; no NDR: the NDR load) keeps its entry with target_pps None
    and `why`; `why` is None for the others.  fraction_of_pdr is the offered rate over the
    PDR (the idle rate's and the NDR's as they are), None without a PDR."""
    pdr = pdr_pps if pdr_pps and pdr_pps > 0 else None
    ndr = ndr_pps if ndr_pps and ndr_pps > 0 else None
    out = []
    for name, fraction, of in LOADS:
        entry = {"load": name, "fraction_of_pdr": None, "target_pps": None, "pdr_pps": pdr_pps,
                 "ndr_pps": ndr_pps, "why": None}
        if of == "pdr":
            if pdr is None:
                entry["why"] = "not run: the search found no PDR" + _given(pdr_pps)
            else:
                pps = _rate(min(idle_pps, fraction * pdr) if name == "idle" else fraction * pdr)
                entry.update(target_pps=pps, fraction_of_pdr=pps / pdr)
        else:
            if ndr is None:
                entry["why"] = "not run: the search found no NDR" + _given(ndr_pps)
            else:
                pps = _rate(ndr)
                entry.update(target_pps=pps, fraction_of_pdr=pps / pdr if pdr else None)
        out.append(entry)
    return out


# -- one row per load --------------------------------------------------------------------

def _us(ns, digits: int = 3):
    # The histogram's values are whole ns: 3 decimals in us keeps them exactly.
    return None if ns is None else round(ns / 1000.0, digits)


def latency_blocks(trial: dict) -> dict:
    """{dut iface: its latency block} of a trial.json (empty without feature records)."""
    ifaces = ((trial.get("agent") or {}).get("interfaces")) or {}
    return {name: (b.get("features") or {}).get("latency_ns") for name, b in sorted(ifaces.items())
            if (b.get("features") or {}).get("latency_ns")}


def clock_of(trial: dict, decision: dict | None = None) -> tuple[str, str | None]:
    """(clock, why not) of one trial: "one kernel" when every generator and the agent
    report one boot id (trialrows' test, per trial); "synchronised" when they differ but
    the pre-flight's clock decision (`decision`: preflight.json's "clock") found the
    clocks synchronised with wall-clock timestamps; "n/a" otherwise, with why."""
    gens = trial.get("generators") or []
    dut_boot = (trial.get("agent") or {}).get("boot_id")
    if any(g.get("backend") == "trafgen" for g in gens):
        return CLOCK_NA, "trafgen writes no send time into its packets"
    if gens and dut_boot and all(g.get("boot_id") == dut_boot for g in gens):
        return CLOCK_ONE, None
    if decision and decision.get("latency") == "synchronised" and decision.get("reported"):
        return CLOCK_SYNCHRONISED, None
    if not gens or not dut_boot or any(not g.get("boot_id") for g in gens):
        return CLOCK_NA, "a boot id is missing (the generators' or the agent's), so one clock cannot be shown"
    why = "the source and the DUT do not share a clock (their boot ids differ)"
    if decision and decision.get("why"):
        why += f"; pre-flight: {decision['why']}"
    return CLOCK_NA, why


def row(trial: dict, load: str, fraction_of_pdr, *, target_pps=None, pdr_pps=None, ndr_pps=None,
        trial_dir: str | None = None, search: str | None = None, clock: dict | None = None) -> dict:
    """One row of latency.csv (COLUMNS) from a trial.json (`trial`, parsed) run at one load.
    `fraction_of_pdr` is a fraction (0.1), the column a percentage; `target_pps` defaults
    to the trial's own; `clock`: the pre-flight's clock decision, if any (clock_of).  The
    latency columns are None, and latency_method says why, when the clocks are not one or
    synchronised or there are no samples; note says what else a reader must know."""
    t = trial.get("trial") or {}
    summary = trial.get("summary") or {}
    size = t.get("packet_size", summary.get("packet_size"))
    notes = []
    out = {
        "search": search, "frame_size": summary.get("frame_size") or (frame_bytes(size) if size else None),
        "packet_size": size, "load": load,
        "fraction_of_pdr_pct": None if fraction_of_pdr is None else round(fraction_of_pdr * 100, 3),
        "target_pps": t.get("target_pps", target_pps), "achieved_pps": summary.get("achieved_pps"),
        "rate_sustained": summary.get("rate_sustained"), "pdr_pps": pdr_pps, "ndr_pps": ndr_pps,
        "packets": None, "lost": summary.get("lost"),
        **{c: None for c in ("min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "pdv_us")},
        "clock": None, "latency_method": None, "note": "", "trial": trial_dir,
    }
    if target_pps is not None and out["target_pps"] is not None and target_pps != out["target_pps"]:
        notes.append(f"planned {target_pps} pps, the trial ran {out['target_pps']} pps")
    if summary.get("rate_sustained") is False:
        notes.append("the source could not offer the load: the latency is at the rate it achieved")
    kind, why = clock_of(trial, clock)
    out["clock"] = kind
    blocks = list(latency_blocks(trial).values())
    block = merge(blocks)
    if why is not None:
        out["latency_method"] = f"n/a: {why}"
    elif block is None:
        collector = t.get("collector") or summary.get("collector")
        outside = sum(b.get("out_of_range") or 0 for b in blocks)
        out["latency_method"] = (f"n/a: all {outside} sample(s) out of the histogram's range (negative or too large)"
                                 if outside else "n/a: no feature records received"
                                 if collector in (None, "features") else f"n/a: collector {collector} exports no records")
    else:
        method = METHOD + ("; one kernel, one clock" if kind == CLOCK_ONE else "")
        if kind == CLOCK_SYNCHRONISED:
            bound = clock.get("offset_bound_ns")
            method += (f"; synchronised clocks: each value may be off by up to +/- {bound / 1000:.1f} us"
                       if bound is not None else "; synchronised clocks, their offset bound unknown")
        out["latency_method"] = method
        pcts = {_name(q): percentile(block, q) for q in PERCENTILES}
        out.update(packets=block["count"], min_us=_us(block["min"]), max_us=_us(block["max"]),
                   **{f"{k}_us": _us(v) for k, v in pcts.items()},
                   pdv_us=_us(pcts["p999"] - block["min"]))
        if block.get("out_of_range"):
            notes.append(f"{block['out_of_range']} sample(s) out of the histogram's range (negative or too "
                         f"large) are not in the percentiles")
    out["note"] = "; ".join(notes)
    return out


def skipped_row(load: str, why: str, *, pdr_pps=None, ndr_pps=None, search: str | None = None,
                packet_size=None) -> dict:
    """A load plan() could not run (no PDR or no NDR): its row, every number empty."""
    out = {c: None for c in COLUMNS}
    out.update(search=search, load=load, pdr_pps=pdr_pps, ndr_pps=ndr_pps, packet_size=packet_size,
               frame_size=frame_bytes(packet_size) if packet_size else None, clock=CLOCK_NA,
               latency_method=f"n/a: {why}", note="", trial=None)
    return out


def sort_key(r: dict):
    """Rows by frame size, search, then load in LOADS order."""
    load = LOAD_NAMES.index(r["load"]) if r.get("load") in LOAD_NAMES else len(LOAD_NAMES)
    return (r.get("frame_size") or 0, str(r.get("search") or ""), load, r.get("target_pps") or 0)


# -- the table ---------------------------------------------------------------------------

def _cell(v, col: str = "") -> str:
    if v is None or v == "":
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if col in ("frame_size", "packet_size"):
        return str(v)
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "\\|")


def table(rows: list[dict], title: str | None = None) -> str:
    """latency.csv's rows as markdown: one line per load, units in the headers, n/a where a
    number cannot be given; the methods and the trials below, each once."""
    cols = [c for c in COLUMNS if c not in BELOW_TABLE]
    if not any(r.get("search") for r in rows) or len({r.get("search") for r in rows}) == 1:
        cols.remove("search")
    if not any(r.get("note") or str(r.get("latency_method") or "").startswith("n/a") for r in rows):
        cols.remove("note")
    lines = ([f"# {title}", ""] if title else []) + [
        "| " + " | ".join(HEADERS[c] for c in cols) + " |",
        "|" + "|".join("---" if c in ("search", "load", "clock", "note") else "---:" for c in cols) + "|"]
    for r in rows:
        # A row without a latency says why in its note (its method, below the table, too).
        method = r.get("latency_method") or ""
        why = method[len("n/a: "):] if method.startswith("n/a: ") else ""
        cells = dict(r, note="; ".join(x for x in (why, r.get("note")) if x) or "-")
        lines.append("| " + " | ".join(_cell(cells.get(c), c) for c in cols) + " |")
    methods = list(dict.fromkeys(r["latency_method"] for r in rows if r.get("latency_method")))
    lines += ["", f"Latency: one-way, from the source's send to XDP on the DUT, in µs; PDV (packet delay "
                  f"variation) is p99.9 minus min.  Loads: idle is min({IDLE_PPS:,} pps, {IDLE_FRACTION * 100:g} % "
                  f"of the PDR); the others are fractions of the PDR, and the NDR itself."]
    if methods:
        lines += ["", "Method:"] + [f"- {m}" for m in methods]
    trials = [(r.get("load"), r.get("frame_size"), r["trial"]) for r in rows if r.get("trial")]
    if trials:
        lines += ["", "Trials:"] + [f"- {frame} B, {load}: `{d}`" for load, frame, d in trials]
    return "\n".join(lines) + "\n"


# -- a search's latency plan (results/<exp>/search/<search>/latency.json) --------------

def plan_rows(plan: dict, trials: dict, clock: dict | None = None) -> list[dict]:
    """The rows of one latency plan ({"search", "settings": {"packet_size", ...}, "trials":
    [{"trial", "load", "fraction_of_pdr", "target_pps", "pdr_pps", "ndr_pps"}, ...]}), sorted
    (sort_key).  `trials`: {an entry's "trial": its parsed trial.json, or None when there is
    none}.  An entry without a trial (a load plan() could not run; its "why") or whose
    trial.json is missing is a row of its own, every number empty, saying so."""
    search = plan.get("search")
    size = (plan.get("settings") or {}).get("packet_size")
    rows = []
    for e in plan.get("trials") or []:
        common = {"pdr_pps": e.get("pdr_pps"), "ndr_pps": e.get("ndr_pps"), "search": search}
        if not e.get("trial"):
            rows.append(skipped_row(e.get("load"), e.get("why") or "not run", packet_size=size, **common))
            continue
        doc = trials.get(e["trial"])
        if doc is None:
            r = skipped_row(e.get("load"), "no trial.json: the trial did not finish", packet_size=size, **common)
            r.update(target_pps=e.get("target_pps"), trial=e["trial"],
                     fraction_of_pdr_pct=None if e.get("fraction_of_pdr") is None
                     else round(e["fraction_of_pdr"] * 100, 3))
            rows.append(r)
            continue
        rows.append(row(doc, e.get("load"), e.get("fraction_of_pdr"), target_pps=e.get("target_pps"),
                        trial_dir=e["trial"], clock=clock, **common))
    return sorted(rows, key=sort_key)
