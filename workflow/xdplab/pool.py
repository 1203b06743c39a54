"""A pool of testbeds (configuration key `testbeds`): which testbed a trial's job takes, and
what each testbed's records are called.

Snakemake's resources are counters, not named slots: the rule pool_trial asks for one unit
of `testbed`, whose limit is the pool's size (common.smk), so at most that many trials run
at once, and the job itself binds to a named testbed here.  Each testbed has a lock file,
.snakemake/xdplab-testbeds/<name>.lock; a trial's process takes the first one free with
flock(LOCK_EX | LOCK_NB), in the pool's order, and holds it for its whole life.  The kernel
drops a flock when the last descriptor on it closes, i.e. when the process ends however it
ends (a SIGKILL too): a killed run leaves no testbed held, and no stale lock to clear.  The
descriptor is close-on-exec (os.open's default), so a child the trial started (tcpdump, ip,
ssh) never keeps a testbed locked after the trial's process is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_DIR = ".snakemake/xdplab-testbeds"


def testbed_id(entry: dict) -> str:
    """A pool testbed's records go under results/build/pool-<name>/ (its build, its
    connectivity and environment records, its calibration)."""
    return f"pool-{entry['name']}"


def build_dir(entry: dict) -> str:
    return f"results/build/{testbed_id(entry)}"


def testbed_params(entry: dict, settings: dict) -> dict:
    """connectivity.bring_up's parameters for one testbed of the pool (a lab's with its
    credentials: the entry as config.check_pool normalised it)."""
    if entry["testbed"] == "lab":
        return {"testbed": "lab", "lab": entry["lab"], "mtu": settings["mtu"]}
    params = {k: settings[k] for k in ("src_iface", "dut_iface", "source_python", "mtu")}
    params["testbed"] = "embedded"
    if entry.get("instance"):
        params["instance"] = entry["instance"]
    return params


@dataclass
class Slot:
    """One testbed of the pool, held by this process while `fd` is open."""

    entry: dict
    path: str
    fd: int
    acquired_unix_s: float

    @property
    def name(self) -> str:
        return self.entry["name"]

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)   # closing the last descriptor drops the flock
            self.fd = -1


class NoFreeTestbed(RuntimeError):
    pass


def try_acquire(pool: list[dict], lock_dir: str = LOCK_DIR) -> Slot | None:
    """The first testbed of `pool` no other process holds, now held by this one; None if
    every one is held."""
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    for entry in pool:
        path = str(Path(lock_dir) / f"{entry['name']}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        now = time.time()
        # Who holds it, for a person looking (the lock itself is the flock, not this text).
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "since_unix_s": now}) + "\n").encode(), 0)
        return Slot(entry, path, fd, now)
    return None


def acquire(pool: list[dict], lock_dir: str = LOCK_DIR, timeout_s: float = 600.0, poll_s: float = 0.1,
            waiting=None) -> Slot:
    """A free testbed of the pool, waiting for one up to `timeout_s`.  Snakemake starts no
    more pool trials than the pool has testbeds, so a wait is short (a trial's process that
    has ended, whose lock the kernel has not yet dropped) unless another invocation runs
    trials on the same pool: then this one waits for it."""
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        slot = try_acquire(pool, lock_dir)
        if slot is not None:
            return slot
        if time.monotonic() > deadline:
            raise NoFreeTestbed(f"no testbed of the pool ({', '.join(e['name'] for e in pool)}) became free "
                                f"in {timeout_s:g} s: each is held by another process (its pid in "
                                f"{lock_dir}/<name>.lock)")
        if waiting is not None and not said:
            waiting(f"every testbed of the pool is held; waiting for one (lock files in {lock_dir})")
            said = True
        time.sleep(poll_s)


def held(pool: list[dict], lock_dir: str = LOCK_DIR) -> list[str]:
    """The names of the pool's testbeds some process holds now (probing each lock)."""
    out = []
    for entry in pool:
        path = Path(lock_dir) / f"{entry['name']}.lock"
        if not path.exists():
            continue
        fd = os.open(str(path), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            out.append(entry["name"])
        finally:
            os.close(fd)
    return out


# -- testbeds.csv: the pool's testbeds side by side ----------------------------------------

# The main columns compared between two testbeds on the points they share.
COMPARED = ("achieved_pps", "lost", "latency_p50_us", "xdp_ns_per_pkt")
TESTBEDS_COLUMNS = ["testbed_name", "other", "point", "target_pps", "packet_size", "metric", "n", "n_other",
                    "mean", "mean_other", "difference", "ci95_lo", "ci95_hi", "trials", "ceiling_pps"]


def testbeds_rows(records: list[dict], calibrations: dict) -> list[dict]:
    """testbeds.csv's rows from the trials' trial.json records and each testbed's
    calibration.json ({name: record}): one row per testbed (its trials, its source ceiling
    at each payload size it was calibrated at, `size:pps` joined by `;`), then, for every
    point that two testbeds share and every COMPARED column, the difference of their means
    (other minus testbed) with its 95 % confidence interval (Welch; empty below two trials
    on either side)."""
    from .compare import welch_interval

    import re

    def shared(point):   # a point of testbed_as_dimension is the same point on every testbed
        return re.sub(r"_tb~[a-z0-9_-]+(?=_cfg~)", "", point)

    by = {}
    for r in records:
        name = (r.get("summary") or {}).get("testbed_name") or (r.get("pool") or {}).get("testbed_name")
        if name is None:
            continue
        by.setdefault(name, []).append(r)
    rows = []
    for name in sorted(set(by) | set(calibrations)):
        sizes = (calibrations.get(name) or {}).get("by_size") or {}
        rows.append({"testbed_name": name, "trials": len(by.get(name, [])),
                     "ceiling_pps": ";".join(f"{k}:{v['ceiling_pps']:g}" for k, v in sorted(sizes.items(),
                                                                                       key=lambda kv: int(kv[0])))})
    names = sorted(by)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            points_a, points_b = {}, {}
            for r in by[a]:
                points_a.setdefault(shared(r["trial"]["point"]), []).append(r)
            for r in by[b]:
                points_b.setdefault(shared(r["trial"]["point"]), []).append(r)
            for point in sorted(set(points_a) & set(points_b)):
                ra, rb = points_a[point], points_b[point]
                for col in COMPARED:
                    xa = [float(x["summary"][col]) for x in ra if _number(x["summary"].get(col))]
                    xb = [float(x["summary"][col]) for x in rb if _number(x["summary"].get(col))]
                    if not xa or not xb:
                        continue
                    ma, mb = sum(xa) / len(xa), sum(xb) / len(xb)
                    lo = hi = None
                    if len(xa) > 1 and len(xb) > 1:
                        lo, hi, _ = welch_interval(xa, xb)
                        lo, hi = round(lo, 6), round(hi, 6)
                    rows.append({"testbed_name": a, "other": b, "point": point,
                                 "target_pps": ra[0]["trial"]["target_pps"],
                                 "packet_size": ra[0]["trial"]["packet_size"], "metric": col, "n": len(xa),
                                 "n_other": len(xb), "mean": round(ma, 6), "mean_other": round(mb, 6),
                                 "difference": round(mb - ma, 6), "ci95_lo": lo, "ci95_hi": hi})
    return rows


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
