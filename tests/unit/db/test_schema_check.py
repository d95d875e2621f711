"""Whether the build database's schema is current is answered without importing Alembic,
and the answer agrees with Alembic's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from airflow_butido.db.migrate import alembic_config, head_revision, is_current, upgrade


def test_the_head_revision_read_from_the_migration_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_is_current_only_at_the_head_revision(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert not is_current(engine)  # empty: no alembic_version
    upgrade(engine, "0001")
    assert not is_current(engine)
    upgrade(engine)
    assert is_current(engine)
    engine.dispose()


def test_opening_a_current_database_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.sqlite'}"
    engine = sa.create_engine(url)
    upgrade(engine)
    engine.dispose()
    code = (
        "import sys\n"
        "from airflow_butido.db.migrate import open_database\n"
        "from airflow_butido.recipes.config import Config\n"
        f"open_database(Config(), url={url!r}).dispose()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
