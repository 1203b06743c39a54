"""Figures drawn only when their inputs changed.

Snakemake deletes a job's outputs before it runs it, and the figures job runs again
whenever summary.csv is written anew, so without this every finished trial's time series
would be drawn again each time a sweep grows (~0.1 s each, matplotlib's import ~0.8 s on
top).  A copy of each figure is kept in .snakemake/xdplab-figures/ (one per output path,
so the copies never outnumber the figures) with the digest of what it was drawn from:
its input files' bytes, its title, and the drawing code (xdplab's figure modules and
matplotlib's version).  A figure whose digest matches is its copy; any other is drawn.

Standard library only: a job whose figures are all unchanged imports no matplotlib.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from importlib import metadata
from pathlib import Path

# Relative to Snakemake's working directory, as xdplab's other invocation state.
CACHE = Path(".snakemake", "xdplab-figures")
# The code a figure's pixels depend on.
DRAWING_CODE = ("figures.py", "plotting.py", "summaryfigure.py", "stats.py", "figurecache.py")


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in DRAWING_CODE:
        h.update((here / name).read_bytes())
    try:
        h.update(metadata.version("matplotlib").encode())
    except metadata.PackageNotFoundError:
        pass
    return h.hexdigest()


def digest(inputs: list[str], title: str) -> str:
    """What a figure is drawn from: its inputs' bytes, its title, the drawing code."""
    h = hashlib.sha256(code_digest().encode())
    h.update(title.encode())
    for path in inputs:
        h.update(b"\0" + Path(path).read_bytes())
    return h.hexdigest()


def _entry(output: str) -> Path:
    return CACHE / hashlib.sha256(str(Path(output).resolve()).encode()).hexdigest()[:24]


def restore(outputs: list[str], key: str) -> bool:
    """Copy each output's kept copy into place if all were drawn from `key`; False (and
    nothing copied) otherwise."""
    try:
        if any((_entry(o) / "digest").read_text() != key for o in outputs):
            return False
    except OSError:
        return False
    try:
        for o in outputs:
            shutil.copyfile(_entry(o) / "figure", o)
    except OSError:
        return False
    return True


def keep(outputs: list[str], key: str) -> None:
    """Keep a copy of each output, drawn from `key` (best effort: a cache is never an error)."""
    for o in outputs:
        entry = _entry(o)
        try:
            entry.mkdir(parents=True, exist_ok=True)
            (entry / "digest").unlink(missing_ok=True)
            shutil.copyfile(o, entry / "figure")
            (entry / "digest").write_text(key)
        except OSError:
            pass


def draw_if_changed(inputs: list[str], outputs: list[str], title: str, draw) -> bool:
    """draw() unless the outputs' kept copies were drawn from the same inputs, title and
    code (then they are copied into place); True when it drew."""
    key = digest(inputs, title)
    if restore(outputs, key):
        return False
    draw()
    keep(outputs, key)
    return True
