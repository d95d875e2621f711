"""The first run after adopting a butido 0.5 database reuses butido's builds on butido's own
criteria (same package, image, script and environment, successful log, artifacts present),
records them with a build key, and later runs find them by that key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_butido.db import rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import upgrade
from airflow_butido.plan import RunRequest, record_submit, resolve_plan
from airflow_butido.planned_reuse import reuse_up_front
from airflow_butido.recipes.config import load_config
from airflow_butido.recipes.repository import load_repository
from airflow_butido.scripts.render import render_script
from tests.e2e.test_incremental_runs import depends
from tests.integration.test_jobs import pkg_toml, write_repo

from .test_migrate import load_butido_05

IMAGE = "adopted/image:1"
DIGEST = "sha256:" + "a" * 64
OK_LOG = "building\n#BUTIDO:PHASE:build\n#BUTIDO:STATE:OK\n"
ERR_LOG = 'building\n#BUTIDO:STATE:ERR:"broken"\n'


def butido_job(
    conn: sa.Connection,
    submit_id: int,
    package: tuple[str, str],
    script: str,
    log: str,
    env: dict[str, str],
    artifacts: list[str],
) -> str:
    """A job row as butido 0.5 writes it: no state, no build key, artifacts without hashes."""
    job_uuid = str(uuid.uuid4())
    job_id = conn.execute(
        sa.insert(s.jobs)
        .values(
            submit_id=submit_id,
            endpoint_id=rows.endpoint_id(conn, "oldhost"),
            package_id=rows.package_id(conn, *package),
            image_id=rows.image_id(conn, IMAGE),
            container_hash="c0ffee",
            script_text=script,
            log_text=log,
            uuid=job_uuid,
        )
        .returning(s.jobs.c.id)
    ).scalar_one()
    for env_id in rows.envvar_ids(conn, env):
        conn.execute(sa.insert(s.job_envs).values(job_id=job_id, env_id=env_id))
    for path in artifacts:
        conn.execute(sa.insert(s.artifacts).values(job_id=job_id, path=path))
    return job_uuid


@pytest.fixture
def adopted(db_url: str, tmp_path: Path):
    """A repository (low <- top, and other) and a butido 0.5 database that built all three
    in IMAGE with FOO=1; other's script has changed since."""
    repo_root = write_repo(
        tmp_path / "repo",
        IMAGE,
        {
            "low": pkg_toml("low", "1", "mkdir /outputs; echo l > /outputs/low-1.pkg"),
            "top": depends(pkg_toml("top", "1", "mkdir /outputs; echo t > /outputs/top-1.pkg"),
                           "low"),
            "other": pkg_toml("other", "1", "mkdir /outputs; echo o > /outputs/other-1.pkg"),
        },
    )  # fmt: skip
    config = load_config(repo_root, environ={})
    repo = load_repository(repo_root, config=config)
    scripts = {key: render_script(p, config) for key, p in repo.packages.items()}
    engine = make_engine(db_url)
    load_butido_05(engine)
    old_submit = str(uuid.uuid4())
    jobs: dict[str, str] = {}
    with engine.begin() as conn:
        submit_id = conn.execute(
            sa.insert(s.submits)
            .values(
                uuid=old_submit,
                submit_time=datetime(2024, 5, 1, tzinfo=UTC),
                requested_image_id=rows.image_id(conn, IMAGE),
                requested_package_id=rows.package_id(conn, "top", "1"),
                repo_hash_id=rows.githash_id(conn, "1" * 40),
            )
            .returning(s.submits.c.id)
        ).scalar_one()
        env = {"FOO": "1"}
        jobs["low"] = butido_job(
            conn, submit_id, ("low", "1"), scripts[("low", "1")], OK_LOG, env, ["low-1.pkg"]
        )
        # a later failed build of low (the last state line is ERR) is passed over
        butido_job(conn, submit_id, ("low", "1"), scripts[("low", "1")], ERR_LOG, env, [])
        jobs["top"] = butido_job(
            conn, submit_id, ("top", "1"), scripts[("top", "1")], OK_LOG, env, ["top-1.pkg"]
        )
        jobs["other"] = butido_job(
            conn, submit_id, ("other", "1"), scripts[("other", "1")].replace("echo o", "echo x"),
            OK_LOG, env, ["other-1.pkg"],
        )  # fmt: skip
    staging = Path(config.staging) / old_submit
    staging.mkdir(parents=True)
    (staging / "low-1.pkg").write_text("l\n")
    (staging / "other-1.pkg").write_text("x\n")
    released = Path(config.releases_root) / "default"
    released.mkdir(parents=True, exist_ok=True)
    (released / "top-1.pkg").write_text("t\n")  # released, no longer staged
    upgrade(engine)  # butido db setup
    yield engine, repo, jobs, old_submit
    engine.dispose()


def plan_run(engine, repo, env: tuple[tuple[str, str], ...] = (("FOO", "1"),)):
    plan = resolve_plan(repo, IMAGE, RunRequest(("top", "other"), env))
    record_submit(engine, repo, plan, dag_id=None, run_id=None)
    return reuse_up_front(engine, repo, plan, image_digest=DIGEST)


def test_the_first_run_reuses_butidos_builds_and_records_their_keys(adopted) -> None:
    engine, repo, jobs, old_submit = adopted
    first = plan_run(engine, repo)
    assert sorted(first.reused) == ["low-1", "top-1"]  # other's script changed: rebuilt
    for task_id, name in (("low-1", "low"), ("top-1", "top")):
        manifest = first.reused[task_id]
        assert manifest.reused_from is not None
        assert manifest.reused_from.job_uuid == jobs[name]
        assert "adopted from butido" in manifest.reused_from.reason
    (low_artifact,) = first.reused["low-1"].artifacts
    assert low_artifact.submit_uuid == old_submit and low_artifact.path == "low-1.pkg"
    (top_artifact,) = first.reused["top-1"].artifacts
    assert top_artifact.store == "default"

    with engine.connect() as conn:
        recorded = {
            str(r.uuid): r
            for r in conn.execute(sa.select(s.jobs.c.uuid, s.jobs.c.state, s.jobs.c.build_key))
        }
        hashes = conn.execute(
            sa.select(s.artifacts.c.path, s.artifacts.c.sha256, s.artifacts.c.size).where(
                s.artifacts.c.path.in_(["low-1.pkg", "top-1.pkg"])
            )
        ).all()
    for name in ("low", "top"):
        assert recorded[jobs[name]].state == s.SUCCESS
        assert recorded[jobs[name]].build_key == first.reused[f"{name}-1"].build_key
    assert recorded[jobs["other"]].build_key is None and recorded[jobs["other"]].state is None
    assert all(sha and size == 2 for _, sha, size in hashes)

    # the next run finds them by their build key
    second = plan_run(engine, repo)
    assert sorted(second.reused) == ["low-1", "top-1"]
    for manifest in second.reused.values():
        assert manifest.reused_from is not None
        assert manifest.reused_from.reason.startswith("build key")


def test_a_different_environment_or_missing_artifacts_rebuild(adopted) -> None:
    engine, repo, _jobs, old_submit = adopted
    assert plan_run(engine, repo, (("FOO", "2"),)).reused == {}
    staging = Path(repo.config.staging) / old_submit
    (staging / "low-1.pkg").unlink()
    assert plan_run(engine, repo).reused == {}  # low's artifact is gone, top waits for it
