"""Recording a build: submit, job start and finish, log, artifacts, inputs, reuse,
retries, orphan repair, and a lost connection."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace

import pytest
import sqlalchemy as sa

from airflow_butido.db import records
from airflow_butido.db import schema as s
from airflow_butido.db.engine import make_engine
from airflow_butido.db.queries import (
    delivered_artifacts,
    finished_jobs,
    job_detail,
    submit_detail,
    table_counts,
)
from airflow_butido.errors import InfrastructureError
from airflow_butido.report import Finished

from .builds import inputs_for, record_build, record_submit

pytestmark = pytest.mark.postgres


def test_a_complete_build_is_recorded_with_everything_it_needs(engine, tmp_path) -> None:
    dep = record_build(engine, staging=tmp_path, package=("b", "2"))
    submit = record_submit(engine)
    job = str(uuid.uuid4())
    inputs = inputs_for(dependency_artifacts=(dep.artifacts[0].sha256,))
    records.record_job_start(
        engine, uuid=job, submit_uuid=submit, package_name="a", package_version="1",
        image="debian:bookworm", endpoint="ep1", container_id="abc123",
        script=inputs.script, env={"FLAVOR": "fast", "X": "1"}, build_key="k" * 64,
        build_key_inputs=inputs, image_digest="sha256:1", dag_id="d", run_id="r1",
        try_number=1,
    )  # fmt: skip
    running = job_detail(engine, job)
    assert running is not None and running.state == "running" and running.log == ""
    log = tmp_path / "log.bin"
    log.write_bytes(b"line one\n\x00nul removed\n\xffbad utf8\n#BUTIDO:STATE:OK\n")
    with open(log, "rb") as fh:
        records.record_job_finish(engine, uuid=job, state="success", exit_status=0, log=fh)
    records.record_artifacts(engine, job, [records.ArtifactRecord("a-1.pkg", "e" * 64, 3)])
    missing = records.record_inputs(
        engine, job, [records.InputRef(dep.artifacts[0].path, dep.artifacts[0].sha256),
                      records.InputRef("gone.pkg", "0" * 64)],
    )  # fmt: skip
    assert missing == [records.InputRef("gone.pkg", "0" * 64)]

    done = job_detail(engine, job)
    assert done is not None
    assert done.state == "success" and done.exit_status == 0
    assert done.log == "line one\nnul removed\n\ufffdbad utf8\n#BUTIDO:STATE:OK\n"
    assert done.endpoint == "ep1" and done.container == "abc123"
    assert done.env == (("FLAVOR", "fast"), ("X", "1"))
    assert done.artifacts == (("a-1.pkg", "e" * 64, 3),)
    assert done.inputs == ("b-2.pkg",)
    assert done.dag_id == "d" and done.run_id == "r1" and done.try_number == 1
    assert done.started_at is not None and done.finished_at >= done.started_at
    assert '"dependency_artifacts":["' + dep.artifacts[0].sha256 in done.build_key_inputs

    detail = submit_detail(engine, submit)
    assert detail is not None and detail.submit.dirty is True
    assert detail.env == (("FLAVOR", "fast"),)
    assert detail.dag_id == "d"


def test_inputs_are_found_by_producing_job_path_and_hash_in_batches(engine, monkeypatch) -> None:
    """Each ref names the job that produced it: found by that job, its path and hash,
    whatever the case of the uuid; a wrong hash or an unknown job is missing; a ref
    without a job is found by path and hash. Batches of 2 make three lookups of 5 jobs."""
    monkeypatch.setattr(records, "JOB_BATCH", 2)
    built = [
        record_build(
            engine, package=(name, "1"), contents={f"{name}.pkg": name.encode(), "doc": b"d"}
        )
        for name in ("b", "c", "d", "e", "f")
    ]
    job = record_build(engine, package=("a", "1")).job_uuid
    sha = {(b.job_uuid, x.path): x.sha256 for b in built for x in b.artifacts}
    refs = [records.InputRef(f"{n}.pkg", sha[(b.job_uuid, f"{n}.pkg")], b.job_uuid)
            for n, b in zip("bcdef", built, strict=True)]  # fmt: skip
    refs.append(records.InputRef("doc", sha[(built[1].job_uuid, "doc")], built[1].job_uuid.upper()))
    refs.append(refs[0])  # twice: linked once
    wrong = records.InputRef("b.pkg", "0" * 64, built[0].job_uuid)
    unknown = records.InputRef("b.pkg", refs[0].sha256, str(uuid.uuid4()))
    by_path = records.InputRef("e.pkg", refs[3].sha256)
    missing = records.record_inputs(engine, job, [*refs, wrong, unknown, by_path])
    assert missing == [wrong, unknown]
    detail = job_detail(engine, job)
    assert detail is not None
    assert sorted(detail.inputs) == ["b.pkg", "c.pkg", "d.pkg", "doc", "e.pkg", "f.pkg"]
    with engine.connect() as conn:
        links = conn.execute(sa.select(sa.func.count()).select_from(s.job_inputs)).scalar()
    assert links == 6  # e.pkg by job and by path is one artifact


def test_a_task_retry_does_not_duplicate_rows(engine) -> None:
    built = record_build(engine)
    counts = table_counts(engine)
    record_submit(engine, submit_uuid=built.submit_uuid)
    for attempt in (2, 3):
        records.record_job_start(
            engine, uuid=built.job_uuid, submit_uuid=built.submit_uuid, package_name="a",
            package_version="1", image="debian:bookworm", endpoint="local",
            container_id=f"retry{attempt}", script="#!/bin/bash\n", env={"FLAVOR": "fast"},
            try_number=attempt,
        )  # fmt: skip
        records.record_artifacts(engine, built.job_uuid, built.artifacts)
    assert table_counts(engine) == counts
    retried = job_detail(engine, built.job_uuid)
    assert retried is not None
    assert retried.state == "running" and retried.try_number == 3
    assert retried.container == "retry3"


def test_a_reused_job_records_what_it_reused_and_why(engine) -> None:
    original = record_build(engine)
    submit = record_submit(engine, run_id="r2")
    job = str(uuid.uuid4())
    records.record_reused_job(
        engine, uuid=job, submit_uuid=submit, package_name="a", package_version="1",
        image="debian:bookworm", reused_job_uuid=original.job_uuid,
        reason="same build key", build_key=original.key, dag_id="d", run_id="r2",
    )  # fmt: skip
    reused = job_detail(engine, job)
    assert reused is not None
    assert reused.state == "reused" and reused.reused_from == original.job_uuid
    assert reused.reuse_reason == "same build key" and reused.endpoint == s.REUSED_ENDPOINT
    assert reused.container == "" and reused.artifacts == ()


def a_run_with_a_retry_a_failure_and_a_reuse(engine):
    """A submit in which app built, lib built on its second try, bad failed and old was
    reused from an earlier submit's build; and a build of another submit."""
    earlier = record_build(engine, package=("old", "1"), contents={"old.pkg": b"o"})
    submit = record_submit(engine, package=("app", "1"), run_id="r2")
    app = {"app-1.pkg": b"a", "sub/app-doc.pkg": b"d"}
    app_build = record_build(
        engine, package=("app", "1"), submit_uuid=submit, contents=app, run_id="r2"
    )
    # a retried package: its first try failed, the second built
    record_build(engine, package=("lib", "2"), submit_uuid=submit, state="failed", run_id="r2")
    lib_build = record_build(
        engine, package=("lib", "2"), submit_uuid=submit, contents={"lib.pkg": b"l"}, run_id="r2"
    )
    record_build(engine, package=("bad", "1"), submit_uuid=submit, state="failed", run_id="r2")
    records.record_reused_job(
        engine, uuid=str(uuid.uuid4()), submit_uuid=submit, package_name="old",
        package_version="1", image="debian:bookworm", reused_job_uuid=earlier.job_uuid,
        reason="same build key", dag_id="d", run_id="r2",
    )  # fmt: skip
    record_build(engine, package=("elsewhere", "1"), run_id="r3")  # another submit
    return submit, {"app": app_build, "lib": lib_build, "old": earlier}


