"""Hostile input ends in an error message naming the file, never in a Python traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from airflow_butido import parse_cache
from airflow_butido.errors import ConfigError
from airflow_butido.recipes import RecipeErrors, load_repository
from airflow_butido.scripts.handlebars import TemplateError
from airflow_butido.scripts.render import render_script

from .conftest import CliRunner
from .repos import hostile_repo

ROOT = Path(__file__).resolve().parents[2]
LEAF = 'name = "p"\nversion = "1"\n[phases.build]\nscript = "true"\n'
DEEP_TABLES = "deep = " + "{ a = " * 400 + "1" + " }" * 400 + "\n"
DEEP_ARRAYS = "deep = " + "[" * 400 + "]" * 400 + "\n"


@pytest.mark.parametrize("deep", [DEEP_TABLES, DEEP_ARRAYS], ids=["tables", "arrays"])
def test_deeply_nested_pkg_toml_is_a_recipe_error(
    tmp_path: Path, deep: str, butido: CliRunner
) -> None:
    repo = hostile_repo(tmp_path, LEAF, files={"p/pkg.toml": deep})
    with pytest.raises(RecipeErrors, match=r"^p/pkg.toml: TOML nested too deeply"):
        load_repository(repo)
    code, out, err = butido("--repo", repo, "lint")
    assert code == 1 and "p/pkg.toml: TOML nested too deeply" in err
    # The DAG file loads the repository through the parse cache.
    with pytest.raises(RecipeErrors, match="nested too deeply"):
        parse_cache.load(repo, environ={"BUTIDO_PARSE_CACHE": str(tmp_path / "cache")})


def test_deeply_nested_config_toml_is_a_config_error(tmp_path: Path) -> None:
    repo = hostile_repo(tmp_path, LEAF, extra_config=DEEP_TABLES)
    with pytest.raises(ConfigError, match=r"config.toml: TOML nested too deeply"):
        load_repository(repo)


def test_handlebars_blocks_nested_500_deep_are_a_template_error(tmp_path: Path) -> None:
    body = "{{#if this.name}}" * 500 + "x" + "{{/if}}" * 500
    repo = load_repository(hostile_repo(tmp_path, LEAF.replace('"true"', f"'{body}'")))
    with pytest.raises(TemplateError, match=r"p/1/pkg.toml, phase build.*nested more than 100"):
        render_script(repo.get("p", "1"), repo.config)


# ----------------------------------------------------------------------- database files

DB_COMMANDS = [
    ("setup",),
    ("submits",),
    ("submit", str(uuid.uuid4())),
    ("jobs",),
    ("job", str(uuid.uuid4())),
    ("log-of", str(uuid.uuid4())),
    ("artifacts",),
    ("releases",),
    ("envvars",),
    ("images",),
]


@pytest.mark.parametrize("header", [b"", b"SQLite format 3\x00"], ids=["foreign", "damaged"])
@pytest.mark.parametrize("command", DB_COMMANDS, ids=lambda c: c[0])
def test_a_broken_sqlite_file_is_named_by_every_db_command(
    tmp_path: Path, command: tuple[str, ...], header: bytes, butido: CliRunner
) -> None:
    database = tmp_path / "broken.sqlite"
    database.write_bytes(header + bytes(range(256)) * 40)
    code, out, err = butido("db", *command, "--database-url", f"sqlite:///{database}")
    assert code == 1, (out, err)
    assert f"database {database}" in err and "SQLite database" in err
    assert "Traceback" not in err


def _advisory_waiters(admin, database: str) -> int:
    import sqlalchemy as sa

    with admin.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = :n"
                ),
                {"n": database},
            ).scalar_one()
        )


@pytest.mark.postgres
def test_concurrent_db_setup_on_postgresql_creates_once(pg_url: str, tmp_path: Path) -> None:
    """Three ``butido db setup`` processes start together on a new database: one reports
    creating the schema, the other two find it current."""
    import sqlalchemy as sa

    from airflow_butido.db.migrate import MIGRATION_LOCK_ID

    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    database = sa.engine.make_url(pg_url).database
    assert database is not None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Hold the migration lock so that all three are inside `setup` before any proceeds.
    holder = admin.connect()
    holder.execute(sa.text(f"SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_butido.cli.main",
                "--repo",
                str(tmp_path),
                "db",
                "setup",
                "--database-url",
                pg_url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )  # fmt: skip
        for _ in range(3)
    ]
    try:
        deadline = time.monotonic() + 60
        while _advisory_waiters(admin, database) < 3:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "the setups never waited for the lock"
            time.sleep(0.1)
    finally:
        holder.execute(sa.text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))
        holder.close()
    results = [p.communicate(timeout=120) for p in procs]
    admin.dispose()
    assert [p.returncode for p in procs] == [0, 0, 0], results
    said = sorted(out.split(" (")[0] for out, _ in results)
    assert said == [
        "created the database schema",
        "database schema is up to date",
        "database schema is up to date",
    ], results
