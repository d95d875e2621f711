"""Reuse lookup against real files, explanations, and one build per key under
concurrency."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid

import pytest

from airflow_butido.build_key import build_key
from airflow_butido.db import records, reuse
from airflow_butido.db.queries import list_jobs

from .builds import inputs_for, record_build, record_submit

pytestmark = pytest.mark.postgres


def test_find_reusable_returns_the_build_whose_files_are_present(engine, tmp_path) -> None:
    built = record_build(engine, staging=tmp_path)
    exists = reuse.store_checker(tmp_path)
    found = reuse.find_reusable(engine, "a", "1", built.key, exists)
    assert found is not None
    assert found.job_uuid == built.job_uuid and found.submit_uuid == built.submit_uuid
    assert [a.path for a in found.artifacts] == ["a-1.pkg"]
    assert found.artifacts[0].staging_path == f"{built.submit_uuid}/a-1.pkg"
    # other key, other version, other package: nothing
    assert reuse.find_reusable(engine, "a", "1", "0" * 64, exists) is None
    assert reuse.find_reusable(engine, "a", "2", built.key, exists) is None
    assert reuse.find_reusable(engine, "b", "1", built.key, exists) is None


def test_a_missing_or_corrupt_artifact_file_prevents_reuse(engine, tmp_path) -> None:
    built = record_build(engine, staging=tmp_path)
    exists = reuse.store_checker(tmp_path)
    artifact = tmp_path / built.submit_uuid / "a-1.pkg"
    artifact.write_bytes(b"tampered")
    assert reuse.find_reusable(engine, "a", "1", built.key, exists) is None
    artifact.unlink()
    assert reuse.find_reusable(engine, "a", "1", built.key, exists) is None


def test_a_released_copy_is_found_when_staging_was_cleaned(engine, tmp_path) -> None:
    staging, store = tmp_path / "staging", tmp_path / "releases" / "default"
    built = record_build(engine, staging=staging)
    store.mkdir(parents=True)
    (staging / built.submit_uuid / "a-1.pkg").rename(store / "a-1.pkg")
    found = reuse.find_reusable(engine, "a", "1", built.key, reuse.store_checker(staging, [store]))
    assert found is not None and found.job_uuid == built.job_uuid


def test_an_older_intact_build_is_used_when_the_newest_is_gone(engine, tmp_path) -> None:
    first = record_build(engine, staging=tmp_path)
    second = record_build(engine, staging=tmp_path)
    assert first.key == second.key
    (tmp_path / second.submit_uuid / "a-1.pkg").unlink()
    found = reuse.find_reusable(engine, "a", "1", first.key, reuse.store_checker(tmp_path))
    assert found is not None and found.job_uuid == first.job_uuid


def test_failed_builds_and_builds_without_artifacts_are_never_reused(engine, tmp_path) -> None:
    failed = record_build(engine, staging=tmp_path, state="failed")
    exists = reuse.store_checker(tmp_path)
    assert reuse.find_reusable(engine, "a", "1", failed.key, exists) is None
    empty = record_build(engine, staging=tmp_path, contents={}, package=("e", "1"))
    assert reuse.find_reusable(engine, "e", "1", empty.key, exists) is None


def test_explain_difference_names_the_changed_inputs(engine) -> None:
    record_build(engine, inputs=inputs_for(patch_hashes={"p.patch": "1" * 64}))
    changed = inputs_for(
        patch_hashes={"p.patch": "2" * 64},
        environment={"FLAVOR": "slow"},
        image_digest="sha256:" + "9" * 64,
    )
    lines = reuse.explain_difference(engine, "a", "1", changed)
    assert lines[0].startswith("compared with job ")
    assert "patch_hashes: p.patch changed from '" + "1" * 64 + "' to '" + "2" * 64 + "'" in lines
    assert "environment: FLAVOR changed from 'fast' to 'slow'" in lines
    assert any(line.startswith("image_digest: changed from") for line in lines)
    assert len(lines) == 4
    assert reuse.explain_difference(engine, "zzz", "1", changed) == [
        "no earlier build of zzz 1 with recorded build inputs"
    ]


def test_explain_difference_picks_the_closest_earlier_build(engine) -> None:
    record_build(engine, inputs=inputs_for(script="one"))
    record_build(engine, inputs=inputs_for(script="two", environment={"FLAVOR": "x"}))
    lines = reuse.explain_difference(engine, "a", "1", inputs_for(script="two"))
    assert lines[1:] == ["environment: FLAVOR changed from 'x' to 'fast'"]


def test_explain_difference_says_why_a_build_with_the_same_inputs_is_not_reused(engine) -> None:
    built = record_build(engine)  # its files are not in any store
    records.record_reused_job(
        engine, uuid=str(uuid.uuid4()), submit_uuid=record_submit(engine),
        package_name="a", package_version="1", image="debian:bookworm",
        reused_job_uuid=built.job_uuid, reason="same key", build_key=built.key,
        build_key_inputs=inputs_for(),
    )  # fmt: skip
    assert reuse.explain_difference(engine, "a", "1", inputs_for()) == [
        f"no input differs from job {built.job_uuid}, but its artifacts are missing from "
        "the stores or fail their sha256 check"
    ]
    failed = record_build(engine, inputs=inputs_for(script="other"), state="failed")
    assert reuse.explain_difference(engine, "a", "1", inputs_for(script="other")) == [
        f"no input differs from job {failed.job_uuid}, which failed"
    ]


def test_concurrent_runs_build_a_shared_key_once(engine, tmp_path) -> None:
    inputs = inputs_for()
    key = build_key(inputs)
    exists = reuse.store_checker(tmp_path)
    outcomes: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            job = str(uuid.uuid4())
            found = reuse.claim_or_reuse(
                engine, key, job, lambda: reuse.find_reusable(engine, "a", "1", key, exists),
                poll_seconds=0.05, timeout_seconds=60,
            )  # fmt: skip
            if found is not None:
                with lock:
                    outcomes.append("reused")
                return
            time.sleep(0.3)  # the build
            record_build(engine, staging=tmp_path, inputs=inputs, run_id=f"r{index}")
            reuse.release_build_key(engine, key, job)
            with lock:
                outcomes.append("built")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors
    assert sorted(outcomes) == ["built"] + ["reused"] * 5
    assert reuse.claim_holder(engine, key) is None


def test_a_failed_builder_releases_its_claim_and_the_waiter_builds(engine, tmp_path) -> None:
    key = "f" * 64
    assert reuse.claim_build_key(engine, key, "job-1")
    assert not reuse.claim_build_key(engine, key, "job-2")
    assert reuse.claim_build_key(engine, key, "job-1")  # a retry of the holder
    reuse.release_build_key(engine, key, "job-1")
    assert reuse.claim_build_key(engine, key, "job-2")


def test_an_expired_claim_is_taken_over(engine) -> None:
    key = "e" * 64
    assert reuse.claim_build_key(engine, key, "dead-job", ttl_seconds=-1)
    assert reuse.claim_build_key(engine, key, "live-job")
    assert reuse.claim_holder(engine, key) == "live-job"


def test_reused_jobs_show_in_db_jobs(engine) -> None:
    built = record_build(engine)
    submit = record_submit(engine, run_id="r2")
    records.record_reused_job(
        engine, uuid=str(uuid.uuid4()), submit_uuid=submit, package_name="a",
        package_version="1", image="debian:bookworm", reused_job_uuid=built.job_uuid,
        reason="build key " + built.key[:12],
    )  # fmt: skip
    states = [j.state for j in list_jobs(engine, limit=None)]
    assert states == ["reused", "success"]


def test_an_identical_dependency_output_stops_the_rebuild_wave(engine, tmp_path) -> None:
    exists = reuse.store_checker(tmp_path)
    b_inputs = inputs_for(script="build b", patch_hashes={"b.patch": "1" * 64})
    b = record_build(engine, staging=tmp_path, package=("b", "2"), inputs=b_inputs,
                     contents={"b-2.pkg": b"B"})  # fmt: skip
    a_inputs = inputs_for(dependency_artifacts=(b.artifacts[0].sha256,))
    a = record_build(engine, staging=tmp_path, inputs=a_inputs)

    # b's patch changed: b is rebuilt ...
    b_changed = inputs_for(script="build b", patch_hashes={"b.patch": "2" * 64})
    b_key = build_key(b_changed)
    assert reuse.find_reusable(engine, "b", "2", b_key, exists) is None
    assert "patch_hashes: b.patch changed" in " ".join(
        reuse.explain_difference(engine, "b", "2", b_changed)
    )
    # ... with an identical output, so a keeps its key and is reused
    rebuilt = record_build(engine, staging=tmp_path, package=("b", "2"), inputs=b_changed,
                           contents={"b-2.pkg": b"B"})  # fmt: skip
    a_again = inputs_for(dependency_artifacts=(rebuilt.artifacts[0].sha256,))
    found = reuse.find_reusable(engine, "a", "1", build_key(a_again), exists)
    assert found is not None and found.job_uuid == a.job_uuid

    # a different output of b changes a's key: a is rebuilt
    other = inputs_for(dependency_artifacts=(hashlib.sha256(b"B2").hexdigest(),))
    assert reuse.find_reusable(engine, "a", "1", build_key(other), exists) is None


def test_a_claim_released_between_insert_and_select_is_taken(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, read committed: the insert finds the holder's claim and does nothing; the
    holder's release commits; the select then finds no claim. The key is free: take it."""
    from airflow_butido.db.engine import make_engine
    from airflow_butido.db.migrate import upgrade

    engine = make_engine(pg_url)
    upgrade(engine)
    key = "e" * 64
    try:
        assert reuse.claim_build_key(engine, key, "holder")
        real_insert = reuse.rows.insert_ignore
        released = []

        def insert_then_release(conn, table, values):  # type: ignore[no-untyped-def]
            real_insert(conn, table, values)
            if not released:  # the holder releases, in its own transaction, right now
                reuse.release_build_key(engine, key, "holder")
                released.append(True)

        monkeypatch.setattr(reuse.rows, "insert_ignore", insert_then_release)
        assert reuse.claim_build_key(engine, key, "next")
        assert released
        assert reuse.claim_holder(engine, key) == "next"
    finally:
        engine.dispose()
