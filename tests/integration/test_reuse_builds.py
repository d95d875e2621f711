"""Reuse in the build path: ``PackageBuildOperator.execute()`` with a recorded plan, on the
real Docker engine and a real build database (PostgreSQL and SQLite).

The packages write plain text, so identical inputs give identical bytes:

* ``lib 1``: its patch without ``#`` lines, then its source;
* ``app 1``: depends on ``lib 1``, copies lib's artifact and adds a line;
* ``other 1``: depends on nothing.

Containers are counted with Docker's event stream, filtered by the run's submit label.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa

from airflow_butido.build_key import BuildKeyInputs, build_key
from airflow_butido.db import schema
from airflow_butido.db.records import record_submit
from tests.integration.test_jobs import pkg_toml, write_repo
from tests.integration.test_operator import context_for

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

ORDER = ("lib-1", "other-1", "app-1")
DEPENDENCIES = {"lib-1": [], "other-1": [], "app-1": ["lib-1"]}
SOURCE = b"lib source v1\n"
PATCH = "# a comment\nlib patched\n"


def lib_toml(source: bytes) -> str:
    digest = hashlib.sha256(source).hexdigest()
    return pkg_toml(
        "lib",
        "1",
        """
        set -e
        {{phase "build"}}
        mkdir /outputs
        grep -v '^#' /patches/lib/fix.patch > /outputs/lib-1.pkg
        cat /inputs/src.source >> /outputs/lib-1.pkg
        {{state "OK"}}
        """,
        patches=("fix.patch",),
        extra=(
            '[environment]\nPKGVAR = "lib"\n\n'
            '[sources.src]\nurl = "https://example.invalid/lib"\nhash.type = "sha256"\n'
            f'hash.hash = "{digest}"'
        ),
    )


def set_source(repo: Path, source: bytes) -> None:
    (repo / "sources" / "lib-1").mkdir(parents=True, exist_ok=True)
    (repo / "sources" / "lib-1" / "src.source").write_bytes(source)
    (repo / "lib" / "pkg.toml").write_text(lib_toml(source))


@pytest.fixture
def repo(tmp_path: Path, build_image: str) -> Path:
    root = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "lib": lib_toml(SOURCE),
            "app": pkg_toml(
                "app",
                "1",
                "set -e\nmkdir /outputs\ncat /inputs/lib-1.pkg > /outputs/app-1.pkg\n"
                "echo app >> /outputs/app-1.pkg",
            ).replace("build = []", 'build = ["lib =1"]'),
            "other": pkg_toml("other", "1", "mkdir /outputs; echo other > /outputs/other-1.pkg"),
        },
    )
    (root / "lib" / "fix.patch").write_text(PATCH)
    set_source(root, SOURCE)
    return root


@dataclass
class Run:
    submit: str
    manifests: dict[str, dict[str, Any]]


def make_ops(repo: Path, db_url: str, **kw: Any) -> tuple[Any, dict[str, Any]]:
    from airflow.sdk import DAG

    from airflow_butido.operators.build import PackageBuildOperator

    with DAG(dag_id=f"reuse_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        ops = {
            task_id: PackageBuildOperator(
                task_id=task_id,
                repo_path=repo,
                package_name=task_id.split("-")[0],
                package_version="1",
                image="test",
                plan_task_id="plan",
                database_url=db_url,
                **kw,
            )
            for task_id in ORDER
        }
        ops["lib-1"] >> ops["app-1"]
    return dag, ops


def plan_for(engine: Any, image: str, *, force: bool = False) -> dict[str, Any]:
    """What the plan task does: record the submit, return the plan (no reuse up front, so
    that the package tasks' own reuse is what is tested here)."""
    from airflow_butido.plan import Plan

    submit = str(uuid.uuid4())
    record_submit(
        engine,
        uuid=submit,
        package_name="app",
        package_version="1",
        image=image,
        repo_commit="0" * 40,
    )
    return Plan(
        submit_uuid=submit,
        image=image,
        env=(("FOO", "x"),),
        force_rebuild=force,
        requested=("app-1",),
        packages=ORDER,
        labels={t: f"{t.split('-')[0]} 1" for t in ORDER},
        edges=tuple((t, d) for t, deps in DEPENDENCIES.items() for d in deps),
    ).to_json()


def run_all(
    repo: Path, db_url: str, engine: Any, image: str, *, force: bool = False, **kw: Any
) -> Run:
    """Every package task of one DAG run, dependencies first, XCom in a dict."""
    dag, ops = make_ops(repo, db_url, **kw)
    plan = plan_for(engine, image, force=force)
    xcoms: dict[str, Any] = {"plan": plan}
    run_id = f"manual__{plan['submit_uuid'][:8]}"
    for task_id in ORDER:
        manifest = ops[task_id].execute(context_for(dag, xcoms, run_id=run_id))
        json.dumps(manifest)  # XCom-safe
        xcoms[task_id] = manifest
    return Run(plan["submit_uuid"], {t: xcoms[t] for t in ORDER})


def containers_created(docker_client: Any, submit: str, since: float) -> int:
    """Containers created for ``submit`` since ``since`` (Docker's event stream)."""
    events = docker_client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"io.butido.submit={submit}"},
    )
    return sum(1 for _ in events)


