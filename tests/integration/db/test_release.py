"""Releasing artifacts: verified copies, --update, store validation, removal."""

from __future__ import annotations

import hashlib

import pytest

from airflow_butido.db.queries import list_releases
from airflow_butido.release import ReleaseError, release_new, release_rm

from .builds import record_build, record_submit

pytestmark = pytest.mark.postgres

STORES = ("default", "stable")


@pytest.fixture
def layout(tmp_path):
    staging, releases = tmp_path / "staging", tmp_path / "releases"
    staging.mkdir()
    releases.mkdir()
    return staging, releases


def _release(engine, staging, releases, submit, **kw):
    return release_new(
        engine, submit_uuid=submit, store=kw.pop("store", "default"), staging_root=staging,
        releases_root=releases, stores=STORES, **kw,
    )  # fmt: skip


def test_release_copies_verifies_and_records(engine, layout) -> None:
    staging, releases = layout
    built = record_build(engine, staging=staging, contents={"deb/a-1.deb": b"A1"})
    done = _release(engine, staging, releases, built.submit_uuid)
    target = releases / "default" / "deb" / "a-1.deb"
    assert [r.path for r in done] == [target] and not done[0].replaced
    assert target.read_bytes() == b"A1"
    assert list((releases / "default" / "deb").iterdir()) == [target]  # no temporary left
    rows = list_releases(engine)
    assert [(r.package, r.version, r.store, r.path) for r in rows] == [
        ("a", "1", "default", "deb/a-1.deb")
    ]


def test_an_existing_release_is_replaced_only_with_update(engine, layout) -> None:
    staging, releases = layout
    first = record_build(engine, staging=staging, contents={"a-1.pkg": b"old"})
    _release(engine, staging, releases, first.submit_uuid)
    second = record_build(engine, staging=staging, contents={"a-1.pkg": b"new"})
    with pytest.raises(ReleaseError, match="already released .*--update"):
        _release(engine, staging, releases, second.submit_uuid)
    assert (releases / "default" / "a-1.pkg").read_bytes() == b"old"
    done = _release(engine, staging, releases, second.submit_uuid, update=True)
    assert done[0].replaced
    assert (releases / "default" / "a-1.pkg").read_bytes() == b"new"
    assert len(list_releases(engine)) == 2


def test_a_staged_file_that_differs_from_its_record_is_not_released(engine, layout) -> None:
    staging, releases = layout
    built = record_build(engine, staging=staging)
    (staging / built.submit_uuid / "a-1.pkg").write_bytes(b"changed after the build")
    with pytest.raises(ReleaseError, match="differs from the recorded"):
        _release(engine, staging, releases, built.submit_uuid)
    assert not (releases / "default" / "a-1.pkg").exists()
    assert list_releases(engine) == []


def test_store_names_and_versions_must_match_exactly(engine, layout) -> None:
    staging, releases = layout
    built = record_build(engine, staging=staging, package=("a", "10"))
    with pytest.raises(ReleaseError, match="unknown release store 'nightly'"):
        _release(engine, staging, releases, built.submit_uuid, store="nightly")
    with pytest.raises(ReleaseError, match="no artifacts of a 1"):
        _release(engine, staging, releases, built.submit_uuid, name="a", version="1")
    done = _release(engine, staging, releases, built.submit_uuid, name="a", version="10")
    assert len(done) == 1


def test_only_the_named_package_of_a_submit_is_released(engine, layout) -> None:
    staging, releases = layout
    submit = record_submit(engine)
    record_build(engine, staging=staging, submit_uuid=submit, package=("a", "1"))
    record_build(engine, staging=staging, submit_uuid=submit, package=("b", "2"))
    done = _release(engine, staging, releases, submit, name="b")
    assert [r.package for r in done] == ["b"]
    assert sorted(p.name for p in (releases / "default").iterdir()) == ["b-2.pkg"]


def test_release_rm_removes_the_newest_release_file_and_row(engine, layout) -> None:
    staging, releases = layout
    built = record_build(engine, staging=staging)
    _release(engine, staging, releases, built.submit_uuid, store="stable")
    with pytest.raises(ReleaseError, match="no release of a 1 in store 'default'"):
        release_rm(engine, store="default", name="a", version="1", releases_root=releases,
                   stores=STORES)  # fmt: skip
    removed = release_rm(
        engine, store="stable", name="a", version="1", releases_root=releases, stores=STORES
    )
    assert removed.path == "a-1.pkg"
    assert not (releases / "stable" / "a-1.pkg").exists()
    assert list_releases(engine) == []
    assert hashlib.sha256(b"pkg").hexdigest() == built.artifacts[0].sha256
