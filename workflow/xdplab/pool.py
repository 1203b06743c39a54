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
