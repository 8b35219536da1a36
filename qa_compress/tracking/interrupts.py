"""SIGTERM and Ctrl-C for a sweep and its jobs: raised as KeyboardInterrupt only where raising is safe.

An exception raised in the middle of an MLflow write leaves a SQLite store locked, so every write runs
inside `held()`; a job's run is a `scope()`, a sweep's is opened and closed by hand (its scope spans Hydra
callbacks).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any


def in_finalizer(frame: Any) -> bool:
    """Whether a signal came while a finalizer or weak-reference callback runs: Python would drop an exception
    raised there and print its traceback, so the interrupt waits for the next knock."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.endswith(("weakref.py", "_weakrefset.py")):
            return True
        frame = frame.f_back
    return False


class _Interrupts:
    """SIGTERM and Ctrl-C as a KeyboardInterrupt, raised where raising is safe, for a sweep and its jobs.

    An exception raised in the middle of an MLflow write leaves the SQLite store locked, so a
    signal that arrives during one is held until the write is done. Python drops an exception
    raised while a finalizer runs (garbage collection), so until the interrupt is taken the
    signal is sent again every `RETRY_S` seconds.
    """

    RETRY_S = 1.0

    def __init__(self) -> None:
        self.armed = False  # handlers installed and no interrupt taken yet
        self.pending: int | None = None
        self.depth = 0
        self.received = False  # a signal came since the outermost scope began
        self.last: int | None = None  # the last signal that came
        self._outer: list[tuple[dict, bool, int | None] | None] = []  # what each open scope replaced

    def handle(self, signum: int, frame: Any) -> None:
        self.received, self.last = True, signum
        if not self.armed:
            return  # the stop is already under way
        self.pending = signum
        knock = threading.Timer(self.RETRY_S, self._knock, (signum,))
        knock.daemon = True
        knock.start()
        if self.depth == 0 and not in_finalizer(frame):
            self._raise()

    def _knock(self, signum: int) -> None:
        if self.armed and self.pending == signum:
            os.kill(os.getpid(), signum)

    def _raise(self) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(self.pending).name}")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold signals during an MLflow call; one that came meanwhile is raised once the call is done."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.depth == 0 and self.armed and self.pending is not None:
            self._raise()

    def take(self) -> None:
        """The interrupt is being handled: stop resending it and let further signals pass."""
        self.armed = False

    def enter(self) -> None:
        """Install the handlers for a sweep or a job (main thread only); `leave` gives back the outer ones."""
        if threading.current_thread() is not threading.main_thread():
            self._outer.append(None)
            return
        # Pool workers (joblib) ignore SIGINT by default; a job must stop on Ctrl-C wherever it runs.
        previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        self._outer.append((previous, self.armed, self.pending))
        if len(self._outer) == 1:
            self.received = False
        self.armed, self.pending = True, None

    def leave(self) -> None:
        outer = self._outer.pop()
        if outer is not None:
            previous, self.armed, self.pending = outer
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()


_interrupts = _Interrupts()
held = _interrupts.held
scope = _interrupts.scope
take_interrupt = _interrupts.take
stop_sweep_on_signals = _interrupts.enter  # a sweep's scope spans Hydra callbacks, so it is opened and
end_sweep_signals = _interrupts.leave  # closed by hand; a job's is `job_run`'s


def exit_code() -> int:
    """What a process stopped by a signal exits with, as a shell reports it: 128 + the signal's number."""
    return 128 + (_interrupts.last or signal.SIGINT)


def interrupted() -> bool:
    """Whether SIGTERM or Ctrl-C came while the sweep's (or a job's) handlers were installed."""
    return _interrupts.received