def test_the_finished_jobs_of_a_submit_are_read_for_its_report_in_a_few_queries(
    engine, monkeypatch
) -> None:
    """What the report task reads instead of one manifest per package: per package of the
    submit its newest successful or reused job, a reused one with the artifacts of the
    build it reused; failed jobs and other submits are not read."""
    from airflow_butido.db import queries

    submit, _ = a_run_with_a_retry_a_failure_and_a_reuse(engine)
    monkeypatch.setattr(queries, "FINISHED_BATCH", 1)  # one artifact query per job
    assert finished_jobs(engine, submit) == {
        ("app", "1"): Finished(False, ("app-1.pkg", "sub/app-doc.pkg")),
        ("lib", "2"): Finished(False, ("lib.pkg",)),
        ("old", "1"): Finished(True, ("old.pkg",)),
    }
    assert finished_jobs(engine, str(uuid.uuid4())) == {}


@pytest.mark.parametrize("batch", [500, 2])
def test_what_a_package_receives_is_read_from_its_dependencies_jobs(
    engine, monkeypatch, batch: int
) -> None:
    """The artifacts of the given packages in the run: the newest successful try's, a
    reused package's from the build it reused (that submit's), with hash and size; None
    for a package the run did not build or reuse, rather than fewer artifacts."""
    from airflow_butido.db import queries

    monkeypatch.setattr(queries, "FINISHED_BATCH", batch)  # 2: a package per query
    submit, built = a_run_with_a_retry_a_failure_and_a_reuse(engine)
    wanted = [("lib", "2"), ("old", "1"), ("app", "1")]
    refs = delivered_artifacts(engine, submit, wanted)
    assert refs is not None
    got = {(r.path, r.sha256, r.size, r.submit_uuid, r.job_uuid) for r in refs}
    expected = {
        (a.path, a.sha256, a.size, b.submit_uuid, b.job_uuid)
        for b in built.values()
        for a in b.artifacts
    }
    assert got == expected and len(refs) == 4
    assert all(r.store is None for r in refs)
    assert delivered_artifacts(engine, submit, [("app", "1"), ("bad", "1")]) is None
    assert delivered_artifacts(engine, submit, [("elsewhere", "1")]) is None
    assert delivered_artifacts(engine, submit, []) == []


