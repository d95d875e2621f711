"""The repository commands read through the parse cache the DAG file keeps, and say the
same with it as without it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from airflow_butido import parse_cache
from airflow_butido.cli.repo_commands import tree_json
from tests.unit.cli.runner import butido_fixture
from tests.unit.recipes.repo_factory import leaf, write_repo

run = butido_fixture()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(
        tmp_path / "repo",
        {
            "a/pkg.toml": leaf("a", "1", ["b =1"], build=["c =1"]),
            "b/pkg.toml": leaf("b", "1", ["c =1"]),
            "c/pkg.toml": leaf("c", "1"),
        },
    )


def pickles(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.pickle"))


@pytest.mark.parametrize(
    "command",
    [("tree-of", "a", "--json"), ("versions-of", "a"), ("find-pkg", "a"), ("lint",)],
)
def test_repository_commands_fill_and_then_read_the_parse_cache(
    run, repo: Path, monkeypatch, tmp_path: Path, command: tuple[str, ...]
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", str(cache))
    first = run("--repo", repo, *command)
    assert first[0] == 0, first
    assert len(pickles(cache)) == 1  # the command stored what it loaded

    def no_fresh_load(*args: object) -> None:
        raise AssertionError("loaded the repository although the cache holds it")

    monkeypatch.setattr(parse_cache, "_load_fresh", no_fresh_load)
    assert run("--repo", repo, *command) == first


def test_parse_cache_off_loads_without_writing(run, repo: Path, monkeypatch) -> None:
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    code, out, _ = run("--repo", repo, "tree-of", "a", "--json")
    assert code == 0 and json.loads(out)["packages"] == ["a 1", "b 1", "c 1"]
    assert not list(Path.home().glob(".cache/airflow-butido/parse/off*"))


def test_a_broken_recipe_is_the_same_error_with_and_without_the_cache(
    run, repo: Path, monkeypatch, tmp_path: Path
) -> None:
    (repo / "b" / "pkg.toml").write_text('name = "b"\nversion = \n')
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", str(tmp_path / "cache"))
    cached = run("--repo", repo, "versions-of", "b")
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    plain = run("--repo", repo, "versions-of", "b")
    assert cached == plain and cached[0] != 0 and "b/pkg.toml" in cached[2]


def test_an_unresolvable_dependency_is_left_to_the_command(
    run, repo: Path, monkeypatch, tmp_path: Path
) -> None:
    """The cache resolves every package; a missing dependency must not turn a command that
    never resolves it (versions-of) into an error, nor change lint's report."""
    (repo / "c" / "pkg.toml").write_text(leaf("c", "1", ["gone =1"]))
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", str(tmp_path / "cache"))
    assert run("--repo", repo, "versions-of", "a")[:2] == (0, "1\n")
    cached = run("--repo", repo, "lint")
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    assert run("--repo", repo, "lint") == cached


def test_warnings_are_logged_from_the_cache_too(
    run, repo: Path, monkeypatch, tmp_path: Path, caplog
) -> None:
    config = repo / "config.toml"
    config.write_text("strict_keys = false\n" + config.read_text())
    (repo / "c" / "pkg.toml").write_text('homepage = "x"\n' + leaf("c", "1"))
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", str(tmp_path / "cache"))
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert run("--repo", repo, "versions-of", "c")[0] == 0
        assert any("homepage" in r.getMessage() for r in caplog.records)


DIAMOND = {"a": (["b =1"], ["c =1"]), "b": (["c =1"], []), "c": ([], []), "d": (["a =1"], [])}


@pytest.mark.parametrize(
    ("specs", "root"),
    [
        ({"a": (["b =1"], []), "b": ([], [])}, "a"),
        ({"a": ([], [])}, "a"),  # no edges
        (DIAMOND, "a"),  # both kinds of edge
        (DIAMOND, "d"),
    ],
)
def test_tree_json_is_the_text_json_dumps_writes(
    tmp_path: Path, specs: dict[str, tuple[list[str], list[str]]], root: str
) -> None:
    from airflow_butido.graph import resolve
    from airflow_butido.recipes import load_repository

    files = {f"{n}/pkg.toml": leaf(n, "1", rt, build=bd) for n, (rt, bd) in specs.items()}
    repo = load_repository(write_repo(tmp_path, files), environ={})
    graph = resolve(repo, [repo.get(root, "1")])
    text = tree_json(graph, (root, "1"))
    assert text == json.dumps(graph.to_json((root, "1")), indent=2)
    assert json.loads(text)["root"] == f"{root} 1"
