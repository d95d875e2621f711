"""``repair_abandoned`` and ``butido db repair``: the record of a dead build is repaired once
its heartbeat is older than the time-to-live, and never while it beats."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from airflow_butido.db import records, rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction
from tests.hostile._db import running_job
from tests.integration.conftest import db_url, engine  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]


def _age(engine, job: str, seconds: float) -> None:  # noqa: F811
    """Make the job's last heartbeat and its slot's renewal ``seconds`` old (with a claim)."""
    then = rows.utcnow() - timedelta(seconds=seconds)
    with engine.begin() as conn:
        conn.execute(sa.update(s.jobs).where(s.jobs.c.uuid == job).values(heartbeat_at=then))
        conn.execute(
            sa.insert(s.endpoint_leases).values(
                endpoint_name="local",
                job_uuid=job,
                acquired_at=then,
                expires_at=then + timedelta(seconds=records.HEARTBEAT_TTL_SECONDS),
            )
        )
        conn.execute(
            sa.insert(s.build_claims).values(
                build_key=job.replace("-", "")[:32] * 2, job_uuid=job, claimed_at=then,
                expires_at=rows.utcnow() + timedelta(hours=1),
            )
        )  # fmt: skip


def _state(engine, job: str) -> tuple[str, str | None]:  # noqa: F811
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(s.jobs.c.state, s.jobs.c.failure_class).where(s.jobs.c.uuid == job)
        ).one()
    return row.state, row.failure_class


def test_a_silent_job_is_abandoned_and_frees_its_lease_and_claim(engine) -> None:  # noqa: F811
    dead, alive = running_job(engine), running_job(engine)
    _age(engine, dead, records.HEARTBEAT_TTL_SECONDS + 5)
    _age(engine, alive, 1)
    with transaction(engine) as conn:
        records.record_heartbeat(conn, alive)
    done = records.repair_abandoned(engine)
    assert done.jobs == (dead,)
    assert (done.leases, done.claims) == (1, 1)  # the dead job's, not the live one's
    assert _state(engine, dead) == ("failed", "abandoned")
    assert _state(engine, alive) == ("running", None)
    with engine.connect() as conn:
        holders = conn.execute(sa.select(s.build_claims.c.job_uuid)).scalars().all()
    assert holders == [alive]


def test_a_job_beating_within_the_ttl_is_left_alone(engine) -> None:  # noqa: F811
    job = running_job(engine)
    _age(engine, job, records.HEARTBEAT_TTL_SECONDS - 10)
    assert records.repair_abandoned(engine).jobs == ()
    assert _state(engine, job) == ("running", None)


def test_a_running_job_without_a_slot_is_abandoned_at_once(engine) -> None:  # noqa: F811
    job = running_job(engine)  # it beat just now, but its slot is gone
    assert records.repair_abandoned(engine).jobs == (job,)
    assert _state(engine, job) == ("failed", "abandoned")


def test_a_repair_just_done_by_this_process_is_not_repeated_within_the_window(
    engine,  # noqa: F811
) -> None:
    """A job's slot request follows its build claim's repair by a moment: within
    ``unless_within`` seconds of a repair through the same engine it does nothing; after
    it, or without it (``butido db repair``), the sweep runs."""
    assert records.repair_abandoned(engine).jobs == ()
    job = running_job(engine)  # dead at once: no slot
    assert records.repair_abandoned(engine, unless_within=60).jobs == ()
    assert _state(engine, job) == ("running", None)
    assert records.repair_abandoned(engine, unless_within=0.0).jobs == (job,)
    other = running_job(engine)
    records._repaired_at[engine] -= 61  # the last repair, a minute ago
    assert records.repair_abandoned(engine, unless_within=60).jobs == (other,)


def test_db_repair_command(engine, db_url: str) -> None:  # noqa: F811
    job = running_job(engine)
    _age(engine, job, 3600)
    done = subprocess.run(
        [sys.executable, "-m", "airflow_butido.cli.main", "db", "repair", "--database-url", db_url],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert f"job {job}: failed (abandoned: no heartbeat)" in done.stdout
    assert "1 job(s) repaired, 1 slot lease(s) and 1 build claim(s) freed" in done.stdout
    assert _state(engine, job) == ("failed", "abandoned")