def jobs_of(engine: Any, submit: str) -> dict[str, Any]:
    j, p, sub = schema.jobs, schema.packages, schema.submits
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(j, p.c.name)
            .join(p, p.c.id == j.c.package_id)
            .join(sub, sub.c.id == j.c.submit_id)
            .where(sub.c.uuid == submit)
        ).all()
    return {row.name: row for row in rows}


def job_uuid_by_id(engine: Any, job_id: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(sa.select(schema.jobs.c.uuid).where(schema.jobs.c.id == job_id)).scalar()
        )


def states(run: Run) -> dict[str, bool]:
    return {task_id: m["outcome"] == "reused" for task_id, m in run.manifests.items()}


def test_a_build_is_recorded_completely(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    started = time.time()
    run = run_all(repo, db_url, engine, build_image)
    assert states(run) == {"lib-1": False, "other-1": False, "app-1": False}
    assert containers_created(docker_client, run.submit, started) == 3

    jobs = jobs_of(engine, run.submit)
    assert set(jobs) == {"lib", "app", "other"}
    lib, app = jobs["lib"], jobs["app"]
    assert lib.state == "success" and lib.exit_status == 0
    assert lib.uuid == run.manifests["lib-1"]["job_uuid"]
    assert "grep -v '^#' /patches/lib/fix.patch" in lib.script_text
    assert "#BUTIDO:PHASE:build" in lib.log_text and "#BUTIDO:STATE:OK" in lib.log_text
    assert lib.container_hash and lib.started_at and lib.finished_at
    assert lib.build_key == run.manifests["lib-1"]["build_key"]
    assert len(lib.build_key) == 64
    assert lib.image_digest == docker_client.images.get(build_image).id
    inputs = json.loads(lib.build_key_inputs)
    assert inputs["patch_hashes"] == {"lib/fix.patch": hashlib.sha256(PATCH.encode()).hexdigest()}
    assert inputs["source_hashes"] == {"src": "sha256:" + hashlib.sha256(SOURCE).hexdigest()}
    assert inputs["environment"] == {"FOO": "x", "PKGVAR": "lib"}
    assert inputs["image_digest"] == lib.image_digest
    lib_bytes = b"lib patched\n" + SOURCE
    assert json.loads(app.build_key_inputs)["dependency_artifacts"] == [
        hashlib.sha256(lib_bytes).hexdigest()
    ]

    with engine.connect() as conn:
        env = conn.execute(
            sa.select(schema.envvars.c.name, schema.envvars.c.value)
            .join(schema.job_envs, schema.job_envs.c.env_id == schema.envvars.c.id)
            .where(schema.job_envs.c.job_id == lib.id)
        ).all()
        artifacts = conn.execute(
            sa.select(
                schema.artifacts.c.path, schema.artifacts.c.sha256, schema.artifacts.c.size
            ).where(schema.artifacts.c.job_id == lib.id)
        ).all()
        consumed = conn.execute(
            sa.select(schema.artifacts.c.path, schema.artifacts.c.job_id)
            .join(schema.job_inputs, schema.job_inputs.c.artifact_id == schema.artifacts.c.id)
            .where(schema.job_inputs.c.job_id == app.id)
        ).all()
    assert sorted(tuple(e) for e in env) == [("FOO", "x"), ("PKGVAR", "lib")]
    assert [tuple(a) for a in artifacts] == [
        ("lib-1.pkg", hashlib.sha256(lib_bytes).hexdigest(), len(lib_bytes))
    ]
    assert [tuple(c) for c in consumed] == [("lib-1.pkg", lib.id)]
    assert (repo / "staging" / run.submit / "app-1.pkg").read_bytes() == lib_bytes + b"app\n"


def test_a_second_run_without_changes_reuses_everything_and_starts_no_container(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    from airflow_butido.stores import find_artifact

    first = run_all(repo, db_url, engine, build_image)
    started = time.time()
    second = run_all(repo, db_url, engine, build_image)
    assert states(second) == {"lib-1": True, "other-1": True, "app-1": True}
    assert containers_created(docker_client, second.submit, started) == 0

    jobs, earlier = jobs_of(engine, second.submit), jobs_of(engine, first.submit)
    for name in ("lib", "app", "other"):
        job = jobs[name]
        assert job.state == "reused"
        assert job.container_hash == "" and job.log_text == ""
        assert job_uuid_by_id(engine, job.reused_from_job_id) == earlier[name].uuid
        assert earlier[name].uuid in job.reuse_reason
        assert job.build_key == earlier[name].build_key
        assert job.script_text == earlier[name].script_text

    # The manifests point at the earlier build's files, and dependents find them there.
    app = second.manifests["app-1"]
    assert app["reused_from"]["job_uuid"] == earlier["app"].uuid
    assert app["submit_uuid"] == second.submit
    for manifest in second.manifests.values():
        for art in manifest["artifacts"]:
            assert art["submit_uuid"] == first.submit
            found = find_artifact(
                art["path"], art["sha256"], [repo / "staging" / art["submit_uuid"]], []
            )
            assert found == repo / "staging" / first.submit / art["path"]
    assert app["inputs"][0]["submit_uuid"] == first.submit
    assert not (repo / "staging" / second.submit).exists()
    with engine.connect() as conn:
        consumed = (
            conn.execute(
                sa.select(schema.job_inputs.c.artifact_id).where(
                    schema.job_inputs.c.job_id == jobs["app"].id
                )
            )
            .scalars()
            .all()
        )
        lib_artifact = conn.execute(
            sa.select(schema.artifacts.c.id).where(schema.artifacts.c.job_id == earlier["lib"].id)
        ).scalar()
    assert consumed == [lib_artifact]


def test_a_missing_artifact_file_means_a_rebuild(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    first = run_all(repo, db_url, engine, build_image)
    (repo / "staging" / first.submit / "other-1.pkg").write_text("tampered\n")
    second = run_all(repo, db_url, engine, build_image)
    assert states(second) == {"lib-1": True, "other-1": False, "app-1": True}
    assert (repo / "staging" / second.submit / "other-1.pkg").read_text() == "other\n"


def test_released_artifacts_are_reused_after_the_staging_store_was_cleaned(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    first = run_all(repo, db_url, engine, build_image)
    store = repo / "releases" / "default"
    store.mkdir(parents=True, exist_ok=True)
    for path in (repo / "staging" / first.submit).iterdir():
        path.rename(store / path.name)
    started = time.time()
    second = run_all(repo, db_url, engine, build_image)
    assert states(second) == {"lib-1": True, "other-1": True, "app-1": True}
    assert containers_created(docker_client, second.submit, started) == 0
    lib = second.manifests["lib-1"]["artifacts"][0]
    assert (lib["store"], lib["submit_uuid"]) == ("default", first.submit)
    # app found lib's artifact in the release store (its key is made of lib's sha256)
    assert second.manifests["app-1"]["inputs"][0]["store"] == "default"


def test_a_changed_patch_rebuilds_the_package_and_dependents_only_when_its_output_changed(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    first = run_all(repo, db_url, engine, build_image)

    # A comment-only change: lib is rebuilt, to identical bytes, so the wave stops there.
    (repo / "lib" / "fix.patch").write_text("# another comment\nlib patched\n")
    started = time.time()
    second = run_all(repo, db_url, engine, build_image)
    assert states(second) == {"lib-1": False, "other-1": True, "app-1": True}
    assert containers_created(docker_client, second.submit, started) == 1
    lib_first = first.manifests["lib-1"]["artifacts"][0]
    lib_second = second.manifests["lib-1"]["artifacts"][0]
    assert lib_second["sha256"] == lib_first["sha256"]
    assert lib_second["submit_uuid"] == second.submit
    assert (
        second.manifests["app-1"]["reused_from"]["job_uuid"] == first.manifests["app-1"]["job_uuid"]
    )
    # app's key is made of lib's output, which did not change
    assert second.manifests["app-1"]["build_key"] == first.manifests["app-1"]["build_key"]
    assert second.manifests["lib-1"]["build_key"] != first.manifests["lib-1"]["build_key"]

    # A real change: lib's output differs, so app is rebuilt too; other is still reused.
    (repo / "lib" / "fix.patch").write_text("# another comment\nlib patched again\n")
    started = time.time()
    third = run_all(repo, db_url, engine, build_image)
    assert states(third) == {"lib-1": False, "other-1": True, "app-1": False}
    assert containers_created(docker_client, third.submit, started) == 2
    staged = repo / "staging" / third.submit / "app-1.pkg"
    assert staged.read_bytes() == b"lib patched again\n" + SOURCE + b"app\n"


def test_a_changed_source_rebuilds_the_package_and_its_dependents(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    from airflow_butido.build_key import compare_inputs

    first = run_all(repo, db_url, engine, build_image)
    set_source(repo, b"lib source v2\n")
    second = run_all(repo, db_url, engine, build_image)
    assert states(second) == {"lib-1": False, "other-1": True, "app-1": False}
    assert (repo / "staging" / second.submit / "app-1.pkg").read_bytes() == (
        b"lib patched\nlib source v2\napp\n"
    )
    # The recorded inputs say why: only the source hash differs from the first build.
    now = json.loads(jobs_of(engine, second.submit)["lib"].build_key_inputs)
    before = json.loads(jobs_of(engine, first.submit)["lib"].build_key_inputs)
    differences = compare_inputs(before, now)
    assert len(differences) == 1 and differences[0].startswith("source_hashes: src changed")


def test_force_rebuild_builds_everything_anyway(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    first = run_all(repo, db_url, engine, build_image)
    started = time.time()
    forced = run_all(repo, db_url, engine, build_image, force=True)
    assert states(forced) == {"lib-1": False, "other-1": False, "app-1": False}
    assert containers_created(docker_client, forced.submit, started) == 3
    assert forced.manifests["app-1"]["build_key"] == first.manifests["app-1"]["build_key"]
    assert {j.state for j in jobs_of(engine, forced.submit).values()} == {"success"}

    # The operator argument forces too, without the plan asking for it.
    by_argument = run_all(repo, db_url, engine, build_image, force_rebuild=True)
    assert states(by_argument) == {"lib-1": False, "other-1": False, "app-1": False}


def test_concurrent_runs_build_a_shared_key_once(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    runs = 3
    started = time.time()
    submits: list[str] = []
    manifests: list[Mapping[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(runs)

    def one_run() -> None:
        try:
            dag, ops = make_ops(repo, db_url)
            plan = plan_for(engine, build_image)
            with lock:
                submits.append(plan["submit_uuid"])
            barrier.wait(30)
            context = context_for(dag, {"plan": plan}, run_id=f"manual__{plan['submit_uuid']}")
            manifest = ops["lib-1"].execute(context)
            with lock:
                manifests.append(manifest)
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors, errors
    assert sorted(m["outcome"] == "reused" for m in manifests) == [False] + [True] * (runs - 1)
    assert sum(containers_created(docker_client, s, started) for s in submits) == 1
    builder = next(m for m in manifests if m["outcome"] != "reused")
    assert {m["reused_from"]["job_uuid"] for m in manifests if m["outcome"] == "reused"} == {
        builder["job_uuid"]
    }
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(schema.build_claims)).scalar() == 0
        )


def find_artifact_cli(repo: Path, db_url: str, *args: str) -> tuple[int, str]:
    from airflow_butido.cli import main as cli_main

    out = io.StringIO()
    with (
        mock.patch.object(cli_main, "COMMAND_MODULES", ("airflow_butido.cli.find_artifact",)),
        redirect_stdout(out),
    ):
        code = cli_main.main(
            ["--repo", str(repo), "find-artifact", *args, "-I", "test", "--database-url", db_url]
        )
    return code, out.getvalue()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_find_artifact_computes_the_key_of_the_build_path(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    dag, ops = make_ops(repo, db_url)
    plan = plan_for(engine, build_image)
    plan["env"] = {}
    xcoms: dict[str, Any] = {"plan": plan}
    for task_id in ORDER:
        xcoms[task_id] = ops[task_id].execute(context_for(dag, xcoms))
    submit = plan["submit_uuid"]

    code, out = find_artifact_cli(repo, db_url, "app", "1")
    assert (code, out) == (0, f"[unknown] {repo / 'staging' / submit / 'app-1.pkg'}\n")

    (repo / "lib" / "fix.patch").write_text("# a comment\nchanged\n")
    code, out = find_artifact_cli(repo, db_url, "lib", "1")
    assert code == 1
    assert "patch_hashes: lib/fix.patch changed" in out


def test_run_job_with_a_database_cache_reuses_without_the_operator(
    repo: Path, engine: Any, build_image: str, docker_client: Any
) -> None:
    from airflow_butido.db.build_cache import DatabaseBuildCache
    from airflow_butido.db.recorder import DatabaseRecorder
    from airflow_butido.endpoints import DatabaseSlots
    from airflow_butido.jobs import run_job
    from tests.integration.test_jobs import request_for

    cache = DatabaseBuildCache(engine, repo / "staging", [repo / "releases" / "default"])
    results = []
    for _ in range(2):
        submit = plan_for(engine, build_image)["submit_uuid"]
        request = request_for(repo, "other", "1", submit_uuid=submit)
        results.append(
            run_job(
                request, slots=DatabaseSlots(engine), recorder=DatabaseRecorder(engine), cache=cache
            )
        )
    built, reused = results
    assert (built.state, reused.state) == ("success", "reused")
    assert reused.reused_from is not None and reused.reused_from.job_uuid == built.job_uuid
    assert reused.container_id == "" and reused.build_key == built.build_key
    assert reused.artifacts == built.artifacts
    assert reused.staging_dir == built.staging_dir  # the files stay where they were built

    # Cleaned staging, but released: the release store copy is reused.
    released = repo / "releases" / "default" / "other-1.pkg"
    released.parent.mkdir(parents=True, exist_ok=True)
    (built.staging_dir / "other-1.pkg").rename(released)
    submit = plan_for(engine, build_image)["submit_uuid"]
    again = run_job(
        request_for(repo, "other", "1", submit_uuid=submit),
        slots=DatabaseSlots(engine),
        recorder=DatabaseRecorder(engine),
        cache=cache,
    )
    assert again.state == "reused" and again.reused_from.job_uuid == built.job_uuid


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_build_claim_is_renewed_while_the_build_runs(engine: Any, tmp_path: Path) -> None:
    from airflow_butido.db import reuse
    from airflow_butido.db.build_cache import DatabaseBuildCache
    from airflow_butido.jobs import BuildKey

    cache = DatabaseBuildCache(engine, tmp_path, claim_ttl_seconds=1.0)
    inputs = BuildKeyInputs(script="s", phases=("build",), image_digest="sha256:x")
    key = BuildKey(build_key(inputs), inputs)
    assert cache.claim_or_reuse("p", "1", key, "job-1") is None
    time.sleep(2.5)  # beyond the TTL: only the heartbeat keeps the claim alive
    assert not reuse.claim_build_key(engine, key.key, "job-2", ttl_seconds=1.0)
    cache.release(key, "job-1")
    assert reuse.claim_holder(engine, key.key) is None
    assert reuse.claim_build_key(engine, key.key, "job-2")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_a_plan_the_run_conf_flag_forces_a_rebuild(
    repo: Path, db_url: str, engine: Any, build_image: str, docker_client: Any
) -> None:
    first = run_all(repo, db_url, engine, build_image)
    dag, ops = make_ops(repo, db_url, env={"FOO": "x"})  # the planned runs' env

    def other(conf: dict[str, Any]) -> dict[str, Any]:
        context = context_for(dag, {}, run_id=f"manual__{uuid.uuid4().hex[:8]}")
        context["dag_run"] = mock.Mock(conf=conf)
        return ops["other-1"].execute(context)

    reused = other({})
    assert reused["outcome"] == "reused"
    assert reused["reused_from"]["job_uuid"] == first.manifests["other-1"]["job_uuid"]
    forced = other({"force_rebuild": True})
    assert forced["outcome"] == "built"
    assert (repo / "staging" / forced["submit_uuid"] / "other-1.pkg").read_text() == "other\n"
