"""Small row helpers shared by the writers: create-or-fetch of lookup rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from airflow_butido.db import schema as s


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """The INSERT of the dialect in use, which has ON CONFLICT (PostgreSQL, SQLite); only
    that dialect is imported: importing the other costs a command tens of milliseconds."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql as dialect
    else:
        from sqlalchemy.dialects import sqlite as dialect  # type: ignore[no-redef]
    return dialect.insert(table)


def insert_ignore(
    conn: Connection, table: sa.Table, values: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite."""
    if not values:
        return
    stmt = _dialect_insert(conn, table).on_conflict_do_nothing()
    if isinstance(values, Mapping):
        conn.execute(stmt.values(**values))
    else:
        conn.execute(stmt, list(values))


def upsert_id(conn: Connection, table: sa.Table, key: str, values: Mapping[str, Any]) -> int:
    """Insert the row, or update the one with the same unique ``key`` column to
    ``values``; its id. One statement (ON CONFLICT DO UPDATE ... RETURNING)."""
    stmt = _dialect_insert(conn, table).values(**values)
    update = {k: v for k, v in values.items() if k != key}
    stmt = stmt.on_conflict_do_update(index_elements=[table.c[key]], set_=update)
    return int(conn.execute(stmt.returning(table.c.id)).scalar_one())


def get_or_create(conn: Connection, table: sa.Table, **values: Any) -> int:
    """The id of the row with exactly these values, inserted if missing."""
    where = sa.and_(*(table.c[k] == v for k, v in values.items()))
    found = conn.execute(sa.select(table.c.id).where(where)).scalar()
    if found is not None:
        return int(found)
    insert_ignore(conn, table, values)
    return int(conn.execute(sa.select(table.c.id).where(where)).scalar_one())


def package_id(conn: Connection, name: str, version: str) -> int:
    return get_or_create(conn, s.packages, name=name, version=version)


def package_ids(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The ids of many packages, created where missing, with a few statements whatever
    their number."""
    table = s.packages
    wanted = sorted(set(keys))
    found: dict[tuple[str, str], int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        wanted_chunk = set(chunk)
        names = sorted({name for name, _ in chunk})
        insert_ignore(conn, table, [{"name": n, "version": v} for n, v in chunk])
        for row in conn.execute(
            sa.select(table.c.id, table.c.name, table.c.version).where(table.c.name.in_(names))
        ):
            if (row.name, row.version) in wanted_chunk:
                found[(row.name, row.version)] = int(row.id)
    return found


def image_id(conn: Connection, name: str) -> int:
    return get_or_create(conn, s.images, name=name)


def endpoint_id(conn: Connection, name: str) -> int:
    return get_or_create(conn, s.endpoints, name=name)


def githash_id(conn: Connection, commit: str) -> int:
    return get_or_create(conn, s.githashes, hash=commit)


def envvar_ids(conn: Connection, env: Mapping[str, str]) -> list[int]:
    return [get_or_create(conn, s.envvars, name=k, value=str(v)) for k, v in sorted(env.items())]


def release_store_id(conn: Connection, name: str) -> int:
    return get_or_create(conn, s.release_stores, store_name=name)
