"""Which database to use, and an engine that behaves the same on PostgreSQL and SQLite.

Selection order (first that applies wins):

1. an explicit URL (``--db-url``) or the ``database_url`` setting of the config;
2. config.toml's ``database_*`` keys, as a PostgreSQL URL;
3. the Airflow connection ``butido_db`` (another id with ``BUTIDO_DB_CONN_ID``),
   when it exists and Airflow is in play: inside Airflow processes (Airflow is
   already imported), or when ``AIRFLOW_CONN_BUTIDO_DB`` / ``BUTIDO_DB_CONN_ID`` is
   set. The CLI does not import Airflow (2-3 s) just to look for it;
4. an embedded SQLite file: ``<staging>/../butido.sqlite`` when ``staging`` is set,
   else ``<repo>/.butido/butido.sqlite``.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine

from airflow_butido.errors import ButidoError, ConfigError, InfrastructureError

if TYPE_CHECKING:
    from airflow_butido.recipes.config import Config

AIRFLOW_CONN_ID = "butido_db"
SQLITE_BUSY_TIMEOUT_S = 60.0
# a pooled PostgreSQL connection idle this long is pinged before it is used again
PING_AFTER_IDLE_S = 5.0
SUPPORTED_BACKENDS = ("postgresql", "sqlite")
# config.toml's keys of the PostgreSQL connection (butido's --db-* flags override them).
DB_SETTING_KEYS = (
    "database_host",
    "database_port",
    "database_user",
    "database_password",
    "database_name",
    "database_connection_timeout",
)


def database_url(
    config: Config | None = None,
    *,
    url: str | None = None,
    repo_root: Path | None = None,
    use_airflow: bool = True,
) -> str:
    """The SQLAlchemy URL of the build database (see the module docstring)."""
    if url:
        return url
    if config is not None and getattr(config, "database_url", None):
        return str(config.database_url)
    pg = _url_from_database_keys(config)
    if pg is not None:
        return pg
    if use_airflow and _airflow_in_play():
        from_airflow = _url_from_airflow_connection(airflow_conn_id())
        if from_airflow:
            return from_airflow
    return f"sqlite:///{default_sqlite_path(config, repo_root=repo_root)}"


def default_sqlite_path(config: Config | None = None, *, repo_root: Path | None = None) -> Path:
    staging = getattr(config, "staging", None) if config is not None else None
    if staging:
        return Path(staging).resolve().parent / "butido.sqlite"
    root = repo_root or getattr(config, "repo_root", None) or Path.cwd()
    return Path(root).resolve() / ".butido" / "butido.sqlite"


def _url_from_database_keys(config: Config | None) -> str | None:
    if config is None:
        return None
    host = getattr(config, "database_host", None)
    name = getattr(config, "database_name", None)
    if not host or not name:
        return None
    port = getattr(config, "database_port", None)
    timeout = getattr(config, "database_connection_timeout", None) or 30
    return URL.create(
        "postgresql+psycopg2",
        username=getattr(config, "database_user", None),
        password=getattr(config, "database_password", None),
        host=str(host),
        port=int(port) if port else None,
        database=str(name),
        query={"connect_timeout": str(int(timeout))},
    ).render_as_string(hide_password=False)


def airflow_conn_id() -> str:
    return os.environ.get("BUTIDO_DB_CONN_ID") or AIRFLOW_CONN_ID


def _airflow_in_play() -> bool:
    if "airflow" in sys.modules:
        return True
    env_name = f"AIRFLOW_CONN_{airflow_conn_id().upper()}"
    return bool(os.environ.get("BUTIDO_DB_CONN_ID") or os.environ.get(env_name))


def _url_from_airflow_connection(conn_id: str) -> str | None:
    """The connection's URL, or None when Airflow or the connection is absent."""
    try:
        from airflow.providers.postgres.hooks.postgres import PostgresHook
    except Exception:  # Airflow not installed or not configured
        return None
    try:
        hook = PostgresHook(postgres_conn_id=conn_id)
        try:
            url = hook.sqlalchemy_url
        except Exception:
            return _psycopg2_url(hook.get_uri())
        return _psycopg2_url(url.render_as_string(hide_password=False))
    except Exception:  # the connection does not exist
        return None


