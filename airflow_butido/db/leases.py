"""Endpoint slot leases: at most ``maxjobs`` jobs per endpoint across every process
and host that shares the database.

A lease is a row (endpoint, job UUID, expiry). Acquisition is serialised by the
database: a transaction-scoped advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite. A task that dies leaves its lease behind until it expires; a living task
extends it with renew_slot (heartbeat).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_butido.db import rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction
from airflow_butido.db.records import HEARTBEAT_TTL_SECONDS, job_uuids, record_heartbeat

DEFAULT_TTL_SECONDS = HEARTBEAT_TTL_SECONDS  # renewed every 4 s (endpoints.HEARTBEAT_SECONDS)
# Arbitrary constant naming the advisory lock that serialises slot acquisition.
_PG_LOCK_ID = 0x6275746964  # "butid"


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})


def acquire_slot(
    engine: Engine,
    job_uuid: str,
    candidates: Sequence[tuple[str, int]],
    *,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
) -> str | None:
    """Lease a slot on the least-utilised candidate endpoint (running / maxjobs) that
    has one free; ties go to the earlier candidate. Returns the endpoint name, or
    None when every candidate is full. A job that already holds a lease gets the
    same endpoint back (a retried call)."""
    lease = s.endpoint_leases
    now = rows.utcnow()
    expires = now + timedelta(seconds=ttl_seconds)
    with transaction(engine, immediate=True) as conn:
        _lock(conn)
        conn.execute(sa.delete(lease).where(lease.c.expires_at <= now))
        held = conn.execute(
            sa.select(lease.c.endpoint_name).where(lease.c.job_uuid == job_uuid)
        ).scalar()
        if held is not None:
            conn.execute(
                sa.update(lease).where(lease.c.job_uuid == job_uuid).values(expires_at=expires)
            )
            return str(held)
        names = [name for name, _ in candidates]
        running: dict[str, int] = dict(
            conn.execute(
                sa.select(lease.c.endpoint_name, sa.func.count())
                .where(lease.c.endpoint_name.in_(names))
                .group_by(lease.c.endpoint_name)
            ).all()
        )
        best: tuple[float, int, str] | None = None
        for order, (name, maxjobs) in enumerate(candidates):
            used = int(running.get(name, 0))
            if maxjobs <= 0 or used >= maxjobs:
                continue
            rank = (used / maxjobs, order, name)
            if best is None or rank < best:
                best = rank
        if best is None:
            return None
        conn.execute(
            sa.insert(lease).values(
                endpoint_name=best[2], job_uuid=job_uuid, acquired_at=now, expires_at=expires
            )
        )
        return best[2]


def acquire_slot_waiting(
    engine: Engine,
    job_uuid: str,
    candidates: Sequence[tuple[str, int]],
    *,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    poll_seconds: float = 1.0,
    timeout_seconds: float | None = None,
) -> str | None:
    """acquire_slot, retried until a slot frees up (or the timeout passes: None)."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    while True:
        endpoint = acquire_slot(engine, job_uuid, candidates, ttl_seconds=ttl_seconds)
        if endpoint is not None:
            return endpoint
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(poll_seconds)


def renew_slot(engine: Engine, job_uuid: str, *, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> bool:
    """Heartbeat: extend the job's lease; False if it has none (it expired)."""
    lease = s.endpoint_leases
    expires = rows.utcnow() + timedelta(seconds=ttl_seconds)
    with transaction(engine, immediate=True) as conn:
        result = conn.execute(
            sa.update(lease).where(lease.c.job_uuid == job_uuid).values(expires_at=expires)
        )
        record_heartbeat(conn, job_uuid)  # the slot's holder is the job: both are alive
        return bool(result.rowcount)


def release_slot(engine: Engine, job_uuid: str) -> None:
    lease = s.endpoint_leases
    with transaction(engine, immediate=True) as conn:
        conn.execute(sa.delete(lease).where(lease.c.job_uuid == job_uuid))


@dataclass(frozen=True)
class SlotHolder:
    endpoint: str
    job_uuid: str
    package: str | None  # "name version" once the job row exists
    held_seconds: float


def slot_holders(engine: Engine, endpoints: Sequence[str]) -> list[SlotHolder]:
    """Who holds the live slots of ``endpoints``, longest first: what a waiting job says
    it waits for."""
    lease, j, p = s.endpoint_leases, s.jobs, s.packages
    now = rows.utcnow()
    with transaction(engine) as conn:
        found = conn.execute(
            sa.select(lease.c.endpoint_name, lease.c.job_uuid, lease.c.acquired_at)
            .where(lease.c.endpoint_name.in_(list(endpoints)), lease.c.expires_at > now)
            .order_by(lease.c.acquired_at)
        ).all()
        uuids = job_uuids(str(r.job_uuid) for r in found)
        packages = {
            str(r.uuid): f"{r.name} {r.version}"
            for r in conn.execute(
                sa.select(j.c.uuid, p.c.name, p.c.version)
                .join(p, p.c.id == j.c.package_id)
                .where(j.c.uuid.in_(uuids))
            )
        }
    return [
        SlotHolder(
            str(r.endpoint_name),
            str(r.job_uuid),
            packages.get(str(r.job_uuid)),
            (now - rows.as_utc(r.acquired_at)).total_seconds(),
        )
        for r in found
    ]


def lease_endpoint_of(engine: Engine, job_uuid: str) -> str | None:
    """The endpoint where ``job_uuid`` holds a slot, if it does."""
    lease = s.endpoint_leases
    with transaction(engine) as conn:
        found = conn.execute(
            sa.select(lease.c.endpoint_name).where(lease.c.job_uuid == job_uuid)
        ).scalar()
    return None if found is None else str(found)


def live_lease_jobs(engine: Engine) -> set[str]:
    """The jobs holding an unexpired slot: alive, whatever their containers look like."""
    lease = s.endpoint_leases
    with transaction(engine) as conn:
        return {
            str(u)
            for u in conn.execute(
                sa.select(lease.c.job_uuid).where(lease.c.expires_at > rows.utcnow())
            ).scalars()
        }


def slot_usage(engine: Engine) -> dict[str, int]:
    """Live leases per endpoint name."""
    lease = s.endpoint_leases
    with transaction(engine) as conn:
        return {
            str(name): int(count)
            for name, count in conn.execute(
                sa.select(lease.c.endpoint_name, sa.func.count())
                .where(lease.c.expires_at > rows.utcnow())
                .group_by(lease.c.endpoint_name)
            )
        }
