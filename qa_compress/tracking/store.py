"""Which MLflow store a job logs to, and whether it answers: decided before MLflow is imported."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from filelock import FileLock

from qa_compress.errors import UserError


def tracking_uri(configured: str | None, mlruns_dir: str) -> str:
    """The store to use: the config's, then MLFLOW_TRACKING_URI, then SQLite under `mlruns_dir`."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return sqlite_uri(Path(mlruns_dir) / "mlflow.db")


def sqlite_uri(database: Path) -> str:
    """The URI of a SQLite database file, made absolute so that it means the same from any working directory."""
    return f"sqlite:///{Path(database).resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def creation_lock(uri: str) -> contextlib.AbstractContextManager:
    """Held by whoever opens a SQLite database: the first opener creates its schema, and two at once break it."""
    database = sqlite_path(uri)
    return FileLock(f"{database}.lock") if database is not None else contextlib.nullcontext()


SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def scheme(uri: str) -> str:
    """The store's kind: `sqlite` for sqlite:///..., `postgresql` for postgresql+psycopg2://..., `file` for a path."""
    return uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else "file"


def masked(uri: str) -> str:
    """A store or storage URL fit for logs, messages and reports: its password masked."""
    if "@" not in uri:
        return uri
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads (an HTTP server's): mask what precedes the host
        return uri.split("://", 1)[0] + "://***@" + uri.rsplit("@", 1)[1]


def _source(uri: str) -> str:
    return "$MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") == uri else "tracking.uri"


def check(uri: str, mlruns_dir: str | None, lock_wait_s: float) -> None:
    """A store MLflow can open, and a tracking server that answers; refused in one line otherwise.

    `mlruns_dir`: where a store the user did not name lives (`paths.mlruns_dir`), named in a refusal of it."""
    if scheme(uri) not in SCHEMES:
        raise UserError(
            f"{_source(uri)}={uri}: unknown scheme {scheme(uri)!r}; use sqlite:///<path>/mlflow.db or http(s)://<server>"
        )
    derived = mlruns_dir is not None and uri == tracking_uri(None, mlruns_dir) and _source(uri) == "tracking.uri"
    check_sqlite(uri, f"paths.mlruns_dir={mlruns_dir}" if derived else f"{_source(uri)}={uri}", lock_wait_s)
    check_reachable(uri)


SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite(uri: str, what: str, lock_wait_s: float) -> None:
    """An existing SQLite store is a database, intact (`PRAGMA quick_check`) and not locked for good; read-only,
    before MLflow or torch is imported. A missing one is fine: MLflow creates it."""
    database = sqlite_path(uri)
    if database is None or not database.exists():
        return
    if not database.is_file():
        raise UserError(f"{what}: {database.name} is not a file, so it cannot be an SQLite database")
    stat = database.stat()
    _check_database_file(str(database.resolve()), stat.st_mtime_ns, stat.st_size, what, lock_wait_s)


@functools.lru_cache(maxsize=8)
def _check_database_file(database: str, mtime_ns: int, size: int, what: str, lock_wait_s: float) -> None:
    name = Path(database).name
    with open(database, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header:
        return  # an empty file: SQLite and MLflow make a store of it
    if header != SQLITE_HEADER:
        raise UserError(f"{what}: {name} is not an SQLite database; move it away, or use another store")
    import sqlite3

    try:
        connection = sqlite3.connect(f"{Path(database).as_uri()}?mode=ro", uri=True, timeout=lock_wait_s)
        try:
            result = connection.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.OperationalError as err:
        if "locked" in str(err):
            raise UserError(
                f"{what}: locked by another process for {lock_wait_s:g} s (tracking.lock_wait_s); "
                "try again when it is done"
            ) from None
        raise UserError(f"{what}: {name} cannot be read as an SQLite database ({err})") from None
    except sqlite3.DatabaseError as err:
        raise UserError(f"{what}: {name} is damaged ({err}); restore it from a copy, or use another store") from None
    if result != "ok":
        raise UserError(f"{what}: {name} is damaged ({result}); restore it from a copy, or use another store")


# How long a command that is not a job (report, export) waits for a store another process holds locked;
# jobs and sweeps wait tracking.lock_wait_s.
COMMAND_LOCK_WAIT_S = 60.0


def existing(configured: str | None) -> str:
    """The store a command reads (never creates): refused when its scheme is unknown or a local store is missing."""
    uri = tracking_uri(configured, "mlruns")
    what = f"--tracking-uri {uri}" if configured else f"the MLflow store {uri}"
    if scheme(uri) not in SCHEMES:
        raise UserError(f"{what}: unknown scheme {scheme(uri)!r}; use sqlite:///<path>/mlflow.db or http(s)://<server>")
    database = sqlite_path(uri)
    if database is not None and not database.exists():
        raise UserError(f"{what}: no such store (run a sweep first, or give --tracking-uri)")
    check_sqlite(uri, what, COMMAND_LOCK_WAIT_S)
    return uri


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """A tracking server answers its health check within seconds, or the job is refused before any run.

    MLflow's own client retries an unreachable server for minutes, once per job.
    """
    if scheme(uri) in ("postgresql", "mysql", "mssql"):
        _check_database(uri, timeout_s)
        return
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    source = _source(uri)
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code} from its health check"
    except (urllib.error.URLError, OSError) as err:
        reason = str(getattr(err, "reason", err))
    raise UserError(
        f"{source}={masked(uri)}: no MLflow tracking server answers ({reason}); start it, or use another store"
    )


def _check_database(uri: str, timeout_s: float) -> None:
    """A database store that does not answer, or does not exist, is refused at once (MLflow retries for minutes)."""
    from sqlalchemy import create_engine, text

    source, shown = _source(uri), masked(uri)
    connect_args = {"connect_timeout": max(1, int(timeout_s))} if scheme(uri) in ("postgresql", "mysql") else {}
    try:
        engine = create_engine(uri, connect_args=connect_args)
    except Exception as err:  # no driver for it
        raise UserError(f"{source}={shown}: MLflow cannot open this database ({err})") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as err:
        reason = (str(getattr(err, "orig", None) or err).strip().splitlines() or [""])[0][:300]
        raise UserError(
            f"{source}={shown}: the database does not answer ({reason}); create it, or use another store"
        ) from None
    finally:
        engine.dispose()
