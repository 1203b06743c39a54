"""A lab's state directory: where its files live, the lock, the logs, the
description (testbed.json), and emptying it.

The directory holds keys, host keys, sshd_config, known_hosts,
authorized_keys, the agent's token and state, pid files, logs and
testbed.json; a source host of a lab made by lab_layout() has its own
subdirectory.  The directory itself is the lock, and it outlives `down`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

from .layout import LabLayout, SourceHost

DESCRIPTION = "testbed.json"


class StateDir:
    """The state directory of one layout's lab."""

    def __init__(self, root: Path, layout: LabLayout):
        self.root, self.layout = Path(root), layout

    def path(self, name: str) -> Path:
        return self.root / name

    def source_path(self, src: SourceHost, name: str) -> Path:
        """A file of one source host (its sshd's keys, config, pid file and log)."""
        return self.root / src.state_subdir / name

    @property
    def token_file(self) -> Path:
        return self.path("agent.token")

    @property
    def pidfiles(self) -> dict[str, Path]:
        """The pid file of each process we start, by its part name (sshd…, agent)."""
        files = {s.sshd_part: self.source_path(s, "sshd.pid") for s in self.layout.sources}
        files["agent"] = self.path("agent.pid")
        return files

    def read_pid(self, part: str) -> int | None:
        try:
            return int(self.pidfiles[part].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @contextlib.contextmanager
    def lock(self):
        # The lock is the state directory itself: down() empties it, so a lock
        # file inside would be removed under a waiting process.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- the description --------------------------------------------------------
    def read_description(self) -> dict | None:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.path(DESCRIPTION).read_text())
        return None

    def write_description(self, desc: dict) -> None:
        tmp = self.path(DESCRIPTION + ".tmp")
        tmp.write_text(json.dumps(desc, indent=2) + "\n")
        tmp.replace(self.path(DESCRIPTION))

    # --- logs -------------------------------------------------------------------
    def log_files(self) -> dict[str, Path]:
        """The lab's logs by the name they are copied under: agent.log, and
        sshd.log (embedded testbed) or sshd-<label>.log per source host."""
        logs = {"agent.log": self.path("agent.log")}
        for s in self.layout.sources:
            logs["sshd.log" if not s.state_subdir else f"sshd-{s.label}.log"] = self.source_path(s, "sshd.log")
        return logs

    def copy_logs(self, dest: str | os.PathLike) -> list[Path]:
        """Copy the logs that exist to dest (created if missing); returns the copies."""
        dest = Path(dest)
        copied = []
        with self.lock():
            for name, path in self.log_files().items():
                if path.is_file():
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, dest / name)
                    copied.append(dest / name)
        return copied

    # --- emptying -----------------------------------------------------------------
    def clear(self, keep_logs: bool) -> list[str]:
        """Remove everything under the state directory (keys, host keys,
        sshd_config, known_hosts, authorized_keys, token, pid files, logs, the
        agent's state) but the directory itself, which is the lock."""
        removed = []
        for path in self.pidfiles.values():
            if path.exists():
                path.unlink()
                removed.append(f"pid file {path}")
        token = self.token_file
        if token.exists():
            token.unlink()
            removed.append(f"token file {token}")
        keep = {p.resolve() for p in self.log_files().values()} if keep_logs else set()
        if not self.root.is_dir():
            return removed
        if self.root.resolve() == Path("/") or self.root.stat().st_mode & 0o077:
            # Not a private directory that up() made: remove only what we name.
            for path in [self.path(n) for n in (DESCRIPTION, DESCRIPTION + ".tmp")] + list(
                    set(self.log_files().values()) - keep):
                path.unlink(missing_ok=True)
            return removed
        others = self._remove_files(keep)
        if others:
            removed.append(f"{others} more files under {self.root} (keys, sshd_config, "
                           f"known_hosts, logs, agent state)")
        return removed

    def _remove_files(self, keep: set[Path]) -> int:
        """Every file below the directory but those kept, and the emptied
        subdirectories; how many files went."""
        others = 0
        for root, dirs, files in os.walk(self.root, topdown=False):
            for f in files:
                path = Path(root, f)
                if path.resolve() in keep:
                    continue
                path.unlink(missing_ok=True)
                others += 1
            for d in dirs:
                with contextlib.suppress(OSError):   # not empty: it holds a kept log
                    Path(root, d).rmdir()
        return others
