"""The benchmark's generated repository has the shape the targets are stated for."""

from __future__ import annotations

import sys
from pathlib import Path

from airflow_butido.graph import resolve
from airflow_butido.recipes import load_repository

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _gen import generate  # noqa: E402


def test_generated_repository_is_layered_three_deep_with_about_three_dependencies(
    tmp_path: Path,
) -> None:
    top = generate(tmp_path / "repo", packages=300, groups=10)
    repo = load_repository(tmp_path / "repo", environ={})
    assert len(repo) == 300 and len(repo.pkg_toml_files) == 311
    assert {len(p.layers) for p in repo} == {3}
    per_package = sum(len(p.dependencies) for p in repo) / len(repo)
    assert 2.9 <= per_package <= 3.0
    assert {d.kind for p in repo for d in p.dependencies} == {"build", "runtime"}
    graph = resolve(repo, list(repo), image=None, env=None)
    assert len(graph) == 300
    name, version = top.split(" ")
    assert len(resolve(repo, [repo.get(name, version)]).subgraph_keys((name, version))) > 30