def _psycopg2_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets a busy timeout, foreign keys and real
    transactions (``BEGIN`` issued by us, ``BEGIN IMMEDIATE`` for writers that ask
    with ``execution_options(sqlite_immediate=True)``)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"invalid database URL {url!r}: {exc}") from exc
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ConfigError(f"database URL {shown}: only PostgreSQL and SQLite are supported")
    try:
        return _create_engine(parsed, **kwargs)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise ConfigError(f"database URL {shown}: driver not available: {exc}") from exc


class DatabaseFileError(ButidoError):
    """The SQLite database file is not a database, or is damaged: a restore, not a retry."""


def _check_sqlite_file(path: Path) -> None:
    """An existing, non-empty file must be an SQLite database.

    Asked through SQLite itself, never with a plain open() and close(): closing any file
    descriptor of the database file drops every POSIX lock this process holds on it, which
    lets another process write under the feet of this process's open connections.
    """
    try:
        if path.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DatabaseFileError(f"database {path}: cannot read it: {exc.strerror}") from exc
    try:
        uri = f"file:{quote(str(path))}?mode=ro"
        with contextlib.closing(
            sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
        ) as conn:
            conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if type(exc) is not sqlite3.DatabaseError:  # locked, busy: not about the file
            return
        raise DatabaseFileError(
            f"database {path} is not an SQLite database file ({exc}); restore it from a "
            "backup or point the configuration at another database"
        ) from exc


def _create_engine(parsed: URL, **kwargs: Any) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _check_sqlite_file(Path(parsed.database))
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"database {parsed.database}: cannot create {folder}: "
                                  f"{exc.strerror}") from exc  # fmt: skip
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        _make_sqlite_transactional(engine)
        return engine
    ping = kwargs.pop("pool_pre_ping", None)
    if parsed.get_driver_name() == "psycopg2":
        kwargs.setdefault("use_native_hstore", False)  # no hstore: no type lookup per engine
    engine = sa.create_engine(parsed, **kwargs)
    if ping is not False:
        _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: Engine) -> None:
    """Before a pooled connection is used again, ask the server (``SELECT 1``) when it sat
    in the pool PING_AFTER_IDLE_S or more, or when its socket has something to read (an
    idle connection receives nothing unless the server is closing it: a restart,
    ``pg_terminate_backend``); a dead one is replaced, the pool retrying the checkout.

    ``pool_pre_ping`` asks before every use: about ten round trips per job, each waiting
    for a core on a busy machine, for connections a task had used a moment before.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["butido_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("butido_idle_since")
        if since is None:
            return  # just connected
        if time.monotonic() - since < PING_AFTER_IDLE_S and not _has_input(dbapi_conn):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)  # outside a transaction, as pool_pre_ping
        except Exception as exc:  # the driver's error for a connection that is gone
            raise sa.exc.DisconnectionError(f"pooled connection lost: {exc}") from exc


def _has_input(dbapi_conn: Any) -> bool:
    """Whether the connection's socket can be read without waiting (or has no socket
    to ask: then it is pinged)."""
    try:
        ready, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
    except Exception:  # no fileno, or a closed one
        return True
    return bool(ready)


def _make_sqlite_transactional(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


@contextlib.contextmanager
def transaction(engine: Engine, *, immediate: bool = False) -> Iterator[Connection]:
    """One transaction; a lost or refused connection becomes InfrastructureError."""
    with infrastructure_errors(engine):
        conn = engine.connect()
        try:
            if immediate:
                conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn
        finally:
            conn.close()


def _sqlite_file_is_sound(path: str | None) -> bool:
    """Whether SQLite's own quick check passes on the file (a fresh connection)."""
    if not path or path == ":memory:":
        return True
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
            return conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
    except sqlite3.Error:
        return False


@contextlib.contextmanager
def infrastructure_errors(engine: Engine) -> Iterator[None]:
    """Turn connection failures into InfrastructureError naming the database."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if is_sqlite(engine) and type(exc.orig) is sqlite3.DatabaseError:
            if not _sqlite_file_is_sound(engine.url.database):
                raise DatabaseFileError(
                    f"database {engine.url.database} is damaged or not an SQLite database: "
                    f"{exc.orig}; restore it from a backup"
                ) from exc
            # The file checks out: a reader caught another process's write in passing.
            raise InfrastructureError(
                f"database {engine.url.database} failed: {exc.orig} (the file checks out; retry)"
            ) from exc
        if exc.connection_invalidated or isinstance(
            exc, sa.exc.OperationalError | sa.exc.InterfaceError
        ):
            where = engine.url.render_as_string(hide_password=True)
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise InfrastructureError(f"database {where} failed: {reason}") from exc
        raise
