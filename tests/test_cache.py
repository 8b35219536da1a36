"""The content-keyed cache under concurrency: one builder, no stale locks, damaged entries rebuilt."""

import multiprocessing
import os
import signal
import time

import pytest

from qa_compress.tracking import cache

from . import lock_workers


def test_four_processes_build_a_cache_entry_exactly_once(tmp_path):
    entry, log = tmp_path / "entry", tmp_path / "builds.log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=lock_workers.build_once, args=(str(entry), str(log))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert len(log.read_text().splitlines()) == 1
    assert (entry / "data.txt").read_text() == "built" and cache.damage(entry) is None


@pytest.mark.slow
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    entry = tmp_path / "entry"
    holder = multiprocessing.get_context("spawn").Process(target=lock_workers.hold_lock, args=(str(entry),))
    holder.start()
    deadline = time.time() + 60
    while not entry.with_name("entry.lock").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    with pytest.raises(Exception, match="another job is still building"), cache.locked(entry, timeout_s=0.5):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with cache.locked(entry, timeout_s=5):  # taken at once: the OS released the dead holder's lock
        pass


def test_a_damaged_entry_is_reported_and_rebuilt(tmp_path, caplog):
    entry = tmp_path / "entry"
    with cache.building(entry) as tmp:
        (tmp / "weights.bin").write_bytes(b"1234")
    assert cache.usable(entry)
    (entry / "weights.bin").write_bytes(b"1235")
    assert not cache.usable(entry)
    assert "checksum mismatch in weights.bin" in caplog.text and not entry.exists()


def test_a_build_left_by_a_dead_process_is_removed_by_the_next_builder(tmp_path):
    entry = tmp_path / "features" / "key"
    orphan = entry.parent / f".{entry.name}-abc123"
    orphan.mkdir(parents=True)
    (orphan / "half.arrow").write_bytes(b"x" * 1000)
    other = entry.parent / ".other-key-def"  # another entry's build is not this builder's to touch
    other.mkdir()
    with cache.locked(entry, 10), cache.building(entry) as tmp:
        (tmp / "data.txt").write_text("done")
    assert not orphan.exists() and other.exists() and cache.usable(entry)


def test_builds_whose_builder_died_are_removed_at_the_next_start_and_live_ones_are_not(tmp_path):
    dead = tmp_path / "baselines" / ".a4fc486c-x1y2"
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"x" * 1000)
    alive = tmp_path / "features" / ".3d9f-01a1-k9z8"  # an entry name with dashes, still being built
    alive.mkdir(parents=True)
    entry_file = tmp_path / "synthetic" / ".not-a-build"  # a file, not a build directory
    entry_file.parent.mkdir()
    entry_file.write_text("x")
    with cache.locked(tmp_path / "features" / "3d9f-01a1", 10):
        assert cache.remove_orphans(tmp_path) == [dead]
    assert alive.is_dir() and entry_file.is_file()
    assert cache.remove_orphans(tmp_path) == [alive]  # its builder let go without finishing
