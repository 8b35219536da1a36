"""A full disk, recognised whichever library ran into it, and the one line that says where and how much.

Python raises OSError (ENOSPC, EDQUOT); safetensors' Rust writer, torch's zip writer and SQLite
raise their own errors that only say so in words. A job that runs out of space removes what it
had half-written and ends FAILED with `DiskFull`.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable
from pathlib import Path

from qa_compress.errors import UserError

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
FULL_WORDS = ("no space left on device", "database or disk is full", "storagefull", "disk quota exceeded")


class DiskFull(UserError):
    """A job ran out of space; its message names the place and the space it needs."""


def is_full(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from, says the disk (or the user's quota) is full."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if any(words in str(current).lower() for words in FULL_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def place_of(err: BaseException, candidates: Iterable[Path]) -> Path:
    """The directory the failed write went to: the error's file when it names one, else the fullest candidate."""
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, OSError) and current.filename:
            return Path(current.filename).absolute().parent
        current = current.__cause__ or current.__context__
    return min(candidates, key=free_bytes)


def remove_written_since(directory: Path, since: float, kept: Iterable[str] = ()) -> int:
    """Remove what was written under `directory` since `since` (epoch seconds), except what matches a `kept`
    pattern at its top (logs, the job's config). Returns the bytes freed."""
    freed = 0
    if not directory.is_dir():
        return 0
    for entry in directory.iterdir():
        if any(entry.match(pattern) for pattern in kept) or entry.lstat().st_mtime < since:
            continue
        if entry.is_dir() and not entry.is_symlink():
            freed += sum(p.lstat().st_size for p in entry.rglob("*") if p.is_file())
            shutil.rmtree(entry, ignore_errors=True)
        else:
            freed += entry.lstat().st_size
            entry.unlink(missing_ok=True)
    return freed


def megabytes(count: float) -> str:
    """Bytes as a person reads them in a message: MB, or kB below one MB."""
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e3:,.0f} kB"


def full_message(place: Path, needed: int, freed: int) -> str:
    """The one line: where the space ran out, how much is free there now, how much to free, what was removed."""
    free = free_bytes(place)
    short = max(needed - free, 0)
    advice = f"free at least {megabytes(short)} more and rerun" if short else "free space there and rerun"
    removed = f"its partial files ({megabytes(freed)}) were removed" if freed else "it left no partial file"
    writes = f"; this job writes about {megabytes(needed)} there" if needed > 0 else ""
    return f"{place}: no space left on device ({megabytes(free)} free now{writes}): {advice}; {removed}"
