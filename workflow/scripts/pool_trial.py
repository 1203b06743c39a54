"""Rule pool_trial (workflow/rules/pool.smk): one trial of a sweep spread over a pool of
testbeds, as one job.  It takes a free testbed of the pool (xdplab.pool: a lock file held
by this process), checks it, builds the collector on its DUT if that testbed has no build
yet, and runs the trial with the trial rules' own steps in this process
(xdplab.steps.inprocess), written where the rules write it; trial.json says which testbed
ran it and when.  The testbed is free again when this process ends, however it ends."""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import pool, preflight, steps, trials  # noqa: E402
from xdplab.config import validate_config  # noqa: E402
from xdplab.steps import arm, connectivity  # noqa: E402
from xdplab.steps.inprocess import Sequence  # noqa: E402

COLLECTOR_SOURCES = ("bpf/collector.bpf.c", "bpf/xdplab.h")


class PoolSequence(Sequence):
    """A Sequence whose trials record the testbed of the pool that ran them."""

    def __init__(self, entry, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entry = entry

    def trial_of(self, point, rep):
        trial, s, d = super().trial_of(point, rep)
        return trial, dict(s, testbed=self.entry["testbed"], testbed_name=self.entry["name"]), d


def collector_build(entry, settings, point, conn_path, log):
    """The collector's build record on this testbed's DUT (results/build/pool-<name>/
    <collector>_port~N.json): made now if this testbed has none, or one older than the
    collector's source (as Snakemake would); None for a trial without the collector."""
    collector = trials.parse_point(point)["collector"]
    if collector == "off":
        return None
    manifest = Path(pool.build_dir(entry), f"{collector}_port~{settings['port']}.json")
    newest = max(Path(p).stat().st_mtime for p in COLLECTOR_SOURCES)
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        arm.build_collector(*COLLECTOR_SOURCES, conn_path, settings["port"], str(manifest), log, collector)
    return str(manifest)


CALIBRATION_PPS = 10_000_000   # far above what a generator offers: it sends back to back
CALIBRATION_S = 2


def calibrate(entry, settings, packet_size, conn_params, log):
    """The testbed's source ceiling at this payload size, measured once (kept in
    results/build/pool-<name>/calibration.json): a trial of CALIBRATION_S at
    CALIBRATION_PPS, no collector, on this testbed's own path (send_path as configured),
    run by the same steps under results/build/pool-<name>/calibration/.  The ceiling is the
    lower of the generator's achieved rate and the rate the DUT interface received
    (nic_rx over the trial): what the source can put on the DUT's wire."""
    where = Path(pool.build_dir(entry))
    path = where / "calibration.json"
    record = steps.read_json(str(path)) if path.exists() else {"testbed_name": entry["name"], "by_size": {}}
    known = record["by_size"].get(str(packet_size))
    if known is not None:
        return known
    cal = dict(settings, target_pps=[CALIBRATION_PPS], packet_size=[packet_size], frame_size=None,
               duration_s=CALIBRATION_S, warmup_s=0, collector=["off"], keep_pcap=False, keep_features=False,
               repeats=1, program=["collector"], xdp_mode=settings["xdp_mode"][:1], pattern=["constant"],
               experiment=settings["experiment"], testbed_as_dimension=False)
    (trial,) = trials.trials(cal)
    seq = PoolSequence(entry, cal, str(where / "calibration"), None, "calibration", conn_params["conn"],
                       conn_params["sources"], log)
    seq.desc, seq.record = conn_params["desc"], conn_params["record"]
    log(f"calibrating testbed {entry['name']}: {CALIBRATION_S} s at {CALIBRATION_PPS} pps, "
        f"{packet_size} B payload, collector off", echo=True)
    try:
        summary, _ = seq.run(trial["point"], 0)
    finally:
        seq.close()
    nic_pps = (summary.get("nic_rx") or 0) / CALIBRATION_S
    achieved = summary.get("achieved_pps") or 0
    known = {"ceiling_pps": round(min(achieved, nic_pps), 1), "achieved_pps": achieved,
             "nic_rx_pps": round(nic_pps, 1), "sent": summary.get("sent"), "nic_rx": summary.get("nic_rx"),
             "offered_pps": CALIBRATION_PPS, "duration_s": CALIBRATION_S, "send_path": summary.get("send_path_used"),
             "measured_unix_s": time.time(), "trial": str(where / "calibration" / "trials" / trial["point"])}
    record["by_size"][str(packet_size)] = known
    steps.write_json(str(path), record)
    log(f"testbed {entry['name']}: source ceiling {known['ceiling_pps']} pps at {packet_size} B payload "
        f"(generator {achieved} pps, DUT interface received {known['nic_rx_pps']} pps)", echo=True)
    return known


def mark_source_limited(summary, target_pps, ceiling):
    """A trial offered above its testbed's ceiling: source-limited, never the DUT's loss."""
    if ceiling is None or target_pps <= ceiling["ceiling_pps"]:
        return
    summary["source_limited"] = True
    summary["status"] = "source_limited"
    why = (f"source-limited: offered {target_pps} pps above this testbed's source ceiling "
           f"{ceiling['ceiling_pps']:g} pps (calibration.json)")
    summary["loss_where"] = why + (f"; {summary['loss_where']}" if summary.get("loss_where") else "")


def full_check_due(sources_record):
    """Whether this testbed's connectivity check will be in full (as
    connectivity._sources_checked decides): no check of its sources in this invocation."""
    try:
        checked = steps.read_json(sources_record).get("checked_unix_s") or 0
    except (OSError, ValueError, steps.StepError):
        return True
    return checked < connectivity._invocation_started()


def run(sm, log):
    settings = validate_config(sm.config).values
    point, rep = sm.wildcards.point, int(sm.wildcards.rep)
    # With testbed_as_dimension the point names its testbed: that one, when it is free.
    named = trials.parse_point(point).get("testbed_name")
    entries = [e for e in settings["testbeds"] if named in (None, e["name"])]
    slot = pool.acquire(entries, waiting=lambda m: log(m, echo=True))
    machine = None
    try:
        entry = slot.entry
        where = pool.build_dir(entry)
        log(f"testbed {entry['name']} ({pool.testbed_id(entry)}) taken for trial {point}/rep~{rep} "
            f"(lock {slot.path})", echo=True)
        conn_path = f"{where}/pool_connectivity.json"
        if pool.shares_machine(entry, settings["testbeds"]):
            machine = pool.SharedMachine()
            if full_check_due(f"{where}/sources_checked.json"):
                log("a full check stops leftover generators on this machine: waiting for the other embedded "
                    "instances' trials in flight", echo=True)
                machine.exclusive()
            else:
                machine.shared()
        seq = PoolSequence(entry, settings, f"results/{settings['experiment']}", None, sm.params.code,
                           conn_path, f"{where}/sources_checked.json", log)
        try:
            seq.check(pool.testbed_params(entry, settings), f"{where}/environment.json",
                      preflight.run_settings(settings), f"{where}/preflight.json")
            if machine is not None:
                machine.shared()   # the check is done: the other instances' trials may run
            seq.build_manifest = collector_build(entry, settings, point, conn_path, log) or ""
            size = trials.settings_of_point(point, settings)["packet_size"]
            ceiling = calibrate(entry, settings, size, {"conn": conn_path, "sources": f"{where}/sources_checked.json",
                                                        "desc": seq.desc, "record": seq.record}, log)
            started = time.time()
            summary, info = seq.run(point, rep)
            ended = time.time()
        finally:
            seq.close()
            Path(conn_path).unlink(missing_ok=True)
        trial_path = Path(info["trial"]) / "trial.json"
        record = steps.read_json(str(trial_path))
        if not info["cached"]:
            mark_source_limited(record["summary"], record["trial"]["target_pps"], ceiling)
            summary = record["summary"]
            record["pool"] = {"ceiling": ceiling, "testbed_name": entry["name"], "testbed_id": pool.testbed_id(entry),
                              "testbed": entry["testbed"], "instance": entry.get("instance"),
                              "acquired_unix_s": slot.acquired_unix_s, "started_unix_s": started,
                              "ended_unix_s": ended, "pid": os.getpid()}
            steps.write_json(str(trial_path), record)
        log(f"trial {point}/rep~{rep} on testbed {entry['name']}: lost {summary.get('lost')}, "
            f"unexplained {summary.get('unexplained')}", echo=True)
    finally:
        slot.release()
        if machine is not None:
            machine.release()


steps.run_step(snakemake, run)
