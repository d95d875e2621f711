"""The ``butido`` command answers before it writes the parse cache, resolves only the graphs
it is asked for, and never answers from a stale cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_butido import graph, parse_cache
from airflow_butido.errors import ResolveError
from tests.unit.recipes.repo_factory import leaf, write_repo

IMAGES = ("debian:bookworm", "fooimage", "barimage")  # of repo_factory's config


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(
        tmp_path / "repo",
        {
            "a/pkg.toml": leaf("a", "1", ["b =1"]),
            "b/pkg.toml": leaf("b", "1"),
        },
    )


@pytest.fixture
def deferred() -> Iterator[None]:
    parse_cache.defer_writes()
    try:
        yield
    finally:
        parse_cache.write_deferred()


def test_the_command_exits_and_a_child_writes_the_cache(repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "BUTIDO_PARSE_CACHE": str(cache)}
    command = [sys.executable, "-m", "airflow_butido.cli.main", "--repo", str(repo)]
    first = subprocess.run(
        [*command, "tree-of", "a", "--json"], env=env, capture_output=True, text=True, timeout=60
    )  # returns once the command exits: the child holds none of its pipes
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["packages"] == ["a 1", "b 1"]
    deadline = time.monotonic() + 60
    while not list(cache.glob("*.pickle")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (stored,) = cache.glob("*.pickle")
    # what the child stored has every image's graph, as the DAG file needs
    cached = parse_cache._read_pickle(stored)
    assert cached is not None and isinstance(cached.graphs, dict)
    assert sorted(cached.graphs) == sorted(IMAGES)
    again = subprocess.run(
        [*command, "tree-of", "a", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.stdout == first.stdout


def test_graphs_are_resolved_when_asked_and_all_before_they_are_stored(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deferred: None
) -> None:
    resolved: list[str | None] = []
    real = graph.resolve

    def counting(*args: object, **kwargs: object) -> graph.PackageGraph:
        resolved.append(kwargs.get("image"))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(graph, "resolve", counting)
    cache = tmp_path / "cache"
    loaded = parse_cache.load(repo, cache_dir=cache)
    assert resolved == [] and not list(cache.glob("*.pickle"))
    assert sorted(loaded.graphs["fooimage"].packages) == [("a", "1"), ("b", "1")]
    assert resolved == ["fooimage"]
    parse_cache.write_deferred()
    assert sorted(resolved) == sorted(IMAGES)  # each once
    assert len(list(cache.glob("*.pickle"))) == 1


def test_a_repository_that_does_not_resolve_is_not_stored(tmp_path: Path, deferred: None) -> None:
    broken = write_repo(tmp_path / "repo", {"a/pkg.toml": leaf("a", "1", ["missing =1"])})
    cache = tmp_path / "cache"
    loaded = parse_cache.load(broken, cache_dir=cache)  # the command may still use it
    assert [p.name for p in loaded.repo] == ["a"]
    with pytest.raises(ResolveError):
        loaded.graphs["fooimage"]
    parse_cache.write_deferred()
    assert not list(cache.glob("*.pickle"))


@pytest.mark.parametrize("same_size", [True, False])
def test_a_changed_file_is_seen_by_the_next_load_in_the_same_process(
    repo: Path, tmp_path: Path, same_size: bool
) -> None:
    cache = tmp_path / "cache"
    assert parse_cache.load(repo, cache_dir=cache).repo.versions_of("a") == ["1"]
    recipe = repo / "a" / "pkg.toml"
    before = recipe.stat()
    text = recipe.read_text()
    assert 'version = "1"' in text
    recipe.write_text(
        text.replace('version = "1"', 'version = "2"' if same_size else 'version = "2.0"')
    )
    os.utime(recipe, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert parse_cache.load(repo, cache_dir=cache).repo.versions_of("a") == [
        "2" if same_size else "2.0"
    ]


def test_a_first_load_is_stored_under_the_content_hash_once_the_answer_is_out(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deferred: None
) -> None:
    cache = tmp_path / "cache"
    loaded = parse_cache.load(repo, cache_dir=cache)  # empty cache: hashed only later
    assert not list(cache.iterdir())
    parse_cache.write_deferred()
    (stored,) = cache.glob("*.pickle")
    assert len(list(cache.glob("*.index"))) == 1
    parse_cache._recent.clear()  # as a new process

    def no_fresh_load(*args: object) -> None:
        raise AssertionError("loaded the repository although the cache holds it")

    monkeypatch.setattr(parse_cache, "_load_fresh", no_fresh_load)
    again = parse_cache.load(repo, cache_dir=cache)
    assert stored.name == f"{again.content_hash}.pickle"
    assert [p.key for p in again.repo] == [p.key for p in loaded.repo]


def test_a_file_changed_before_the_late_write_is_not_stored(
    repo: Path, tmp_path: Path, deferred: None
) -> None:
    cache = tmp_path / "cache"
    parse_cache.load(repo, cache_dir=cache)
    recipe = repo / "a" / "pkg.toml"
    before = recipe.stat()
    recipe.write_text(recipe.read_text().replace('version = "1"', 'version = "2"'))
    os.utime(recipe, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    parse_cache.write_deferred()
    assert not list(cache.iterdir())  # neither the old content nor an index naming it
    assert parse_cache.load(repo, cache_dir=cache).repo.versions_of("a") == ["2"]


def test_a_cold_load_walks_the_repository_once(
    repo: Path, tmp_path: Path, deferred: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_butido.recipes import layers, repository

    walks: list[object] = []
    real = layers.scan

    def counting(root: Path | str) -> layers.Listing:
        walks.append(root)
        return real(root)

    monkeypatch.setattr(layers, "scan", counting)
    monkeypatch.setattr(repository, "scan", counting)
    loaded = parse_cache.load(repo, cache_dir=tmp_path / "cache")
    assert len(walks) == 1  # the fingerprint's walk is the one the loader reads
    assert [p.key for p in loaded.repo] == [("a", "1"), ("b", "1")]


def test_the_stat_fingerprint_digests_every_file_s_path_mtime_and_size(repo: Path) -> None:
    files = [str(repo / "a" / "pkg.toml"), str(repo / "pkg.toml"), str(repo / "gone")]
    expected = hashlib.sha256(b"settings" + str(repo).encode())
    for path in sorted(files[:2]):
        st = os.stat(path)
        expected.update(f"\0{path}\0{st.st_mtime_ns}\0{st.st_size}".encode())
    assert parse_cache._stat_fingerprint(repo, files, "settings") == expected.hexdigest()