def test_an_artifact_recorded_without_its_hash_is_not_delivered_from_the_record(engine) -> None:
    """butido 0.5 recorded paths only: such an artifact comes from the manifest instead."""
    built = record_build(engine, package=("lib", "2"))
    with engine.begin() as conn:
        conn.execute(sa.update(s.artifacts).values(sha256=None))
    assert delivered_artifacts(engine, built.submit_uuid, [("lib", "2")]) is None


def test_a_plan_records_a_thousand_reused_jobs_at_once_and_again_on_a_retry(engine) -> None:
    """Batched (more rows than one statement takes): every job, its env and origin; a
    retried plan recording the same jobs resets them instead of adding rows."""
    original = record_build(engine)
    submit = record_submit(engine, run_id="r3")
    jobs = [
        records.ReusedJob(
            str(uuid.uuid4()),
            submit,
            f"p{i:04d}",
            "1",
            "debian:bookworm",
            original.job_uuid,
            f"reason {i}",
            env={"FLAVOR": "x", "N": str(i % 3)},
            build_key=original.key,
            dag_id="d",
            run_id="r3",
            try_number=1,
        )  # fmt: skip
        for i in range(1200)
    ]
    ids = records.record_reused_jobs(engine, jobs)
    assert len(set(ids)) == 1200
    again = records.record_reused_jobs(engine, [replace(j, reason="again") for j in jobs])
    assert again == ids
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(s.jobs.c.id, s.jobs.c.state, s.jobs.c.reuse_reason).where(
                s.jobs.c.id.in_(ids)
            )
        ).all()
        links = conn.execute(
            sa.select(sa.func.count()).select_from(s.job_envs).where(s.job_envs.c.job_id.in_(ids))
        ).scalar()
    assert len(rows) == 1200 and {r.state for r in rows} == {"reused"}
    assert {r.reuse_reason for r in rows} == {"again"}
    assert links == 2400
    detail = job_detail(engine, jobs[1199].uuid)
    assert detail is not None and detail.reused_from == original.job_uuid
    assert dict(detail.env) == {"FLAVOR": "x", "N": "2"}


