"""Process entry points for the cache lock tests; kept free of heavy imports so spawned workers start fast."""

import os
import time
from pathlib import Path

from qa_compress.tracking import cache


def build_once(entry: str, log: str) -> None:
    """Build the entry unless another process has; record each build in `log`."""
    with cache.locked(Path(entry), timeout_s=120):
        if not cache.usable(Path(entry)):
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(0.5)
            with cache.building(Path(entry)) as tmp:
                (tmp / "data.txt").write_text("built")


def hold_lock(entry: str) -> None:
    with cache.locked(Path(entry), timeout_s=10):
        time.sleep(600)
