"""Where a search's Optuna study lives: beside the MLflow store, in a schema or database of its own.

Optuna and MLflow both keep their schema version in a table named `alembic_version`, so a study
cannot share MLflow's tables: beside a SQLite store it is `optuna.db`, in a PostgreSQL store the
schema `optuna`, on a MySQL server the database `<name>_optuna`, created on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qa_compress.errors import UserError
from qa_compress.tracking import store

OWN_SCHEMA = "optuna"  # PostgreSQL: the schema a study gets in the tracking database (search_path)
OWN_DATABASE_SUFFIX = "_optuna"  # MySQL: the database a study gets beside the tracking database


def storage_url(configured: str | None, tracking_uri: str, mlruns_dir: str) -> str:
    """Where the study lives: the configured storage, else beside the MLflow store.

    A configured PostgreSQL storage gets the schema `optuna` too, unless it names a `search_path`, so it
    may be the very database behind a tracking server. Anything else (a tracking server over HTTP, whose
    database is not known here) gets SQLite in mlruns_dir.
    """
    if configured:
        return _own_schema(configured) if store.scheme(configured) == "postgresql" else configured
    scheme = store.scheme(tracking_uri)
    database = store.sqlite_path(tracking_uri)
    if database is not None:
        return store.sqlite_uri(database.parent / "optuna.db")
    if scheme == "postgresql":
        return _own_schema(tracking_uri)
    if scheme == "mysql":
        from sqlalchemy.engine import make_url

        url = make_url(tracking_uri)
        return url.set(database=f"{url.database}{OWN_DATABASE_SUFFIX}").render_as_string(hide_password=False)
    return store.sqlite_uri(Path(mlruns_dir) / "optuna.db")


def _own_schema(url: str) -> str:
    """A PostgreSQL URL whose tables go to the schema `optuna` (libpq's search_path), unless it names one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    options = str(parsed.query.get("options", ""))
    if "search_path" in options:
        return url
    options = f"{options} -csearch_path={OWN_SCHEMA}".strip()
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def _create_home(url: str) -> None:
    """Create the schema (PostgreSQL `search_path`) or database (MySQL) a study URL names, if missing."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import URL, make_url

    parsed = make_url(url)
    scheme = store.scheme(url)
    if scheme == "mysql" and parsed.database:
        server = URL.create(
            parsed.drivername, parsed.username, parsed.password, parsed.host, parsed.port, query=parsed.query
        )
        engine = create_engine(server)
        statement = f"CREATE DATABASE IF NOT EXISTS `{parsed.database.replace('`', '``')}`"
    elif scheme == "postgresql" and "search_path=" in str(parsed.query.get("options", "")):
        options = str(parsed.query["options"])
        schema = options.split("search_path=", 1)[1].split()[0].split(",")[0]
        engine = create_engine(parsed.difference_update_query(["options"]))
        statement = f'CREATE SCHEMA IF NOT EXISTS "{schema.replace(chr(34), chr(34) * 2)}"'
    else:
        return
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")  # databases Optuna's RDB storage is tested on


def check_storage(url: str, key: str) -> None:
    """Refuse a storage Optuna cannot keep a study in, or a SQLite file that cannot be written, before any run."""
    scheme = store.scheme(url)
    if scheme not in STORAGE_SCHEMES:
        raise UserError(
            f"hydra.sweeper.storage={store.masked(url)}: not a database URL Optuna can keep a study in "
            f"({', '.join(s + '://...' for s in STORAGE_SCHEMES)})"
        )
    if scheme == "sqlite":
        from qa_compress.job import checks

        checks.writable(str(Path(url.split(":///", 1)[-1]).parent), key)


def opened(url: str) -> Any:
    """Optuna's storage at `url`, its schema (and home) created on first use.

    Processes opening one fresh SQLite file at once each try to create the tables, and all but one fail
    ("table studies already exists"), so they queue on the store's creation lock, as MLflow stores do.
    """
    import optuna

    _create_home(url)
    with store.creation_lock(url):
        return optuna.storages.RDBStorage(url)


def probe_storage(url: str) -> None:
    """Connect to the storage (creating Optuna's tables on first use); UserError if it does not answer.

    The last check before a search's parent run opens, so a refused search leaves no database behind.
    """
    try:
        opened(url)
    except Exception as err:
        raise unreachable(url, err) from None


def unreachable(url: str, err: Exception) -> UserError:
    """The one message for a storage that did not answer: its masked URL and the first line of the reason."""
    reason = (str(err).strip().splitlines() or [""])[0][:300]
    return UserError(f"hydra.sweeper.storage={store.masked(url)}: Optuna could not open it ({reason})")
