"""Create or upgrade the schema with the bundled Alembic migrations (no alembic.ini).

A database made by butido 0.5 has its tables but no ``alembic_version``; the first
migration then finds every table present and creates nothing, the later ones add
columns, tables and indexes in place.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_butido.db.engine import infrastructure_errors, is_sqlite
from airflow_butido.db.schema import BUTIDO_05_TABLES
from airflow_butido.errors import ButidoError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from airflow_butido.recipes.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_ID = 0x62757469646F  # "butido": a PostgreSQL advisory lock key
# The newest migration's revision. Every task process opens the database, and importing
# Alembic costs about 0.4 s of CPU each time: a current database is recognised by this
# constant and one plain query instead. A unit test keeps it equal to Alembic's head.
HEAD_REVISION = "0005"


@dataclass(frozen=True)
class UpgradeResult:
    before: str  # "empty", "butido-0.5" or the revision found
    after: str  # the head revision

    @property
    def adopted(self) -> bool:
        return self.before == "butido-0.5"

    def describe(self) -> str:
        if self.before == "empty":
            return f"created the database schema (revision {self.after})"
        if self.adopted:
            return f"adopted the butido 0.5 database, migrated to revision {self.after}"
        if self.before == self.after:
            return f"database schema is up to date (revision {self.after})"
        return f"upgraded the database schema from revision {self.before} to {self.after}"


def alembic_config() -> AlembicConfig:
    _load_alembic()
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


@functools.cache
def head_revision() -> str:
    _load_alembic()
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@functools.cache
def _load_alembic() -> None:
    """Import Alembic, once and quietly: its import logs every plugin it sets up at INFO.
    It is imported only when a database is not current (see HEAD_REVISION)."""
    with _quiet_alembic():
        import alembic.command
        import alembic.config
        import alembic.runtime.migration
        import alembic.script  # noqa: F401


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs "Context impl ..." and each step at INFO; in a task log (every package
    task opens the database) that is noise, so only its warnings pass."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def current_state(engine: Engine) -> str:
    """``empty``, ``butido-0.5`` (tables without alembic_version) or the revision."""
    with _quiet_alembic(), infrastructure_errors(engine), engine.connect() as conn:
        return _state(conn)


def _state(conn: sa.Connection) -> str:
    _load_alembic()
    from alembic.runtime.migration import MigrationContext

    revision = MigrationContext.configure(conn).get_current_revision()
    if revision:
        return revision
    if set(sa.inspect(conn).get_table_names()) & set(BUTIDO_05_TABLES):
        return "butido-0.5"
    return "empty"


def known_revisions() -> set[str]:
    _load_alembic()
    from alembic.script import ScriptDirectory

    return {r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def unknown_revision_error(engine: Engine, revision: str) -> ButidoError:
    where = engine.url.render_as_string(hide_password=True)
    return ButidoError(
        f"database {where} is at schema revision {revision!r}, which this version of "
        f"airflow-butido does not know (its newest is {head_revision()}): was it set up "
        "by a newer version?"
    )


def upgrade(engine: Engine, revision: str = "head") -> UpgradeResult:
    """Migrate the database to ``revision``; safe to run repeatedly.

    The state before is read under the migration lock, so of several processes setting up
    one database at once exactly one reports creating it; the others find it current.
    """
    _load_alembic()
    from alembic import command

    cfg = alembic_config()
    with _quiet_alembic(), infrastructure_errors(engine), engine.connect() as conn:
        # Two processes setting up one database (the first runs of two DAGs): the second
        # waits for the first's commit, then finds the schema current.
        if is_sqlite(conn):
            # Batch migrations copy tables; foreign keys must not fire meanwhile.
            _sqlite_pragma(conn, "foreign_keys=OFF")
            conn = conn.execution_options(sqlite_immediate=True)
            conn.begin()  # BEGIN IMMEDIATE: the write lock, before alembic reads
        else:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        before = _state(conn)
        if before not in ("empty", "butido-0.5") and before not in known_revisions():
            raise unknown_revision_error(engine, before)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()
        if is_sqlite(conn):
            _sqlite_pragma(conn, "foreign_keys=ON")
    return UpgradeResult(before=before, after=current_state(engine))


def _sqlite_pragma(conn: sa.Connection, pragma: str) -> None:
    """Run a PRAGMA outside any transaction (inside one, foreign_keys is ignored)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute(f"PRAGMA {pragma}")


def is_current(engine: Engine) -> bool:
    if recorded_revision(engine) == HEAD_REVISION:
        return True
    return current_state(engine) == head_revision()


def recorded_revision(engine: Engine) -> str | None:
    """The revision in ``alembic_version``, read with one plain query; None when it cannot
    be read that way (no such table, or any error: the Alembic path then says why)."""
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.SQLAlchemyError:
        return None


def open_database(config: Config, url: str | None = None, repo_root: Path | None = None) -> Engine:
    """The build database (``url``, or the one ``config`` names) migrated to the current
    schema when it is not: what a plan, build or report task opens before its first query."""
    from airflow_butido.db.engine import database_url, make_engine

    root = repo_root if repo_root is not None else Path(config.repo_root)
    engine = make_engine(database_url(config, url=url, repo_root=root))
    if not is_current(engine):
        upgrade(engine)
    return engine
