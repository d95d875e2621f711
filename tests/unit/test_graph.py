from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.errors import ResolveError
from airflow_butido.graph import Edge, resolve
from airflow_butido.recipes import load_repository
from airflow_butido.recipes.dependency import Condition
from tests.unit.recipes.repo_factory import leaf, packages, write_repo


def repo_of(tmp_path: Path, *specs, files=None):
    all_files = packages(*specs)
    all_files.update(files or {})
    return load_repository(write_repo(tmp_path, all_files), environ={})


def keys(graph) -> set[tuple[str, str]]:
    return set(graph.packages)


# ----------------------------------------------------------------- butido's DAG tests


def test_add_package(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, ("p1", "1", []))
    graph = resolve(repo, [repo.get("p1", "1")])
    assert keys(graph) == {("p1", "1")} and graph.edges == ()


def test_add_two_dependent_packages(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, ("a", "1", ["b =2"]), ("b", "2", []))
    graph = resolve(repo, [repo.get("a", "1")])
    assert keys(graph) == {("a", "1"), ("b", "2")}
    assert graph.edges == (Edge(("a", "1"), ("b", "2"), "runtime"),)


DEEP = [
    ("p1", "1", ["p2 =2", "p4 =4"]),
    ("p2", "2", ["p3 =3"]),
    ("p3", "3", []),
    ("p4", "4", ["p5 =5", "p6 =66.6.6"]),
    ("p5", "5", []),
    ("p6", "66.6.6", []),
]
DEEP_KEYS = {("p1", "1"), ("p2", "2"), ("p3", "3"), ("p4", "4"), ("p5", "5"), ("p6", "66.6.6")}


def test_add_deep_package_tree(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, *DEEP)
    assert keys(resolve(repo, [repo.get("p1", "1")])) == DEEP_KEYS


def test_add_deep_package_tree_with_irrelevant_packages(tmp_path: Path) -> None:
    repo = repo_of(
        tmp_path,
        *DEEP,
        ("p1", "2", []),
        ("p3", "1", []),
        ("p3", "3.1", []),
        ("p4", "5", []),
        ("p6", "66.6.8", []),
    )
    assert keys(resolve(repo, [repo.get("p1", "1")])) == DEEP_KEYS


def test_add_dag_diamond_is_one_node(tmp_path: Path) -> None:
    repo = repo_of(
        tmp_path,
        ("p1", "1", ["p2 =2", "p4 =4"]),
        ("p2", "2", ["p3 =3"]),
        ("p4", "4", ["p3 =3"]),
        ("p3", "3", []),
    )
    graph = resolve(repo, [repo.get("p1", "1")])
    assert len(graph) == 4
    assert {e.dependent for e in graph.dependents(("p3", "3"))} == {("p2", "2"), ("p4", "4")}


@pytest.mark.parametrize(
    ("image", "included"), [(None, False), ("barimage", False), ("fooimage", True)]
)
def test_image_conditional(tmp_path: Path, image: str | None, included: bool) -> None:
    repo = load_repository(
        write_repo(
            tmp_path,
            {
                "a/pkg.toml": leaf(
                    "a", "1", ['{ name = "b =2", condition = { in_image = "fooimage" } }']
                ),
                "b/pkg.toml": leaf("b", "2"),
            },
        ),
        environ={},
    )
    graph = resolve(repo, [repo.get("a", "1")], image=image, env={})
    assert (("b", "2") in graph) is included


# ----------------------------------------------------------------- the example repository

