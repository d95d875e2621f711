"""Every database test runs on a fresh PostgreSQL database and on a SQLite file (the
``db_url`` and ``engine`` fixtures of tests/integration/conftest.py)."""

from __future__ import annotations

import io
import uuid
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import pytest

from airflow_butido.cli import main as cli_main

SCHEMA_05 = Path(__file__).resolve().parents[3].parent / "shared/reference/butido-0.5-schema.sql"


def butido_05_schema_sql() -> str:
    """butido 0.5's schema dump (in ../shared, which CI always has)."""
    from tests.conftest import unavailable

    if not SCHEMA_05.is_file():
        unavailable(f"butido 0.5's schema ({SCHEMA_05}, from ../shared) is not present")
    return SCHEMA_05.read_text()


def new_uuid() -> str:
    return str(uuid.uuid4())


DB_COMMAND_MODULES = (
    "airflow_butido.cli.db",
    "airflow_butido.cli.release",
    "airflow_butido.cli.find_artifact",
    "airflow_butido.cli.repo_commands",
)


def run_cli(*argv: str) -> tuple[int, str]:
    """``butido ARGV`` through the real entry point, with only the command groups of
    the build database registered (the others are tested elsewhere)."""
    out = io.StringIO()
    with mock.patch.object(cli_main, "COMMAND_MODULES", DB_COMMAND_MODULES), redirect_stdout(out):
        code = cli_main.main(list(argv))
    return code, out.getvalue()


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    paths = {k: tmp_path / k for k in ("staging", "releases", "sources", "logs")}
    for path in paths.values():
        path.mkdir()
    (paths["releases"] / "default").mkdir()
    for key, var in (("staging", "STAGING"), ("releases", "RELEASES_ROOT"),
                     ("sources", "SOURCE_CACHE"), ("logs", "LOG_DIR")):  # fmt: skip
        monkeypatch.setenv(f"BUTIDO_{var}", str(paths[key]))
    return paths
