"""The parse cache keeps no credentials, and only a private directory holds its pickles."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from airflow_butido import parse_cache

from .repos import hostile_repo

LEAF = 'name = "p"\nversion = "1"\n[phases.build]\nscript = "true"\n'
PASSWORD = "pw-in-config-4f1c"
URL_PASSWORD = "pw-in-url-9e2b"


def _repo(tmp_path: Path) -> Path:
    return hostile_repo(
        tmp_path,
        LEAF,
        extra_config=f'database_host = "db"\ndatabase_name = "b"\ndatabase_password = "{PASSWORD}"',
        settings=f'database_url = "postgresql+psycopg2://u:{URL_PASSWORD}@db/b"\n',
    )


def _cached_bytes(cache: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(cache.iterdir()) if p.is_file())


def test_pickles_hold_no_database_password(tmp_path: Path) -> None:
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    first = parse_cache.load(repo, environ={}, cache_dir=cache)
    assert first.repo.config.database_password == PASSWORD
    stored = _cached_bytes(cache)
    assert any(p.suffix == ".pickle" for p in cache.iterdir())
    assert PASSWORD.encode() not in stored and URL_PASSWORD.encode() not in stored
    again = parse_cache.load(repo, environ={}, cache_dir=cache)  # from the pickle
    assert again.repo.config.database_password == PASSWORD
    assert URL_PASSWORD in (again.repo.config.database_url or "")
    assert again.repo.get("p", "1") is not None


def test_the_cache_directory_is_created_private(tmp_path: Path) -> None:
    cache = tmp_path / "new" / "cache"
    old = os.umask(0)
    try:
        parse_cache.load(_repo(tmp_path), environ={}, cache_dir=cache)
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


@pytest.mark.parametrize("problem", ["group-writable", "other-readable", "foreign owner"])
def test_a_shared_cache_directory_is_not_used(
    tmp_path: Path, problem: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    if problem == "group-writable":
        cache.chmod(0o770)
    elif problem == "other-readable":
        cache.chmod(0o704)
    else:
        uid = os.geteuid() + 1
        monkeypatch.setattr(parse_cache.os, "geteuid", lambda: uid)
    # A pickle planted by someone else must never be loaded.
    planted = tmp_path / "planted"
    (cache / "evil.pickle").write_bytes(
        b"cos\nsystem\n(S'touch " + str(planted).encode() + b"'\ntR."
    )
    loaded = parse_cache.load(_repo(tmp_path), environ={}, cache_dir=cache)
    assert loaded.repo.get("p", "1") is not None
    assert sorted(p.name for p in cache.iterdir()) == ["evil.pickle"]
    assert f"parse cache {cache} not used" in caplog.text
    assert not planted.exists()
