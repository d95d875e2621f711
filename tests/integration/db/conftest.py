"""Every database test runs on a fresh PostgreSQL database and on a SQLite file."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import pytest

from airflow_butido.cli import main as cli_main
from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import upgrade

SCHEMA_05 = Path(__file__).resolve().parents[3].parent / "shared/reference/butido-0.5-schema.sql"


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path}/butido.sqlite"


@pytest.fixture
def engine(db_url: str) -> Iterator[object]:
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def new_uuid() -> str:
    return str(uuid.uuid4())


DB_COMMAND_MODULES = (
    "airflow_butido.cli.db",
    "airflow_butido.cli.release",
    "airflow_butido.cli.find_artifact",
)


def run_cli(*argv: str) -> tuple[int, str]:
    """``butido ARGV`` through the real entry point, with only the command groups of
    the build database registered (the others are tested elsewhere)."""
    out = io.StringIO()
    with mock.patch.object(cli_main, "COMMAND_MODULES", DB_COMMAND_MODULES), redirect_stdout(out):
        code = cli_main.main(list(argv))
    return code, out.getvalue()
