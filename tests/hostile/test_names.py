"""Package names, versions and source names cannot steer a path out of its root."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from airflow_butido.container import container_name
from airflow_butido.errors import ButidoError
from airflow_butido.recipes import RecipeErrors, load_repository
from airflow_butido.recipes.names import name_problem
from airflow_butido.sources import SourceError, download_sources, source_path
from airflow_butido.stores import release_dir, staging_dir

from .conftest import CliRunner
from .repos import hostile_repo

SHA1 = "a" * 40


def leaf(name: str = "p", version: str = "1", source: str = "src") -> str:
    return (
        f'name = "{name}"\nversion = "{version}"\n[phases.build]\nscript = "true"\n'
        f'[sources."{source}"]\nurl = "http://127.0.0.1:9/x.tar.gz"\n'
        f'hash = {{ type = "sha1", hash = "{SHA1}" }}\n'
    )


@pytest.mark.parametrize("version", ["1.2.3-1", "2:1.0", "1.0~rc1", "1.0+git", "0.3", "1_2"])
def test_real_world_versions_load(tmp_path: Path, version: str) -> None:
    repo = load_repository(hostile_repo(tmp_path, leaf(version=version)))
    assert repo.get("p", version) is not None


@pytest.mark.parametrize(
    "value", ["../x", "a/b", "a b", "a\\u0000b", ".hidden", "-rf", "a\\tb", "x" * 129, ""]
)
@pytest.mark.parametrize("field", ["name", "version", "source"])
def test_unsafe_names_are_refused_at_load(tmp_path: Path, field: str, value: str) -> None:
    repo = hostile_repo(tmp_path, leaf(**{field: value}))
    with pytest.raises(RecipeErrors) as info:
        load_repository(repo)
    decoded = value.encode().decode("unicode_escape")
    key = f"sources.{decoded}" if field == "source" else field
    assert str(info.value).startswith("p/1/pkg.toml:")
    assert any(e.key == key for e in info.value.errors), str(info.value)


def test_lint_refuses_a_climbing_package_name(tmp_path: Path, butido: CliRunner) -> None:
    repo = hostile_repo(tmp_path, leaf(name="../../../../tmp/x"))
    code, out, err = butido("--repo", repo, "lint")
    assert code == 1
    assert "p/1/pkg.toml:1: name: '../../../../tmp/x' must not start with '.'" in err
    assert "Traceback" not in err


def test_the_rule_keeps_the_example_repositories(example_repo: Path) -> None:
    project = Path(__file__).resolve().parents[2] / "examples" / "repo"
    for root in (example_repo, project):
        for package in load_repository(root):
            names = [package.name, package.version, *(s.name for s in package.sources)]
            assert [name_problem(n) for n in names] == [None] * len(names)


def test_source_download_never_writes_outside_the_cache(tmp_path: Path) -> None:
    repo = load_repository(hostile_repo(tmp_path, leaf()))
    package = repo.get("p", "1")
    cache = tmp_path / "cache"
    cache.mkdir()
    escaped = dataclasses.replace(package, name="../../../escaped")
    with pytest.raises(SourceError, match="outside"):
        download_sources(cache, [(escaped, escaped.sources[0])], force=True, timeout=2)
    # A link planted in the cache cannot redirect a download either.
    outside = tmp_path / "outside"
    outside.mkdir()
    (cache / "p-1").symlink_to(outside)
    with pytest.raises(SourceError, match=r"p-1 is a symbolic link"):
        source_path(cache, package, package.sources[0])
    assert not (tmp_path / "escaped").exists() and list(outside.iterdir()) == []


def test_store_paths_stay_below_their_roots(tmp_path: Path) -> None:
    with pytest.raises(ButidoError, match="outside"):
        staging_dir(tmp_path / "staging", "../../etc")
    with pytest.raises(ButidoError, match="directory name"):
        release_dir(tmp_path / "releases", "../elsewhere")
    assert staging_dir(tmp_path / "s", "abc") == tmp_path / "s" / "abc"


def test_container_names_hold_no_path_characters() -> None:
    name = container_name("../../x y", "1:2", "u")
    assert "/" not in name and " " not in name
