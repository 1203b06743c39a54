"""The search of `snakemake search`: Multiple Loss Ratio Search (MLRsearch, RFC 9971), NDR and
PDR in one search, with FD.io CSIT's controller (PyPI MLRsearch 1.2.1) choosing each trial.

xdplab adds what the controller leaves to its user, in `search()`:

- The measurer (RFC 9971's term) runs an xdplab trial: `run_trial(pps, duration_s, rep)`
  returns the trial's summary row (sent, lost, rate_sustained, ...).  A trial's loss
  ratio is lost / sent, lost being the located loss of the trial's books.
- Loads are whole packets per second and durations whole seconds (an xdplab trial's
  offered rate and duration): the controller's load is rounded to the nearest pps and
  its duration up to the next second; the controller is told the duration that ran.
- The k-th trial a search asks for at one load and duration is repeat k of that trial
  point, so a search run again finds its trials in results/ (each a cached trial).
- A trial whose source could not offer its load (rate_sustained false) is never counted:
  it would read as the DUT's loss.  The search starts again below it, with Max Load
  (RFC 9971) lowered to SOURCE_MARGIN below the rate that source did offer, and the
  trials it already ran are read again, not run again.  The result says the source
  limited it.
- The controller's time limit, or a min load that is an upper bound, end a goal
  without a bound; the result says so (irregular), it never raises.

Results are RFC 9971's: per goal a Relevant Lower Bound, a Relevant Upper Bound and the
Conditional Throughput, regular when both bounds exist within the goal width and
irregular otherwise, with the reason.  Pure, apart from calling run_trial: tests/test_mlr.py
drives it against simulated devices.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from .frames import frame_bytes, mbps
from .ndr import SEARCH_DIMENSIONS

# What bounded a goal's result (limited_by): a trial above it failed the goal (dut), the
# source could not offer the load above it (source), or the range ends it (range:
# ndr_max_pps met the goal, or ndr_min_pps did not), or the search's time limit (time).
DUT, SOURCE, RANGE, TIME = "dut", "source", "range", "time"
# After a trial whose source fell short, Max Load goes this far below what it offered: a
# source's own ceiling varies from trial to trial (a few % here), and a Max Load right at
# what it once offered would fall short again, one restart per trial.
SOURCE_MARGIN = 0.05


@dataclass(frozen=True)
class Goal:
    """One search goal (RFC 9971, section 4.6)."""

    name: str                 # NDR, PDR, or "PDR 2 %" when there are several
    loss_pct: float           # Goal Loss Ratio, in percent
    exceed_pct: float         # Goal Exceed Ratio, in percent
    width_pct: float          # Goal Width, relative, in percent
    initial_trial_s: float    # Goal Initial Trial Duration
    final_trial_s: float      # Goal Final Trial Duration
    duration_sum_s: float     # Goal Duration Sum


@dataclass(frozen=True)
class Params:
    min_pps: int              # Min Load
    max_pps: int              # Max Load
    goals: tuple[Goal, ...] = field(default_factory=tuple)
    time_limit_s: float = 3600.0

    @classmethod
    def from_settings(cls, s: dict) -> "Params":
        given = s["search_loss_pct"]
        losses = [float(x) for x in (given if isinstance(given, (list, tuple)) else [given])]
        pdrs = [x for x in losses if x > 0]

        def name(loss):
            if loss == 0:
                return "NDR"
            return "PDR" if len(pdrs) == 1 else f"PDR {loss:g} %"

        goals = tuple(Goal(name=name(x), loss_pct=x, exceed_pct=float(s["search_exceed_pct"]),
                           width_pct=float(s["search_width_pct"]),
                           initial_trial_s=float(s["search_initial_trial_s"]),
                           final_trial_s=float(s["search_final_trial_s"]),
                           duration_sum_s=float(s["search_duration_sum_s"]))
                      for x in losses)
        return cls(min_pps=int(s["ndr_min_pps"]), max_pps=int(s["ndr_max_pps"]), goals=goals)

    def problems(self) -> list[str]:
        out = []
        if self.min_pps >= self.max_pps:
            out.append(f"ndr_min_pps ({self.min_pps}) must be below ndr_max_pps ({self.max_pps}) "
                       "for snakemake search")
        if not self.goals:
            out.append("search_loss_pct is empty: the search needs at least one goal (0 for NDR)")
        if len({g.loss_pct for g in self.goals}) != len(self.goals):
            out.append("search_loss_pct lists a loss ratio twice")
        for g in self.goals[:1]:
            if g.initial_trial_s > g.final_trial_s:
                out.append(f"search_initial_trial_s ({g.initial_trial_s:g}) is above "
                           f"search_final_trial_s ({g.final_trial_s:g})")
            if g.duration_sum_s < g.final_trial_s:
                out.append(f"search_duration_sum_s ({g.duration_sum_s:g}) is below "
                           f"search_final_trial_s ({g.final_trial_s:g})")
        return out

    def as_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]


class SourceLimited(Exception):
    """A trial's source did not offer its load: no goal may count it."""

    def __init__(self, entry: dict):
        super().__init__(f"the source offered {entry['achieved_pps']} of {entry['pps']} pps")
        self.entry = entry


