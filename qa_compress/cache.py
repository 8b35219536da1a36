"""Content-keyed cache directories that readers never see half written.

An entry is a directory named by a hash of everything that determines its content. It is
built in a temporary sibling directory and renamed into place in one step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def key(parts: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable description."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def building(entry: Path) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it becomes `entry`, on failure it is removed."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}-"))
    try:
        yield tmp
        try:
            tmp.rename(entry)
        except OSError:
            if not entry.exists():  # another process won the race: keep its entry
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
