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
from xdplab.steps import arm  # noqa: E402
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


def run(sm, log):
    settings = validate_config(sm.config).values
    point, rep = sm.wildcards.point, int(sm.wildcards.rep)
    slot = pool.acquire(settings["testbeds"], waiting=lambda m: log(m, echo=True))
    try:
        entry = slot.entry
        where = pool.build_dir(entry)
        log(f"testbed {entry['name']} ({pool.testbed_id(entry)}) taken for trial {point}/rep~{rep} "
            f"(lock {slot.path})", echo=True)
        conn_path = f"{where}/pool_connectivity.json"
        seq = PoolSequence(entry, settings, f"results/{settings['experiment']}", None, sm.params.code,
                           conn_path, f"{where}/sources_checked.json", log)
        try:
            seq.check(pool.testbed_params(entry, settings), f"{where}/environment.json",
                      preflight.run_settings(settings), f"{where}/preflight.json")
            seq.build_manifest = collector_build(entry, settings, point, conn_path, log) or ""
            started = time.time()
            summary, info = seq.run(point, rep)
            ended = time.time()
        finally:
            seq.close()
            Path(conn_path).unlink(missing_ok=True)
        trial_path = Path(info["trial"]) / "trial.json"
        record = steps.read_json(str(trial_path))
        if not info["cached"]:
            record["pool"] = {"testbed_name": entry["name"], "testbed_id": pool.testbed_id(entry),
                              "testbed": entry["testbed"], "instance": entry.get("instance"),
                              "acquired_unix_s": slot.acquired_unix_s, "started_unix_s": started,
                              "ended_unix_s": ended, "pid": os.getpid()}
            steps.write_json(str(trial_path), record)
        log(f"trial {point}/rep~{rep} on testbed {entry['name']}: lost {summary.get('lost')}, "
            f"unexplained {summary.get('unexplained')}", echo=True)
    finally:
        slot.release()


steps.run_step(snakemake, run)