# -- one trial -------------------------------------------------------------------------

def trial_seconds(duration_s: float) -> int:
    """The whole seconds a trial of the controller's duration runs: rounded up, at least 1."""
    return max(1, math.ceil(round(float(duration_s), 6)))


def _true(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true") or value == 1


def entry(pps: int, duration_s: int, rep: int, summary: dict) -> dict:
    """What a search keeps of one finished trial (a row of search_trials.csv)."""
    sent = int(summary.get("sent") or 0)
    lost = max(int(summary.get("lost") or 0), 0)
    sustained = _true(summary.get("rate_sustained")) and sent > 0
    return {"pps": int(pps), "duration_s": int(duration_s), "rep": int(rep), "sent": sent, "lost": lost,
            "loss_pct": round(lost / sent * 100.0, 6) if sent else None,
            "rate_sustained": sustained,
            "achieved_pps": float(summary.get("achieved_pps") or 0.0),
            "loss_where": summary.get("loss_where") or "",
            "point": summary.get("point")}


class Measurer:
    """RFC 9971's measurer, for the controller: each call runs (or reads) an xdplab trial."""

    def __init__(self, run_trial, note):
        self.run_trial, self.note = run_trial, note
        self.asked = Counter()   # (pps, duration_s) -> trials asked so far in this pass
        self.trials: list[dict] = []
        self.t0 = time.monotonic()

    def new_pass(self):
        self.asked = Counter()

    def measure(self, intended_duration: float, intended_load: float):
        from MLRsearch import MeasurementResult

        pps = max(1, int(round(intended_load)))
        seconds = trial_seconds(intended_duration)
        rep = self.asked[(pps, seconds)]
        self.asked[(pps, seconds)] += 1
        started = time.monotonic()
        summary, info = self.run_trial(pps, seconds, rep)
        e = entry(pps, seconds, rep, summary)
        e.update(info or {}, index=len(self.trials), wall_s=round(time.monotonic() - started, 3),
                 started_s=round(started - self.t0, 3))
        self.trials.append(e)
        self.note(f"trial {e['index'] + 1}: {pps} pps for {seconds} s (repeat {rep}): sent {e['sent']}, "
                  f"lost {e['lost']} ({e['loss_pct']} %)"
                  + ("" if e["rate_sustained"] else ", the source could not offer the load")
                  + (" [cached]" if e.get("cached") else ""))
        if not e["rate_sustained"]:
            raise SourceLimited(e)
        # The controller checks that the load it asked for comes back; the trial ran at
        # its nearest whole pps (less than 0.5 pps away).
        return MeasurementResult(intended_duration=float(seconds), intended_load=intended_load,
                                 offered_count=e["sent"], loss_count=e["lost"])


# -- the search ------------------------------------------------------------------------

def _config(p: Params, max_pps: float):
    from MLRsearch import Config, SearchGoal

    config = Config()
    config.goals = [SearchGoal(loss_ratio=g.loss_pct / 100.0, exceed_ratio=g.exceed_pct / 100.0,
                               relative_width=g.width_pct / 100.0, initial_trial_duration=g.initial_trial_s,
                               final_trial_duration=g.final_trial_s, duration_sum=g.duration_sum_s,
                               fail_fast=False)
                    for g in p.goals]
    config.min_load = float(p.min_pps)
    config.max_load = float(max_pps)
    config.search_duration_max = p.time_limit_s
    # No controller warm-up trial: every xdplab trial has its own (warmup_s).
    config.warmup_duration = None
    return config


def search(p: Params, run_trial, note=lambda line: None, source_ceiling_pps: float | None = None) -> dict:
    """Run the search; returns {"goals": [per goal result], "trials": [entries], "passes": n,
    "source_limit": the highest rate a limited source offered, or None}.

    source_ceiling_pps: what the testbed's source can offer, measured before the search (a
    pool's calibration, xdplab.steps.pooled): Max Load is capped there, so that no trial is
    offered more than the source can send."""
    from MLRsearch import MultipleLossRatioSearch

    measurer = Measurer(run_trial, note)
    max_pps, limit, passes, timed_out = p.max_pps, None, 0, False
    capped = None
    if source_ceiling_pps is not None and source_ceiling_pps < p.max_pps:
        capped = int(math.floor(source_ceiling_pps))
        note(f"Max Load {capped} pps: the testbed's calibrated source ceiling, below ndr_max_pps ({p.max_pps} pps)")
        max_pps = capped
    results = None
    while capped is None or capped > p.min_pps:
        passes += 1
        measurer.new_pass()
        try:
            results = MultipleLossRatioSearch(_config(p, max_pps)).search(measurer=measurer, debug=lambda s: None)
            break
        except SourceLimited as e:
            limit = e.entry if limit is None or e.entry["achieved_pps"] < limit["achieved_pps"] else limit
            below = min(int(math.floor(e.entry["achieved_pps"] * (1 - SOURCE_MARGIN))), e.entry["pps"] - 1,
                        max_pps - 1)
            note(f"the source offered {e.entry['achieved_pps']:.0f} of {e.entry['pps']} pps: searching again "
                 f"up to {below} pps (Max Load, {SOURCE_MARGIN:.0%} below what it offered)")
            if below <= p.min_pps:
                break
            max_pps = below
        except RuntimeError as e:
            if "too long" not in str(e):
                raise
            timed_out = True
            break
    goals = [goal_result(g, results, p, max_pps, limit, timed_out, capped) for g in p.goals]
    return {"goals": goals, "trials": measurer.trials, "passes": passes, "max_pps_searched": max_pps,
            "source_limit": limit, "source_ceiling_pps": source_ceiling_pps}


def goal_result(g: Goal, results, p: Params, max_pps: int, limit: dict | None, timed_out: bool,
                capped: int | None = None) -> dict:
    """RFC 9971's Goal Result for one goal, with xdplab's reasons (`capped`: Max Load as the
    testbed's calibrated source ceiling set it)."""
    lower = upper = conditional = width_pct = None
    if results is not None:
        r = _result_of(results, g)
        if r is not None:
            lower = _load(r.relevant_lower_bound)
            upper = _load(r.relevant_upper_bound)
            conditional = _load(r.conditional_throughput, digits=1)
            if lower is not None and upper is not None:
                # the controller's loads, before xdplab rounded them to whole pps
                lo, hi = float(r.relevant_lower_bound), float(r.relevant_upper_bound)
                width_pct = (hi - lo) / hi * 100.0
    if timed_out:
        why, limited_by = f"the search's time limit ({p.time_limit_s:g} s) ended it", TIME
    elif results is None and capped is not None and capped <= p.min_pps:
        why, limited_by = (f"the testbed's calibrated source ceiling ({capped} pps) is at or below Min Load "
                           f"({p.min_pps} pps)", SOURCE)
    elif lower is None:
        why, limited_by = (f"no load down to Min Load ({p.min_pps} pps) met the goal", RANGE)
        if limit is not None and results is None:
            why, limited_by = (f"the source could not offer even {limit['pps']} pps "
                               f"({limit['achieved_pps']:.0f} pps offered); Min Load is {p.min_pps} pps", SOURCE)
    elif upper is None:
        if limit is not None:
            why, limited_by = (f"the source limited the search: it offered {limit['achieved_pps']:.0f} of "
                               f"{limit['pps']} pps; Max Load {max_pps} pps met the goal", SOURCE)
        elif capped is not None and max_pps == capped:
            why, limited_by = (f"Max Load {max_pps} pps, the testbed's calibrated source ceiling, met the "
                               "goal", SOURCE)
        else:
            why, limited_by = f"Max Load ({max_pps} pps) met the goal", RANGE
    elif width_pct is not None and width_pct > g.width_pct + 1e-9:
        why, limited_by = f"the bounds are {width_pct:.3f} % apart, wider than the goal's {g.width_pct:g} %", DUT
    else:
        why, limited_by = "", DUT
    return {"goal": g.name, "loss_pct": g.loss_pct, "exceed_pct": g.exceed_pct, "width_pct": g.width_pct,
            "initial_trial_s": g.initial_trial_s, "final_trial_s": g.final_trial_s,
            "duration_sum_s": g.duration_sum_s,
            "lower_bound_pps": lower, "upper_bound_pps": upper, "conditional_throughput_pps": conditional,
            "bounds_width_pct": None if width_pct is None else round(width_pct, 4),
            "result": "regular" if not why else "irregular", "irregular_why": why, "limited_by": limited_by,
            "source_offered_pps": None if limit is None else round(limit["achieved_pps"], 1)}


def _result_of(results, g: Goal):
    for goal, r in results.items():
        if abs(goal.loss_ratio - g.loss_pct / 100.0) < 1e-12:
            return r
    return None


def _load(x, digits=0):
    if x is None:
        return None
    v = float(x)
    return int(round(v)) if digits == 0 else round(v, digits)


# -- names and tables ------------------------------------------------------------------

def searches(config: dict, p: Params) -> dict[str, dict]:
    """{search name: the settings its trials share} for every grid point but the rate, named
    as the zero-loss search's (ndr.searches) with the tag mlr."""
    from . import ndr

    return ndr.searches(config, p, tag="mlr")


# search.csv: one row per search and goal.  Units in the names; the method in docs/search.md.
COLUMNS = [
    "frame_size", "packet_size", "goal", "loss_pct", "lower_bound_pps", "upper_bound_pps",
    "conditional_throughput_pps", "result", "limited_by", "irregular_why", "bounds_width_pct",
    "lower_bound_l2_mbps", "lower_bound_wire_mbps", "conditional_l2_mbps", "conditional_wire_mbps",
    "trials", "trial_s", "warmup_s_total", "search_wall_s", "source_offered_pps",
    "exceed_pct", "width_pct", "initial_trial_s", "final_trial_s", "duration_sum_s", "min_pps", "max_pps",
    "xdp_mode", "collector", "pattern", "program", "observe", "testbed_name", "source_ceiling_pps", "search",
]
# search_trials.csv: one row per trial of every search, in the order they ran.
TRIAL_COLUMNS = [
    "frame_size", "packet_size", "index", "pps", "duration_s", "rep", "sent", "lost", "loss_pct",
    "rate_sustained", "achieved_pps", "loss_where", "cached", "wall_s", "started_s", "search", "trial",
]


def table_rows(record: dict) -> list[dict]:
    """search.csv's rows of one search (its search.json)."""
    s, r = record["settings"], record["result"]
    size = s["packet_size"]
    trials_run = r["trials"]
    out = []
    for g in r["goals"]:
        row = dict(g, packet_size=size, frame_size=frame_bytes(size), search=record["search"],
                   min_pps=record["params"]["min_pps"], max_pps=record["params"]["max_pps"],
                   trials=len(trials_run), trial_s=sum(t["duration_s"] for t in trials_run),
                   warmup_s_total=sum(t.get("warmup_s") or 0 for t in trials_run),
                   search_wall_s=record.get("wall_s"), testbed_name=record.get("testbed_name"),
                   source_ceiling_pps=r.get("source_ceiling_pps"),
                   lower_bound_l2_mbps=_mbps(g["lower_bound_pps"], size, 2),
                   lower_bound_wire_mbps=_mbps(g["lower_bound_pps"], size, 1),
                   conditional_l2_mbps=_mbps(g["conditional_throughput_pps"], size, 2),
                   conditional_wire_mbps=_mbps(g["conditional_throughput_pps"], size, 1),
                   **{k: s.get(k) for k in SEARCH_DIMENSIONS if k != "packet_size"})
        out.append({k: row.get(k) for k in COLUMNS})
    return out


def _mbps(pps, size, layer):
    return None if pps is None else round(mbps(pps, size, layer), 3)


def trial_rows(record: dict) -> list[dict]:
    s = record["settings"]
    out = []
    for t in record["result"]["trials"]:
        row = dict(t, packet_size=s["packet_size"], frame_size=frame_bytes(s["packet_size"]),
                   search=record["search"])
        out.append({k: row.get(k) for k in TRIAL_COLUMNS})
    return out