EXAMPLE_EDGES = {
    ("a", "b"),
    ("a", "c"),
    ("b", "d"),
    ("b", "e"),
    ("b", "f"),
    ("c", "g"),
    ("c", "h"),
    ("c", "i"),
    ("d", "j"),
    ("e", "k"),
    ("f", "l"),
    ("f", "m"),
    ("g", "m"),
    ("g", "n"),
    ("g", "o"),
    ("g", "p"),
    ("i", "q"),
    ("i", "r"),
    ("j", "s 19.0"),
    ("j", "s 19.1"),
    ("j", "s 19.2"),
    ("j", "s 19.3"),
    ("j", "t"),
    ("k", "u"),
    ("l", "u"),
    ("o", "x"),
    ("p", "x"),
    ("q", "v"),
    ("v", "w"),
    ("w", "x"),
    ("x", "y"),
    ("y", "z"),
}


def test_example_graph_of_a(example_repo: Path) -> None:
    repo = load_repository(example_repo, environ={})
    graph = resolve(repo, [repo.get("a", "1")], image=None, env={})
    data = graph.to_json(("a", "1"))
    assert data["root"] == "a 1"
    assert len(data["packages"]) == 29
    assert data["packages"] == sorted(data["packages"], key=lambda s: tuple(s.split(" ")))

    def short(text: str) -> str:
        return text if text.startswith("s ") else text.split(" ")[0]

    edges = {(short(e["from"]), short(e["to"])) for e in data["edges"]}
    assert edges == EXAMPLE_EDGES
    assert len(data["edges"]) == len(EXAMPLE_EDGES)
    assert {e["kind"] for e in data["edges"]} == {"runtime"}
    assert set(data) == {"root", "packages", "edges"}


def test_build_order_puts_dependencies_first(example_repo: Path) -> None:
    repo = load_repository(example_repo, environ={})
    graph = resolve(repo, [repo.get("a", "1")])
    order = graph.build_order()
    assert len(order) == 29 and order[-1] == ("a", "1")
    position = {k: i for i, k in enumerate(order)}
    assert all(position[e.dependency] < position[e.dependent] for e in graph.edges)
    assert order == resolve(repo, [repo.get("a", "1")]).build_order()  # deterministic
    assert graph.transitive_dependencies(("w", "23")) == {("x", "24"), ("y", "25"), ("z", "26")}


# ----------------------------------------------------------------- errors


def test_cycle_prints_the_whole_cycle(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, ("a", "1", ["b =2"]), ("b", "2", ["c =3"]), ("c", "3", ["a =1"]))
    with pytest.raises(ResolveError) as info:
        resolve(repo, [repo.get("a", "1")])
    assert str(info.value) == "dependency cycle: a 1 -> b 2 -> c 3 -> a 1"


def test_cycle_below_the_root_prints_only_the_cycle(tmp_path: Path) -> None:
    repo = repo_of(
        tmp_path,
        ("r", "1", ["x =1", "a =1"]),
        ("x", "1", []),
        ("a", "1", ["b =2"]),
        ("b", "2", ["c =3"]),
        ("c", "3", ["x =1", "b =2"]),
    )
    with pytest.raises(ResolveError) as info:
        resolve(repo, [repo.get("r", "1")])
    assert str(info.value) == "dependency cycle: b 2 -> c 3 -> b 2"


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, ("a", "1", ["a =1"]))
    with pytest.raises(ResolveError, match="dependency cycle: a 1 -> a 1"):
        resolve(repo, [repo.get("a", "1")])


def test_missing_dependency_names_dependent_and_existing_versions(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, ("a", "1", ["b =3"]), ("b", "1", []), ("b", "2", []))
    with pytest.raises(ResolveError) as info:
        resolve(repo, [repo.get("a", "1")])
    assert str(info.value) == (
        "a 1 (a/1/pkg.toml) depends on b 3, which is not in the repository; "
        "existing versions of b: 1, 2"
    )


def test_missing_package_name(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, ("a", "1", ["nope =1", "gone =2"]))
    with pytest.raises(ResolveError) as info:
        resolve(repo, [repo.get("a", "1")])
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        "depends on nope 1, which is not in the repository; there is no package named 'nope'"
    )


