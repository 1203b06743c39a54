"""The source hosts' SSH connections kept open across the trials of one sequence (a search's
trials, run in one process: xdplab.steps.inprocess), each with the generator uploaded once,
for xdplab.source.run_generators."""

from __future__ import annotations

import contextlib
import time

from .source import CLEANUP_TIMEOUT_S, connect, remote_cmd, remote_prefix, upload


class Launcher:
    """SSH connections to the sources kept open across the trials of one sequence (a search's
    trials, run in one process: steps.inprocess), each with the generator uploaded once:
    a trial then starts its generators without logging in or uploading.  Any failure
    closes them (the next trial connects and uploads again); close() removes the uploaded
    files and closes the connections."""

    def __init__(self):
        self._open: dict[tuple, tuple] = {}   # (host, port, user) -> (source, connection, uploaded path)
        self._left: list[tuple] = []           # (source, uploaded path): every file uploaded

    @staticmethod
    def _key(src: dict) -> tuple:
        return (src["host"], int(src.get("port") or 22), src.get("user"))

    def session(self, src: dict, pyz: bytes):
        key = self._key(src)
        _, conn, path = self._open.get(key, (None, None, None))
        if conn is None or not (conn.transport and conn.transport.is_active()):
            conn = connect(src)
            # digits only, as a run's file (run ids have at most 5): a file left by a killed
            # sequence is a leftover the next invocation's check clears by that pattern
            path = f"{remote_prefix(src)}{time.time_ns() // 1000}.pyz"
            self._left.append((src, path))   # until close() removes it
            upload(conn, pyz, path)
            self._open[key] = (src, conn, path)
        return conn, path

    def drop(self) -> None:
        """Close every connection (after a failure: they may be broken)."""
        for _, conn, _ in self._open.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._open = {}

    def close(self, timeout_s: float = CLEANUP_TIMEOUT_S) -> None:
        """Remove every file uploaded (best effort, bounded) and close the connections."""
        for src, path in self._left:
            _, conn, _ = self._open.get(self._key(src), (None, None, None))
            try:
                if conn is not None and conn.transport and conn.transport.is_active():
                    conn.run(remote_cmd("rm", "-f", path), hide=True, warn=True, timeout=timeout_s)
                else:
                    with connect(src, timeout_s) as c:
                        c.run(remote_cmd("rm", "-f", path), hide=True, warn=True, timeout=timeout_s)
            except Exception:
                pass
        self.drop()
        self._left = []
