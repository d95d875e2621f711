"""Every database test runs on a fresh PostgreSQL database and on a SQLite file (the
``db_url`` and ``engine`` fixtures of tests/integration/conftest.py)."""

from __future__ import annotations

import io
import uuid
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

from airflow_butido.cli import main as cli_main

SCHEMA_05 = Path(__file__).resolve().parents[3].parent / "shared/reference/butido-0.5-schema.sql"


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