def test_missing_dependency_behind_a_false_condition_is_ignored(tmp_path: Path) -> None:
    repo = load_repository(
        write_repo(
            tmp_path,
            {
                "a/pkg.toml": leaf(
                    "a", "1", ['{ name = "nope =1", condition.in_image = "fooimage" }']
                ),
            },
        ),
        environ={},
    )
    assert len(resolve(repo, [repo.get("a", "1")], image="barimage", env={})) == 1


# ----------------------------------------------------------------- conditions and kinds

ENV_REPO = {
    "a/pkg.toml": leaf(
        "a",
        "1",
        [
            '{ name = "b =1", condition.has_env = "WITH_B" }',
            '{ name = "c =1", condition = { env_eq = { MODE = "x" }, in_image = "fooimage" } }',
        ],
    ),
    "b/pkg.toml": leaf("b", "1"),
    "c/pkg.toml": leaf("c", "1"),
}


@pytest.mark.parametrize(
    ("image", "env", "expected"),
    [
        (None, {}, {("a", "1")}),
        (None, {"WITH_B": "1"}, {("a", "1"), ("b", "1")}),
        ("fooimage", {"MODE": "x"}, {("a", "1"), ("c", "1")}),
        ("barimage", {"MODE": "x", "WITH_B": ""}, {("a", "1"), ("b", "1")}),
        ("fooimage", {"MODE": "y"}, {("a", "1")}),
    ],
)
def test_env_conditions(tmp_path: Path, image, env, expected) -> None:
    repo = load_repository(write_repo(tmp_path, ENV_REPO), environ={})
    assert keys(resolve(repo, [repo.get("a", "1")], image=image, env=env)) == expected


def test_without_env_the_env_conditions_stay_on_the_edges(tmp_path: Path) -> None:
    repo = load_repository(write_repo(tmp_path, ENV_REPO), environ={})
    graph = resolve(repo, [repo.get("a", "1")], image="barimage", env=None)
    # c is dropped: in_image is decided now; b stays with its pending condition.
    assert graph.edges == (Edge(("a", "1"), ("b", "1"), "runtime", Condition(has_env=("WITH_B",))),)
    graph = resolve(repo, [repo.get("a", "1")], image="fooimage", env=None)
    assert [e.condition for e in graph.edges] == [
        Condition(has_env=("WITH_B",)),
        Condition(env_eq=(("MODE", "x"),), in_image=("fooimage",)),
    ]


def test_build_and_runtime_edges(tmp_path: Path) -> None:
    repo = load_repository(
        write_repo(
            tmp_path,
            {
                "a/pkg.toml": leaf("a", "1", ["b =1", "c 1"], build=["b =1", "c =1"]),
                "b/pkg.toml": leaf("b", "1"),
                "c/pkg.toml": leaf("c", "1"),
            },
        ),
        environ={},
    )
    graph = resolve(repo, [repo.get("a", "1")])
    assert [(e.dependency[0], e.kind) for e in graph.dependencies(("a", "1"))] == [
        ("b", "build"),
        ("c", "build"),
        ("b", "runtime"),
        ("c", "runtime"),
    ]
    assert graph.to_json(("a", "1"))["edges"][0] == {"from": "a 1", "to": "b 1", "kind": "build"}


def test_several_versions_and_several_roots(tmp_path: Path) -> None:
    repo = repo_of(
        tmp_path, ("a", "1", ["s =1", "s =2"]), ("s", "1", []), ("s", "2", []), ("z", "1", ["s =2"])
    )
    graph = resolve(repo, [repo.get("a", "1"), repo.get("z", "1")])
    assert keys(graph) == {("a", "1"), ("s", "1"), ("s", "2"), ("z", "1")}
    assert graph.roots == (("a", "1"), ("z", "1"))
    assert graph.to_json(("z", "1")) == {
        "root": "z 1",
        "packages": ["s 2", "z 1"],
        "edges": [{"from": "z 1", "to": "s 2", "kind": "runtime"}],
    }
