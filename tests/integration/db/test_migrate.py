"""Fresh setup, repeated setup, and adoption of a butido 0.5 database in place."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from airflow_butido.db import schema as s
from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import current_state, head_revision, upgrade
from airflow_butido.db.queries import table_counts

from .conftest import butido_05_schema_sql, run_cli

pytestmark = pytest.mark.postgres

OLD_SUBMIT = "6a1c7e9e-4a4f-4e39-9a52-9f3f0c2b1d10"
OLD_JOB_A = "0d6f5b3e-2222-4c8e-9a0e-5b0f2b7a0002"


def load_butido_05(engine: sa.Engine) -> None:
    """A database as butido 0.5 leaves it: its tables and history, no alembic_version."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.connection.driver_connection.cursor().execute(butido_05_schema_sql())
            conn.exec_driver_sql("CREATE TABLE __diesel_schema_migrations (version VARCHAR)")
        return
    # SQLite cannot run the PostgreSQL script: the same tables (first migration only)
    # and the same rows.
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
        t = datetime(2024, 3, 1, 10, tzinfo=UTC)
        conn.execute(sa.insert(s.envvars).values(name="FLAVOR", value="fast"))
        conn.execute(sa.insert(s.githashes).values(hash="3b18e512dba79e4c8300dd08aeb37f8e728b8dad"))
        conn.execute(
            sa.insert(s.packages), [{"name": "a", "version": "1"}, {"name": "b", "version": "2"}]
        )
        conn.execute(sa.insert(s.images).values(name="debian:bullseye"))
        conn.execute(sa.insert(s.endpoints).values(name="testhostname"))
        conn.execute(
            sa.text(
                "INSERT INTO submits (uuid, submit_time, requested_image_id, "
                "requested_package_id, repo_hash_id) VALUES (:u, :t, 1, 1, 1)"
            ),
            {"u": OLD_SUBMIT.replace("-", ""), "t": t.replace(tzinfo=None)},
        )
        for pkg, n, uuid in ((2, 1, "0d6f5b3e-1111-4c8e-9a0e-5b0f2b7a0001"), (1, 2, OLD_JOB_A)):
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (submit_id, endpoint_id, package_id, image_id, "
                    "container_hash, script_text, log_text, uuid) "
                    "VALUES (1, 1, :p, 1, :c, :s, :l, :u)"
                ),
                {"p": pkg, "c": f"c0ffee0{n}", "s": "#!/bin/bash\n", "l": "x\n#BUTIDO:STATE:OK",
                 "u": uuid.replace("-", "")},
            )  # fmt: skip
        conn.exec_driver_sql("INSERT INTO job_envs (job_id, env_id) VALUES (1, 1), (2, 1)")
        conn.exec_driver_sql(
            "INSERT INTO artifacts (path, job_id) VALUES ('b-2.pkg', 1), ('a-1.pkg', 2)"
        )
        conn.exec_driver_sql("INSERT INTO release_stores (store_name) VALUES ('default')")
        conn.execute(
            sa.text(
                "INSERT INTO releases (artifact_id, release_date, release_store_id) "
                "VALUES (2, :d, 1)"
            ),
            {"d": datetime(2024, 3, 2, 9)},
        )


def test_fresh_setup_builds_exactly_the_declared_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    assert current_state(engine) == "empty"
    result = upgrade(engine)
    assert result.before == "empty" and result.after == head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), s.metadata) == []
    assert upgrade(engine).describe().startswith("database schema is up to date")
    engine.dispose()


def test_db_setup_adopts_a_butido_05_database_keeping_every_row(db_url: str) -> None:
    engine = make_engine(db_url)
    load_butido_05(engine)
    assert current_state(engine) == "butido-0.5"
    before = table_counts(engine)
    assert before["jobs"] == 2 and before["releases"] == 1

    code, out = run_cli("db", "submits", "--database-url", db_url)
    assert code == 1  # not adopted yet: refused with a hint, not a traceback

    code, out = run_cli("db", "setup", "--database-url", db_url)
    assert code == 0 and "adopted the butido 0.5 database" in out
    assert table_counts(engine) == before
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), s.metadata)
        assert [
            d for d in diffs if d[0] != "remove_table" or d[1].name != "__diesel_schema_migrations"
        ] == []
        dirty = conn.execute(sa.select(s.submits.c.repo_dirty)).scalar_one()
    assert dirty is False

    code, out = run_cli("db", "submits", "--database-url", db_url)
    assert code == 0
    assert OLD_SUBMIT in out and "\ta\t1\t" in out and "debian:bullseye" in out

    code, out = run_cli("db", "jobs", "--database-url", db_url, "--json")
    jobs = json.loads(out)
    assert {j["Job"]: j["State"] for j in jobs}[OLD_JOB_A] == "success"
    assert sorted(j["Type"] for j in jobs) == ["PKG", "PKG"]

    code, out = run_cli("db", "job", OLD_JOB_A, "--database-url", db_url, "--log", "--env")
    assert code == 0 and "#BUTIDO:STATE:OK" in out and "FLAVOR" in out

    code, out = run_cli("db", "releases", "--database-url", db_url, "--csv")
    assert out.splitlines()[1].startswith("a,1,2024-03-02 09:00:00,default,a-1.pkg")

    # every other query command reads the old rows too
    code, out = run_cli("db", "submit", OLD_SUBMIT, "--database-url", db_url)
    assert code == 0 and "Jobs         2 success" in out and OLD_JOB_A in out
    code, out = run_cli("db", "log-of", OLD_JOB_A, "--database-url", db_url)
    assert code == 0 and out.rstrip().endswith("#BUTIDO:STATE:OK")
    code, out = run_cli("db", "artifacts", "--database-url", db_url, "--csv")
    assert sorted(out.splitlines()[1:]) == [
        f"a-1.pkg,2024-03-02 09:00:00,{OLD_JOB_A},,",
        "b-2.pkg,no,0d6f5b3e-1111-4c8e-9a0e-5b0f2b7a0001,,",
    ]
    assert (
        run_cli("db", "envvars", "--database-url", db_url, "--csv")[1]
        == "Name,Value\nFLAVOR,fast\n"
    )
    assert (
        run_cli("db", "images", "--database-url", db_url, "--csv")[1] == "Name\ndebian:bullseye\n"
    )

    code, out = run_cli("db", "setup", "--database-url", db_url)
    assert "up to date" in out and table_counts(engine) == before
    engine.dispose()


def test_a_schema_revision_this_version_does_not_know_is_refused_by_name(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    for command in ("setup", "jobs"):
        code, _ = run_cli("db", command, "--database-url", db_url)
        assert code == 1
        err = capsys.readouterr().err
        assert "is at schema revision '0099', which this version of airflow-butido" in err
    engine.dispose()


def _setup_in_a_process(url: str) -> str:
    engine = make_engine(url)
    try:
        return upgrade(engine).after
    finally:
        engine.dispose()


def test_concurrent_setups_of_an_empty_database_all_succeed(db_url: str) -> None:
    """The first runs of several DAGs on a new database each set it up."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.map(_setup_in_a_process, [db_url] * 3)
    assert results == [head_revision()] * 3
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), s.metadata) == []
    engine.dispose()
