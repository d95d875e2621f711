"""Database selection through a real Airflow connection, and reconnecting."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from airflow_butido.db.engine import database_url, make_engine
from airflow_butido.db.migrate import current_state, upgrade

from .builds import record_submit

pytestmark = pytest.mark.postgres


class NoDatabaseConfig:
    staging = None


def test_the_butido_db_airflow_connection_is_used(pg_url, monkeypatch) -> None:
    plain = sa.engine.make_url(pg_url).set(drivername="postgresql")
    monkeypatch.setenv("AIRFLOW_CONN_BUTIDO_DB", plain.render_as_string(hide_password=False))
    url = database_url(NoDatabaseConfig())
    parsed = sa.engine.make_url(url)
    assert parsed.drivername == "postgresql+psycopg2"
    assert parsed.database == plain.database
    engine = make_engine(url)
    upgrade(engine)
    assert current_state(engine) != "empty"
    engine.dispose()


def test_a_dropped_connection_is_replaced_transparently(pg_url, pg_admin_engine) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    record_submit(engine)
    with pg_admin_engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": engine.url.database},
        ).scalar_one()
    assert killed >= 1
    record_submit(engine)  # the pool pings and reconnects
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM submits")).scalar_one() == 2
    engine.dispose()


def test_a_pooled_connection_is_pinged_only_after_sitting_idle(pg_url, monkeypatch) -> None:
    """No ``SELECT 1`` before every use (a round trip each): a connection back in the pool
    a moment ago is used as it is; one idle longer than the limit is asked first."""
    import time

    import airflow_butido.db.engine as engine_module

    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.3)
    engine = make_engine(pg_url)
    pings = []
    ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or ping(c))
    for _ in range(5):
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 2")).scalar_one() == 2
    assert pings == []
    time.sleep(0.4)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 3")).scalar_one() == 3
    assert len(pings) == 1
    engine.dispose()
