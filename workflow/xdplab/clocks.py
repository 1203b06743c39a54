"""Clocks for the pre-flight check (xdplab.preflight, docs/preflight.md): whether one-way
latency can be reported, and with what error.  One clock when the source and the DUT run
one kernel (their boot ids match); synchronised clocks with an offset bound (chrony's
`chronyc tracking`, linuxptp's `pmc` TIME_STATUS_NP) when the timestamps are wall-clock;
otherwise n/a, with why.  Pure: the hosts' facts in, the decision out."""

from __future__ import annotations

import re

# The clock the latency's timestamps are read from today (sourcehost/sender.py and the
# collector: CLOCK_MONOTONIC and bpf_ktime_get_ns), which no synchronisation aligns.
STAMP_CLOCK = "monotonic"


def parse_chronyc_tracking(text: str) -> dict:
    """`chronyc tracking` -> {"synchronised", "offset_s", "root_delay_s",
    "root_dispersion_s", "stratum", "leap_status", "bound_s"}: the bound on the system
    clock's error is chrony's own, |offset| + root delay / 2 + root dispersion."""
    fields = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()

    def seconds(key):
        m = re.match(r"([-+]?[0-9.]+(?:e[-+]?\d+)?) seconds?( slow| fast)?", fields.get(key, ""))
        if not m:
            return None
        v = float(m.group(1))
        return -v if m.group(2) == " slow" else v

    offset = seconds("system time")
    delay, disp = seconds("root delay"), seconds("root dispersion")
    leap = fields.get("leap status")
    ref = fields.get("reference id", "")
    stratum = int(fields["stratum"]) if fields.get("stratum", "").isdigit() else None
    synced = bool(leap) and leap.lower() != "not synchronised" and not ref.startswith("00000000") \
        and None not in (offset, delay, disp)
    return {"synchronised": synced, "offset_s": offset, "root_delay_s": delay, "root_dispersion_s": disp,
            "stratum": stratum, "leap_status": leap,
            "bound_s": abs(offset) + delay / 2 + disp if synced else None}


def parse_pmc_time_status(text: str) -> dict:
    """`pmc -u -b 0 'GET TIME_STATUS_NP'` -> {"synchronised", "master_offset_ns",
    "gm_present", "bound_s"}: synchronised when a grandmaster is present; the bound is
    |master_offset| (the PTP hardware clock's offset; phc2sys's step to the system clock is
    not read)."""
    m = re.search(r"master_offset\s+(-?\d+)", text or "")
    gm = re.search(r"gmPresent\s+(\w+)", text or "")
    offset = int(m.group(1)) if m else None
    present = bool(gm) and gm.group(1).lower() == "true"
    synced = present and offset is not None
    return {"synchronised": synced, "master_offset_ns": offset, "gm_present": present,
            "bound_s": abs(offset) / 1e9 if synced else None}


def clock_sync(clock: dict | None) -> dict:
    """One host's synchronisation from the raw tool outputs ({"chronyc_tracking": {"exit",
    "text"} | None, "pmc_time_status": ...}): {"synchronised", "by", "bound_s", "why"};
    PTP first when both say so."""
    clock = clock or {}
    whys = []
    for key, by, parse in (("pmc_time_status", "ptp", parse_pmc_time_status),
                           ("chronyc_tracking", "chrony", parse_chronyc_tracking)):
        raw = clock.get(key)
        if raw is None:
            whys.append(f"no {by}" if by == "ptp" else "no chronyc")
            continue
        if raw.get("exit") != 0:
            whys.append(f"{by}: {(raw.get('text') or '').strip()[:120] or 'exit %s' % raw.get('exit')}")
            continue
        parsed = parse(raw.get("text") or "")
        if parsed["synchronised"]:
            return dict(parsed, by=by, why=f"{by}: synchronised within {parsed['bound_s'] * 1e6:.1f} us")
        whys.append(f"{by}: not synchronised")
    return {"synchronised": False, "by": None, "bound_s": None, "why": "; ".join(whys)}


def clock_decision(dut: dict, sources: list, stamp_clock: str = STAMP_CLOCK) -> dict:
    """Whether one-way latency (send time on a source, arrival time at XDP on the DUT) can
    be reported, and with what error.  `dut`: {"where", "boot_id", "clock"}; each source
    {"where", "facts": {"boot_id", "clock"}}; `stamp_clock`: the clock the timestamps are
    read from ("monotonic" today; "realtime" or "tai" if they were wall clocks).

    - one clock: every source and the DUT run on one kernel (their boot ids match, as on
      the embedded testbed or a lab of namespaces): the latency is reported, no offset.
    - synchronised: the kernels differ but each host's clock is synchronised (chrony or PTP,
      read on each host) and the timestamps are wall clocks: the latency is reported with
      an error of at most the DUT's bound plus the source's (offset_bound_ns, the worst).
    - n/a: otherwise, with why; no number mixing two clocks."""
    dut_boot = dut.get("boot_id")
    src_boots = [(s.get("facts") or {}).get("boot_id") for s in sources]
    if dut_boot and sources and all(b == dut_boot for b in src_boots):
        return {"latency": "one clock", "reported": True, "offset_bound_ns": 0, "boot_id": dut_boot,
                "why": f"the sources and the DUT run on one kernel (boot id {dut_boot}): both "
                       f"timestamps read its CLOCK_MONOTONIC"}
    other = [s.get("where") or "source" for s, b in zip(sources, src_boots) if b != dut_boot]
    if not dut_boot or not sources or any(b is None for b in src_boots):
        unknown = ([dut.get("where") or "DUT"] if not dut_boot else []) + \
            [s.get("where") or "source" for s, b in zip(sources, src_boots) if b is None]
        return {"latency": "n/a", "reported": False, "offset_bound_ns": None,
                "why": "no boot id from " + ", ".join(unknown) if unknown else "no sources"}
    hosts = [(dut.get("where") or "DUT", dut.get("clock"))] + \
        [(s.get("where") or "source", (s.get("facts") or {}).get("clock")) for s in sources]
    sync = {w: clock_sync(c) for w, c in hosts}
    unsynced = [f"{w} ({s['why'] or 'no clock status'})" for w, s in sync.items() if not s["synchronised"]]
    record = {"sync": sync, "boot_ids": {dut.get("where") or "DUT": dut_boot,
                                         **{s.get("where") or "source": b for s, b in zip(sources, src_boots)}}}
    if unsynced:
        return dict(record, latency="n/a", reported=False, offset_bound_ns=None,
                    why=f"{', '.join(other)} run(s) on another kernel than the DUT, and not every clock "
                        f"is synchronised: {'; '.join(unsynced)}")
    dut_bound = sync[hosts[0][0]]["bound_s"]
    bound_ns = round((dut_bound + max(sync[w]["bound_s"] for w, _ in hosts[1:])) * 1e9)
    if stamp_clock == "monotonic":
        return dict(record, latency="n/a", reported=False, offset_bound_ns=bound_ns,
                    why=f"the clocks are synchronised (to within {bound_ns / 1000:.1f} us between the DUT "
                        f"and a source), but the timestamps are CLOCK_MONOTONIC, which counts from each "
                        f"host's boot and is not aligned by synchronisation (docs/method.md)")
    by = ", ".join(f"{w}: {s['by']}" for w, s in sync.items())
    return dict(record, latency="synchronised", reported=True, offset_bound_ns=bound_ns,
                why=f"the clocks are synchronised ({by}): "
                    f"each latency's error is at most +/- {bound_ns / 1000:.1f} us (the DUT's bound plus "
                    f"the worst source's)")
