"""Content-keyed cache directories, safe to share between concurrent jobs.

An entry is a directory named by a hash of everything that determines its content. One job
builds it while the others wait on a file lock (released by the OS if its holder dies, so a
killed job leaves no stale lock). It is built in a temporary sibling directory, sealed with a
checksum manifest and renamed into place in one step; an entry whose files are missing or do
not match their checksums is reported, discarded and rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from qa_compress.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "checksums.json"


def key(parts: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable description."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_digest(path: Path) -> str:
    """SHA-256 of an input file (data, model weights), hashed once per process until its size or mtime change.

    Cache entries are verified with `file_sha256` every time instead: they are what a damaged
    or tampered file would be.
    """
    stat = path.stat()
    return _input_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _input_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def seal(directory: Path) -> None:
    """Write the checksum manifest of every file in `directory`."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {str(p.relative_to(directory)): file_sha256(p) for p in files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))


def damage(entry: Path, required: tuple[str, ...] = ()) -> str | None:
    """None if every file of the entry matches its manifest and the `required` files are in it, else what is wrong."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return f"no readable {MANIFEST}"
    unexpected = sorted({p.name for p in entry.iterdir() if p.is_file()} - set(manifest) - {MANIFEST})
    if unexpected:
        return f"unexpected file {unexpected[0]}"
    for name in required:
        if name not in manifest:
            return f"missing file {name}"
    for name, expected in manifest.items():
        path = entry / name
        if not path.is_file():
            return f"missing file {name}"
        if file_sha256(path) != expected:
            return f"checksum mismatch in {name}"
    return None


def usable(entry: Path, required: tuple[str, ...] = ()) -> bool:
    """Whether `entry` holds a complete, intact entry; a damaged one is reported and discarded."""
    if not entry.exists():
        return False
    problem = damage(entry, required)
    if problem is None:
        return True
    log.warning("Cache entry %s is damaged (%s): discarding and rebuilding it", entry, problem)
    trash = entry.with_name(f".{entry.name}-damaged-{os.getpid()}")
    entry.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return False


@contextlib.contextmanager
def locked(
    entry: Path, timeout_s: float, holder: str = "another job is still building this cache entry"
) -> Iterator[None]:
    """Hold the entry's lock: the first job builds the entry, the others wait, then find it built."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(entry.with_name(f"{entry.name}.lock")))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise UserError(
            f"waited {timeout_s:g} s for {lock.lock_file}: {holder} (raise cache_lock_timeout_s to wait longer)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def remove_orphans(root: Path) -> list[Path]:
    """Remove the temporary build directories under `root` whose builder died (its entry's lock is free).

    A process killed mid-build (kill -9, power loss) leaves one; a build still under way holds the
    lock, so it is left alone. Returns what was removed.
    """
    removed = []
    for tmp in root.glob("*/.*-*"):
        if not tmp.is_dir():
            continue
        lock = FileLock(str(tmp.with_name(f"{tmp.name[1:].rsplit('-', 1)[0]}.lock")))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        try:
            log.warning("Removing %s, left by a build that did not finish", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
        finally:
            lock.release()
    return removed


@contextlib.contextmanager
def building(entry: Path) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it is sealed and becomes `entry`, on failure removed.

    Called with the entry's lock held (`locked`), so another builder's temporary directory for the
    same entry can only be left from a process that died mid-build: it is removed first.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    for orphan in entry.parent.glob(f".{entry.name}-*"):
        log.warning("Removing %s, left by a build that did not finish", orphan)
        shutil.rmtree(orphan, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}-"))
    try:
        yield tmp
        seal(tmp)
        try:
            tmp.rename(entry)
        except OSError:
            if not entry.exists():  # another process won the race: keep its entry
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