def test_orphaned_running_jobs_of_an_ended_run_are_marked_failed(engine) -> None:
    finished = record_build(engine, run_id="r9")
    submit = finished.submit_uuid
    stuck = str(uuid.uuid4())
    records.record_job_start(
        engine, uuid=stuck, submit_uuid=submit, package_name="c", package_version="3",
        image="debian:bookworm", endpoint="local", container_id="x", script="",
        dag_id="d", run_id="r9",
    )  # fmt: skip
    other_run = str(uuid.uuid4())
    records.record_job_start(
        engine, uuid=other_run, submit_uuid=submit, package_name="c", package_version="3",
        image="debian:bookworm", endpoint="local", container_id="y", script="",
        dag_id="d", run_id="r10",
    )  # fmt: skip
    assert records.mark_orphaned_jobs(engine, "d", "r9") == 1
    assert records.mark_orphaned_jobs(engine, "d", "r9") == 0
    orphan = job_detail(engine, stuck)
    assert orphan is not None and orphan.state == "failed" and orphan.failure_class == "orphaned"
    assert job_detail(engine, finished.job_uuid).state == "success"
    assert job_detail(engine, other_run).state == "running"


def test_a_100_mb_log_is_stored_whole(engine, tmp_path) -> None:
    size = 100 * 1024 * 1024
    built = record_build(engine)
    line = b"0123456789abcdef" * 7 + b"\x00\n"  # 114 bytes, one NUL each
    log = tmp_path / "big.log"
    with open(log, "wb") as fh:
        for _ in range(size // len(line)):
            fh.write(line)
    records.record_job_finish(engine, uuid=built.job_uuid, state="failed", exit_status=1, log=log)
    lines = size // len(line)
    from airflow_butido.db.queries import iter_job_log

    with engine.connect() as conn:
        job_id, log_text = conn.execute(
            sa.select(s.jobs.c.id, s.jobs.c.log_text).where(s.jobs.c.uuid == built.job_uuid)
        ).one()
        length = 0
        first = None
        for chunk in iter_job_log(conn, job_id, log_text):
            first = chunk if first is None else first
            length += len(chunk)
    assert length == lines * (len(line) - 1)
    assert first is not None and first.startswith((line[:-2] + b"\n").decode())
    # jobs.log_text, read by butido, holds the log's end, from a line start
    assert log_text.startswith(records.LOG_CUT_MARKER + "\n" + (line[:-2] + b"\n").decode())
    assert len(log_text) <= records.LOG_TEXT_MAX_CHARS + len(records.LOG_CUT_MARKER) + 1


def test_an_unreachable_database_fails_with_an_infrastructure_error() -> None:
    engine = make_engine("postgresql+psycopg2://butido:butido@127.0.0.1:1/butido?connect_timeout=2")
    with pytest.raises(InfrastructureError, match="127.0.0.1:1"):
        record_submit(engine)


def test_artifact_hashes_are_recorded_for_reuse_verification(engine) -> None:
    data = b"contents"
    built = record_build(engine, contents={"sub/dir/x.deb": data})
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(s.artifacts.c.path, s.artifacts.c.sha256, s.artifacts.c.size)
        ).one()
    assert tuple(row) == ("sub/dir/x.deb", hashlib.sha256(data).hexdigest(), len(data))
    assert built.artifacts[0].sha256 == row.sha256
