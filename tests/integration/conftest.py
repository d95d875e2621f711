"""Fixtures of the integration tests that use the build database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import upgrade


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh build database: PostgreSQL, then a SQLite file (each test runs on both)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path}/butido.sqlite"


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    """An engine on ``db_url`` with the current schema."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()
