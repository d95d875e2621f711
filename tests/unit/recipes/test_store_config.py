"""Store keys (staging, releases_root, source_cache) as paths or object-storage URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.recipes.config import StoreUrl
from tests.unit.recipes.repo_factory import CONFIG
from tests.unit.recipes.test_config import error_of, load, write


def with_stores(staging: str, releases: str = "releases", cache: str = "sources") -> str:
    text = CONFIG
    for key, value in (("staging", staging), ("releases_root", releases), ("source_cache", cache)):
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} ")]
        text = "\n".join([f'{key} = "{value}"', *lines]) + "\n"
    return text


def test_object_storage_urls_and_file_urls(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, with_stores("s3://bkt/a/b/", "gs://other", f"file://{tmp_path}/c"))
    )
    assert config.staging == StoreUrl("s3://bkt/a/b")
    assert config.staging.scheme == "s3"
    assert config.releases_root == StoreUrl("gs://other")
    assert config.source_cache == tmp_path / "c"  # a file URL is a local path
    assert config.stores_conn_id is None


def test_plain_paths_stay_paths(tmp_path: Path) -> None:
    config = load(write(tmp_path, with_stores("st", "/abs/rel")))
    assert config.staging == tmp_path / "st"
    assert config.releases_root == Path("/abs/rel")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("ftp://host/x", "unsupported URL scheme 'ftp'"),
        ("s3:///prefix", "a bucket name"),
        ("s3://bkt/a/../b", "'.' and '..' are not allowed"),
        ("s3://bkt/a?x=1", "no query or fragment"),
        ("file://host/x", "file:///absolute/path"),
        ("file://relative", "file:///absolute/path"),
    ],
)
def test_bad_store_urls_name_the_key(tmp_path: Path, value: str, fragment: str) -> None:
    message = error_of(write(tmp_path, with_stores(value)))
    assert "staging" in message and fragment in message


def test_environment_override_may_be_a_url(tmp_path: Path) -> None:
    config = load(write(tmp_path), BUTIDO_SOURCE_CACHE="s3://bkt/cache")
    assert config.source_cache == StoreUrl("s3://bkt/cache")


def test_stores_conn_id_from_the_settings_file(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "airflow-butido.toml").write_text('[stores]\nconn_id = "my_s3"\n')
    assert load(tmp_path).stores_conn_id == "my_s3"
    (tmp_path / "airflow-butido.toml").write_text('[stores]\nconn_id = "no spaces"\n')
    assert "stores.conn_id" in error_of(tmp_path)
    (tmp_path / "airflow-butido.toml").write_text('[stores]\nbucket = "x"\n')
    assert "stores.bucket" in error_of(tmp_path)
