"""Source cache paths and streaming verification."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airflow_butido.recipes.package import Source
from airflow_butido.sources import SourceError, hash_file, source_path, verify_source
from tests.support import Pkg


def test_source_path_is_name_dash_version_dir_and_source_suffix(tmp_path: Path) -> None:
    src = Source("src", "https://example.com", "sha1", "00")
    assert source_path(tmp_path, Pkg("s", "19.0"), src) == tmp_path / "s-19.0" / "src.source"


@pytest.mark.parametrize("hash_type", ["sha1", "sha256", "sha512"])
def test_hash_file_matches_hashlib_for_every_supported_type(tmp_path: Path, hash_type: str) -> None:
    data = b"x" * (3 * 1024 * 1024 + 17)  # several chunks and a partial one
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path, hash_type) == hashlib.new(hash_type, data).hexdigest()


def test_hash_file_rejects_unknown_hash_type(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"1\n")
    with pytest.raises(SourceError, match="unsupported hash type 'md5'"):
        hash_file(path, "md5")


def test_verify_source_accepts_the_example_sha1(tmp_path: Path) -> None:
    path = tmp_path / "src.source"
    path.write_bytes(b"1\n")
    verify_source(path, Source("src", "u", "sha1", "e5fa44f2b31c1fb553b6021e7360d07d5d91ff5e"))


def test_verify_source_reports_mismatch_with_expected_and_actual(tmp_path: Path) -> None:
    path = tmp_path / "src.source"
    path.write_bytes(b"2\n")
    expected = "e5fa44f2b31c1fb553b6021e7360d07d5d91ff5e"
    actual = hashlib.sha1(b"2\n").hexdigest()
    with pytest.raises(SourceError) as info:
        verify_source(path, Source("src", "u", "sha1", expected))
    assert str(info.value) == f"{path}: Hash mismatch, expected '{expected}', got '{actual}'"


def test_verify_source_uppercase_hash_never_matches(tmp_path: Path) -> None:
    path = tmp_path / "src.source"
    path.write_bytes(b"1\n")
    with pytest.raises(SourceError, match="Hash mismatch"):
        verify_source(path, Source("src", "u", "sha1", "E5FA44F2B31C1FB553B6021E7360D07D5D91FF5E"))


def test_verify_source_turns_a_read_failure_into_a_source_error(
    tmp_path: Path, monkeypatch
) -> None:
    import airflow_butido.sources as sources

    path = tmp_path / "src.source"
    path.write_bytes(b"1\n")

    def unreadable(*_args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sources, "hash_file", unreadable)
    with pytest.raises(SourceError, match=f"{path}: cannot read: Permission denied"):
        verify_source(path, Source("src", "u", "sha1", "00"))


def test_verify_source_names_the_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "a-1" / "src.source"
    with pytest.raises(SourceError, match=f"{path}: source file missing"):
        verify_source(path, Source("src", "u", "sha1", "00"))
