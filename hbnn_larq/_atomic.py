"""Files written through a rename: a process killed mid-write (the resume path expects that)
leaves the previous file, never a truncated one that the resumed run would fail to read."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_open(path, mode: str = "w"):
    """A staging file beside `path` (same directory, so the rename is atomic) that replaces
    `path` when the block ends without an error."""
    path = Path(path)
    fd, staging = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    with os.fdopen(fd, mode) as f:
        yield f
    os.replace(staging, path)


def write_json(path, value) -> None:
    with atomic_open(path) as f:
        json.dump(value, f, indent=2)
