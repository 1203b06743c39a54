"""Writing a file so that a reader sees the old one or the whole new one, never half.

Every write-then-rename of the workflow's step records and trial files goes through
`replacing`: the new content is written beside the file under a temporary name
(.<name>.tmp<pid>, which housekeeping discards if a run dies mid-write) and renamed
over it only when whole.  Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def temporary_name(path) -> Path:
    """Where `path` is written before it becomes `path`: beside it, hidden, per process."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside `path`; when the block ends without an error it
    becomes `path` (os.replace, atomic on one file system).  A block that fails leaves
    `path` as it was and no temporary file behind."""
    p = Path(path)
    tmp = temporary_name(p)
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_json(path, data) -> None:
    """`data` as indented JSON, synced to disk before it replaces `path`; the directory is
    made if missing."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with replacing(p) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def write_text(path, text: str) -> None:
    """`text` replaces `path` whole."""
    with replacing(path) as tmp:
        Path(tmp).write_text(text)


def write_csv(path, columns: list, rows) -> None:
    """A table: a header of `columns`, then each row (a dict) in their order, None as an
    empty cell; replaces `path` whole."""
    import csv

    with replacing(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
