"""The constant that lets a current database be recognised without importing Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from airflow_butido.db.migrate import HEAD_REVISION, head_revision, is_current, upgrade


def test_head_revision_constant_is_alembics_head() -> None:
    assert head_revision() == HEAD_REVISION


def test_a_current_database_is_recognised_without_importing_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.sqlite'}"
    upgrade(sa.create_engine(url))
    code = (
        "import sys, sqlalchemy as sa\n"
        "from airflow_butido.db.migrate import is_current\n"
        f"assert is_current(sa.create_engine({url!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_an_older_or_empty_database_is_not_current(tmp_path: Path) -> None:
    empty = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    assert not is_current(empty)
    older = sa.create_engine(f"sqlite:///{tmp_path / 'older.sqlite'}")
    upgrade(older, "0004")
    assert not is_current(older)
    upgrade(older)
    assert is_current(older)
