"""Which database is used: explicit URL, config keys, Airflow connection, SQLite."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import sqlalchemy as sa

from airflow_butido.db import engine as db_engine


@dataclass
class FakeConfig:
    staging: Path | None = None
    database_url: str | None = None
    database_host: str | None = None
    database_port: int | None = None
    database_user: str | None = None
    database_password: str | None = None
    database_name: str | None = None
    database_connection_timeout: int = 30


def test_an_explicit_url_wins_over_the_config() -> None:
    cfg = FakeConfig(database_url="sqlite:///cfg.sqlite", database_host="h", database_name="n")
    assert db_engine.database_url(cfg, url="sqlite:///cli.sqlite") == "sqlite:///cli.sqlite"
    assert db_engine.database_url(cfg) == "sqlite:///cfg.sqlite"


def test_database_keys_make_a_postgres_url_with_the_connect_timeout() -> None:
    cfg = FakeConfig(
        database_host="db.example", database_port=5433, database_user="u",
        database_password="p@ss", database_name="butido", database_connection_timeout=7,
    )  # fmt: skip
    url = sa.engine.make_url(db_engine.database_url(cfg))
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "db.example", 5433, "u", "p@ss", "butido",
    )  # fmt: skip
    assert url.query["connect_timeout"] == "7"


def test_the_airflow_connection_is_used_when_nothing_is_configured() -> None:
    with (
        mock.patch.object(db_engine, "_airflow_in_play", return_value=True),
        mock.patch.object(
            db_engine, "_url_from_airflow_connection", return_value="postgresql+psycopg2://x/y"
        ) as lookup,
    ):
        assert db_engine.database_url(FakeConfig()) == "postgresql+psycopg2://x/y"
    lookup.assert_called_once_with("butido_db")


def test_without_anything_the_sqlite_file_sits_beside_the_staging_dir(tmp_path) -> None:
    cfg = FakeConfig(staging=tmp_path / "staging")
    with mock.patch.object(db_engine, "_url_from_airflow_connection", return_value=None):
        url = db_engine.database_url(cfg)
    assert url == f"sqlite:///{tmp_path / 'butido.sqlite'}"
    assert db_engine.database_url(None, repo_root=tmp_path, use_airflow=False) == (
        f"sqlite:///{tmp_path / '.butido' / 'butido.sqlite'}"
    )


def test_airflow_counts_when_imported_or_named_in_the_environment(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "airflow", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_BUTIDO_DB", raising=False)
    monkeypatch.delenv("BUTIDO_DB_CONN_ID", raising=False)
    assert not db_engine._airflow_in_play()
    monkeypatch.setenv("AIRFLOW_CONN_BUTIDO_DB", "postgresql://u:p@h/d")
    assert db_engine._airflow_in_play()
    monkeypatch.delenv("AIRFLOW_CONN_BUTIDO_DB")
    monkeypatch.setenv("BUTIDO_DB_CONN_ID", "builds")
    assert db_engine.airflow_conn_id() == "builds"
    assert db_engine._airflow_in_play()


def test_airflow_connection_urls_use_the_psycopg2_driver() -> None:
    assert db_engine._psycopg2_url("postgres://u:p@h/d") == "postgresql+psycopg2://u:p@h/d"
    assert db_engine._psycopg2_url("postgresql://h/d") == "postgresql+psycopg2://h/d"
    assert db_engine._psycopg2_url("postgresql+psycopg://h/d") == "postgresql+psycopg2://h/d"


def test_opening_the_database_keeps_alembic_out_of_task_logs(tmp_path, caplog) -> None:
    """Every package task opens the build database; its log shows no Alembic chatter."""
    import logging

    from airflow_butido.db.engine import make_engine
    from airflow_butido.db.migrate import current_state, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'b.sqlite'}")
    with caplog.at_level(logging.INFO):
        upgrade(engine)
        current_state(engine)
    assert not [r for r in caplog.records if r.name.startswith("alembic")], caplog.text
    assert logging.getLogger("alembic").level == logging.NOTSET  # restored
