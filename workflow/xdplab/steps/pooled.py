"""A testbed of a pool (configuration key `testbeds`) taken by one job for its whole life:
a sweep's trial (rule pool_trial), a search (search_run) or its latency trials
(latency_run).  The job takes a free testbed (xdplab.pool: a lock file held by this
process), checks it, has the program of its trials ready on that testbed's DUT (the
collector built there, or the user's program checked there: kernels may differ, so each
DUT has its own record under results/build/pool-<name>/), knows that testbed's source
ceiling (calibrate), and runs trials with the trial rules' own steps in this process
(xdplab.steps.inprocess), each trial recording the testbed that ran it.  The testbed is
free again when this process ends, however it ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import pool, program, preflight, trials
from . import arm
from .inprocess import Sequence
from .machinery import Log, StepError, read_json, write_json

COLLECTOR_SOURCES = ("bpf/collector.bpf.c", "bpf/xdplab.h")
CALIBRATION_PPS = 10_000_000   # far above what a generator offers: it sends back to back
CALIBRATION_S = 2


class PoolSequence(Sequence):
    """A Sequence whose trials record the testbed of the pool that ran them."""

    def __init__(self, entry, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entry = entry

    def trial_of(self, point, rep):
        trial, s, d = super().trial_of(point, rep)
        return trial, dict(s, testbed=self.entry["testbed"], testbed_name=self.entry["name"]), d


class TakenTestbed:
    """One testbed of the pool, held by this process from construction to close().

    `named`: only the testbed of that name (a point of testbed_as_dimension, or the latency
    trials of a search that ran there); else the first free one in the pool's order."""

    def __init__(self, settings: dict, code_digest: str, log: Log, named: str | None = None):
        self.settings, self.log = settings, log
        entries = [e for e in settings["testbeds"] if named in (None, e["name"])]
        if not entries:
            raise StepError(f"no testbed named {named!r} in testbeds ({', '.join(e['name'] for e in settings['testbeds'])})")
        self.slot = pool.acquire(entries, waiting=lambda m: log(m, echo=True))
        self.entry = self.slot.entry
        self.where = pool.build_dir(self.entry)
        self.conn_path = f"{self.where}/pool_connectivity.json"
        self.sources_record = f"{self.where}/sources_checked.json"
        self.ceiling_now = None
        self.seq = PoolSequence(self.entry, settings, f"results/{settings['experiment']}", None, code_digest,
                                self.conn_path, self.sources_record, log)

    @property
    def name(self) -> str:
        return self.entry["name"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check(self) -> None:
        """The testbed brought up (embedded) and checked, in full at its first job of this
        invocation.  A full check stops the generators an earlier run left on its sources,
        and only this testbed's: an embedded instance's have names of their own
        (source.remote_prefix), so a check never stops another instance's running trial."""
        self.log(f"testbed {self.name} ({pool.testbed_id(self.entry)}) taken (lock {self.slot.path})", echo=True)
        self.seq.check(pool.testbed_params(self.entry, self.settings), f"{self.where}/environment.json",
                       preflight.run_settings(self.settings), f"{self.where}/preflight.json")

    def prepare(self, point: str, program_inputs: dict | None = None) -> None:
        """The program of the trials at `point` ready on this testbed's DUT: the collector
        built there, or the user's program checked there (program_inputs: its object and
        build record, as the rules build_program and check_program take them)."""
        s = trials.settings_of_point(point, self.settings)
        kind = trials.program_kind(s.get("program") or "collector")
        if kind == "collector":
            manifest = self._collector_build(trials.parse_point(point)["collector"])
        elif kind == "attached":
            manifest = None
        else:
            manifest = self._program_check(s, program_inputs or {})
        self.seq.build_manifest = manifest or ""

    def _collector_build(self, collector: str) -> str | None:
        """The collector's build record on this DUT (<collector>_port~N.json): made now if
        this testbed has none, or one older than the collector's source (as Snakemake
        would); None with collector off."""
        if collector == "off":
            return None
        manifest = Path(self.where, f"{collector}_port~{self.settings['port']}.json")
        newest = max(Path(p).stat().st_mtime for p in COLLECTOR_SOURCES)
        if not manifest.exists() or manifest.stat().st_mtime < newest:
            arm.build_collector(*COLLECTOR_SOURCES, self.conn_path, self.settings["port"], str(manifest),
                                self.log, collector)
        return str(manifest)

    def _program_check(self, s: dict, inputs: dict) -> str:
        """The user's program loaded through this DUT's verifier (program.check_on_dut, as
        the rule check_program): program~<key>_port~N.json here, made again when the object
        is newer.  The DUT's agent refuses unless its operator allowed programs."""
        obj = inputs.get("obj")
        if not obj:
            raise StepError(f"program {s['program']}: the job was given no object to check on testbed {self.name}")
        key = program.program_key(s["program"], s["program_sha256"])
        record = Path(self.where, f"program~{key}_port~{self.settings['port']}.json")
        if not record.exists() or record.stat().st_mtime < Path(obj).stat().st_mtime:
            program.check_on_dut(obj, inputs.get("build") or None,
                                 {"program": s["program"], "program_name": self.settings["program_name"],
                                  "program_globals": self.settings["program_globals"], "port": self.settings["port"]},
                                 self.conn_path, str(record), self.log)
        return str(record)

    def ceiling(self, packet_size: int) -> dict:
        """This testbed's source ceiling at `packet_size` (calibrate)."""
        return calibrate(self, packet_size)

    def ready(self, point: str, program_inputs: dict | None = None) -> dict:
        """Checked, the program of `point` ready, calibrated at its payload size: the
        ceiling (calibrate's record)."""
        self.check()
        self.prepare(point, program_inputs)
        self.ceiling_now = self.ceiling(trials.settings_of_point(point, self.settings)["packet_size"])
        return self.ceiling_now

    def run(self, point: str, rep: int = 0) -> tuple[dict, dict]:
        """One trial (Sequence.run) after ready(), its trial.json recording this testbed."""
        started = time.time()
        summary, info = self.seq.run(point, rep)
        if not info["cached"]:
            summary = record_testbed(info["trial"], self, self.ceiling_now,
                                     {"started_unix_s": started, "ended_unix_s": time.time()})["summary"]
        return summary, info

    def close(self) -> None:
        self.seq.close()
        Path(self.conn_path).unlink(missing_ok=True)
        self.slot.release()


def calibrate(tb: TakenTestbed, packet_size: int) -> dict:
    """The testbed's source ceiling at this payload size, measured once (kept in
    results/build/pool-<name>/calibration.json): a trial of CALIBRATION_S at
    CALIBRATION_PPS, no collector, on this testbed's own path (send_path as configured),
    run by the same steps under results/build/pool-<name>/calibration/.  The ceiling is the
    lower of the generator's achieved rate and the rate the DUT interface received
    (nic_rx over the trial): what the source can put on the DUT's wire."""
    where, settings, log = Path(tb.where), tb.settings, tb.log
    path = where / "calibration.json"
    record = read_json(str(path)) if path.exists() else {"testbed_name": tb.name, "by_size": {}}
    known = record["by_size"].get(str(packet_size))
    if known is not None:
        return known
    cal = dict(settings, target_pps=[CALIBRATION_PPS], packet_size=[packet_size], frame_size=None,
               duration_s=CALIBRATION_S, warmup_s=0, collector=["off"], keep_pcap=False, keep_features=False,
               repeats=1, program=["collector"], xdp_mode=settings["xdp_mode"][:1], pattern=["constant"],
               experiment=settings["experiment"], testbed_as_dimension=False)
    (trial,) = trials.trials(cal)
    seq = PoolSequence(tb.entry, cal, str(where / "calibration"), None, "calibration", tb.conn_path,
                       tb.sources_record, log)
    seq.desc, seq.record = tb.seq.desc, tb.seq.record
    log(f"calibrating testbed {tb.name}: {CALIBRATION_S} s at {CALIBRATION_PPS} pps, "
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
    write_json(str(path), record)
    log(f"testbed {tb.name}: source ceiling {known['ceiling_pps']} pps at {packet_size} B payload "
        f"(generator {achieved} pps, DUT interface received {known['nic_rx_pps']} pps)", echo=True)
    return known


def mark_source_limited(summary: dict, target_pps: float, ceiling: dict | None) -> None:
    """A trial offered above its testbed's ceiling: source-limited, never the DUT's loss."""
    if ceiling is None or target_pps <= ceiling["ceiling_pps"]:
        return
    summary["source_limited"] = True
    summary["status"] = "source_limited"
    why = (f"source-limited: offered {target_pps} pps above this testbed's source ceiling "
           f"{ceiling['ceiling_pps']:g} pps (calibration.json)")
    summary["loss_where"] = why + (f"; {summary['loss_where']}" if summary.get("loss_where") else "")


def record_testbed(trial_dir: str, tb: TakenTestbed, ceiling: dict | None, times: dict) -> dict:
    """The trial's trial.json with the pool's record (which testbed ran it, when, its
    ceiling) and, above the ceiling, marked source-limited; written back, and returned."""
    trial_path = Path(trial_dir) / "trial.json"
    record = read_json(str(trial_path))
    mark_source_limited(record["summary"], record["trial"]["target_pps"], ceiling)
    record["pool"] = {"ceiling": ceiling, "testbed_name": tb.name, "testbed_id": pool.testbed_id(tb.entry),
                      "testbed": tb.entry["testbed"], "instance": tb.entry.get("instance"),
                      "acquired_unix_s": tb.slot.acquired_unix_s, **times, "pid": os.getpid()}
    write_json(str(trial_path), record)
    return record


class OneTestbed:
    """The job's testbed without a pool, with TakenTestbed's interface: the one testbed the
    rules check and build for (a search's or latency's job, rules search_run and
    latency_run, whose `sequence` parameter names the rules' records)."""

    name = None
    ceiling_now = None

    def __init__(self, sm, settings: dict, connectivity_path: str, log: Log):
        self.sm, self.settings, self.conn_path = sm, settings, connectivity_path
        self.seq = Sequence(settings, f"results/{settings['experiment']}", sm.input.get("build"), sm.params.code,
                            connectivity_path, sm.params.sequence["sources"], log)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def ready(self, point: str, program_inputs: dict | None = None) -> None:
        given = self.sm.params.sequence
        self.seq.check(trials.lab_with_credentials(dict(given["testbed"]), self.sm.config), given["environment"],
                       preflight.run_settings(self.settings), given["preflight_record"])

    def run(self, point: str, rep: int = 0) -> tuple[dict, dict]:
        return self.seq.run(point, rep)

    def close(self) -> None:
        self.seq.close()
        Path(self.conn_path).unlink(missing_ok=True)


def job_testbed(sm, settings: dict, connectivity_path: str, log: Log, named: str | None = None):
    """A search's or latency's job's testbed: one of the pool (TakenTestbed, `named` if
    given) when the configuration has a pool, else the one testbed (OneTestbed)."""
    if settings["testbeds"]:
        return TakenTestbed(settings, sm.params.code, log, named=named)
    return OneTestbed(sm, settings, connectivity_path, log)


def program_of(inputs) -> dict:
    """A user's program's object and build record, as a pool job's inputs name them
    (common.smk's program_inputs)."""
    return {"obj": inputs.get("program_obj"), "build": inputs.get("program_build")}
