"""Writes to a MLflow store that other processes write to: waited for and retried while a SQLite store is locked,
given up after `tracking.lock_wait_s` with one line saying the job's results are not recorded.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import mlflow
import sqlalchemy

from qa_compress.errors import UserError
from qa_compress.tracking import store
from qa_compress.tracking.interrupts import held

log = logging.getLogger(__name__)

# How long a write waits for a SQLite store another process holds locked, retrying with growing pauses,
# before the job gives up and fails (its results unrecorded, so it runs again next time): a job's or a
# sweep's tracking.lock_wait_s, set by `wait_for_locks`.
_lock_wait_s = store.COMMAND_LOCK_WAIT_S


SQLITE_BUSY_TIMEOUT_S = 30.0  # the longest one SQLite statement waits for another writer's lock before it fails


def _busy_timeout_pragma() -> str:
    return f"PRAGMA busy_timeout = {int(min(SQLITE_BUSY_TIMEOUT_S, _lock_wait_s) * 1000)}"


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _wait_for_sqlite_locks(connection: Any, record: Any) -> None:
    """Every SQLite connection (MLflow's store, the search's study) waits for a lock instead of failing at once,
    never longer than a write may wait in all."""
    if isinstance(connection, sqlite3.Connection):
        connection.execute(_busy_timeout_pragma())


MLFLOW_BUSY_TIMEOUT = re.compile(r"^\s*PRAGMA busy_timeout\s*=\s*\d+\s*;?\s*$", re.IGNORECASE)


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute", retval=True)
def _keep_the_configured_wait(connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool):
    """MLflow sets a 20 s busy timeout at the start of each of its sessions, over the one set on connecting: keep
    the configured one, so a locked store is given up after tracking.lock_wait_s, not 20 s later."""
    if MLFLOW_BUSY_TIMEOUT.match(statement):
        statement = _busy_timeout_pragma()
    return statement, parameters


class StoreError(UserError):
    """The MLflow store would not take a write: what the job did is not recorded, and it runs again next time."""


def _locked(err: BaseException) -> bool:
    """Whether an exception (or one it was raised from) says a SQLite database was locked."""
    while err is not None:
        if "database is locked" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


class _LockedWritesAreRetried(logging.Filter):
    """MLflow logs each write that meets a locked SQLite store as an error with its traceback; `write` retries
    those, and says so in one line if the store stays locked."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_locked(record.exc_info[1]) if record.exc_info else "database is locked" in record.getMessage())


logging.getLogger("mlflow.store.db.utils").addFilter(_LockedWritesAreRetried())


def wait_for_locks(seconds: float) -> None:
    """How long each write of this process waits for a store another process holds locked (tracking.lock_wait_s)."""
    global _lock_wait_s
    _lock_wait_s = seconds


def write(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One MLflow write, signals held while it runs, retried while the store is locked (`wait_for_locks`)."""
    began = time.monotonic()
    deadline, pause = began + _lock_wait_s, 0.2
    while True:
        try:
            with held():
                return call(*args, **kwargs)
        except Exception as err:
            if not _locked(err):
                raise
            if time.monotonic() + pause > deadline:
                raise StoreError(
                    f"{store.masked(mlflow.get_tracking_uri())}: the MLflow store stayed locked by another process "
                    f"for {time.monotonic() - began:.0f} s (tracking.lock_wait_s={_lock_wait_s:g}); "
                    "this job's results are not recorded, so it runs again next time"
                ) from None
            log.info("The MLflow store is locked by another process; trying again in %.1f s", pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
