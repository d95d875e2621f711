from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.cli.runner import butido_fixture
from tests.unit.recipes.repo_factory import leaf, write_repo

run = butido_fixture()


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write_repo(
        tmp_path / "repo",
        {
            "a/pkg.toml": leaf(
                "a",
                "1",
                ["b =1", '{ name = "c =1", condition.in_image = "fooimage" }'],
                build=["t =1"],
                extra='[environment]\nCC = "gcc"\nX = "it\'s"\n',
            ),
            "b/pkg.toml": leaf("b", "1", ["d =1"]),
            "c/pkg.toml": leaf("c", "1", ["d =1"]),
            "d/pkg.toml": leaf("d", "1"),
            "t/pkg.toml": leaf("t", "1"),
            "v/1.0/pkg.toml": leaf("v", "1.0"),
            "v/1.2/pkg.toml": leaf("v", "1.2"),
            "v/2.0/pkg.toml": leaf("v", "2.0"),
        },
    )


def test_tree_of_example_json(run, example_repo: Path) -> None:
    code, out, err = run("--repo", example_repo, "tree-of", "a", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["root"] == "a 1"
    assert len(data["packages"]) == 29 and len(data["edges"]) == 32


def test_tree_marks_build_dependencies_and_honours_image(run, small: Path) -> None:
    code, out, _ = run("--repo", small, "tree-of", "a")
    assert code == 0
    assert out.splitlines() == [
        "a 1",
        "├── *t 1",
        "└── b 1",
        "    └── d 1",
    ]
    code, out, _ = run("--repo", small, "tree-of", "a", "-I", "foo")
    assert "c 1" in out
    assert out.count("d 1") == 2


def test_tree_of_env_condition(run, tmp_path: Path) -> None:
    root = write_repo(
        tmp_path,
        {
            "a/pkg.toml": leaf("a", "1", ['{ name = "b =1", condition.env_eq = { M = "x=y" } }']),
            "b/pkg.toml": leaf("b", "1"),
        },
    )
    assert "b 1" not in run("--repo", root, "tree-of", "a")[1]
    assert "b 1" in run("--repo", root, "tree-of", "a", "-E", "M=x=y")[1]


def test_tree_of_dot_and_serial_order(run, small: Path) -> None:
    code, out, _ = run("--repo", small, "tree-of", "a", "--dot")
    assert code == 0 and out.startswith("digraph")
    assert '"a 1" -> "t 1" [style=dotted];' in out
    assert '"a 1" -> "b 1";' in out
    code, out, _ = run("--repo", small, "tree-of", "a", "--serial-buildorder")
    assert out.splitlines() == ["d 1", "b 1", "*t 1", "a 1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tree-of", "nope"], "no package named 'nope'"),
        (["tree-of", "v", "3"], "no version of v matches '3' (versions: 1.0, 1.2, 2.0)"),
        (["tree-of", "v", "--json"], "several versions match"),
        (["tree-of", "a", "-I", "ubuntu"], "image 'ubuntu' is not configured"),
        (["tree-of", "a", "-E", "1=x"], "-E '1=x': invalid variable name '1'"),
        (["env-of", "a", "2"], "no package a 2 (versions: 1)"),
        (["versions-of", "zz"], "no package named 'zz'"),
        (["find-pkg", "("], "invalid regular expression"),
        (["tree-of", "a", " "], "invalid version constraint ' '"),
    ],
)
def test_errors_go_to_stderr_without_traceback(run, small: Path, args, message: str) -> None:
    code, out, err = run("--repo", small, *args)
    assert code == 1
    assert message in err
    assert err.startswith("error: ") and "Traceback" not in err


def test_broken_repository_is_reported_with_all_files(run, tmp_path: Path) -> None:
    root = write_repo(tmp_path, {"a/pkg.toml": "name = ", "b/pkg.toml": leaf("b", "1", ["x >1"])})
    code, _, err = run("--repo", root, "versions-of", "b")
    assert code == 1
    assert "a/pkg.toml:1: TOML syntax error" in err
    assert "b/pkg.toml:6: dependencies.runtime[0]:" in err


def test_tree_of_cycle_error(run, tmp_path: Path) -> None:
    root = write_repo(
        tmp_path, {"a/pkg.toml": leaf("a", "1", ["b =1"]), "b/pkg.toml": leaf("b", "1", ["a 1"])}
    )
    code, _, err = run("--repo", root, "tree-of", "a")
    assert (code, err.strip()) == (1, "error: dependency cycle: a 1 -> b 1 -> a 1")


def test_versions_of(run, small: Path) -> None:
    assert run("--repo", small, "versions", "v") == (0, "1.0\n1.2\n2.0\n", "")


def test_tree_of_with_constraint_selects_versions(run, small: Path) -> None:
    code, out, _ = run("--repo", small, "tree-of", "v", "1")
    assert out.split() == ["v", "1.0", "v", "1.2"]


def test_dependencies_of(run, small: Path) -> None:
    code, out, _ = run("--repo", small, "depsof", "a", "-t", "runtime", "--json")
    rows = json.loads(out)
    assert [(r["dependency"], r["condition"]) for r in rows] == [
        ("b", ""),
        ("c", "in_image fooimage"),
    ]
    code, out, _ = run("--repo", small, "dependencies-of", "a", "-t", "build", "--csv")
    assert out.splitlines()[1:] == ["a,1,build,t,1,"]


def test_what_depends(run, small: Path) -> None:
    code, out, _ = run("--repo", small, "what-depends", "d", "--csv")
    assert out.splitlines() == [
        "package,version,kind,dependency",
        "b,1,runtime,d 1",
        "c,1,runtime,d 1",
    ]
    assert run("--repo", small, "what-depends", "d", "-t", "build")[1] == ""


def test_env_of(run, small: Path) -> None:
    assert run("--repo", small, "env", "a", "1")[1] == "CC = 'gcc'\nX = \"it's\"\n"
    assert run("--repo", small, "env-of", "d", "1")[1] == "No environment\n"


# butido's reverse-dependency filter tests (src/util/filters.rs): by dependency name, any
# version, conditions ignored, restricted by -t.
@pytest.mark.parametrize(
    ("leaves", "args", "rows"),
    [
        ({"p": ([], [])}, [], []),
        ({"p": (["foo =2.0"], [])}, [], ["p 1 runtime foo 2.0"]),
        ({"p": (["foo =2.0"], [])}, ["-t", "build"], []),
        ({"p": (["bar =2.0"], [])}, [], []),
        ({"p": (["foo =2.0", "bar =1"], [])}, [], ["p 1 runtime foo 2.0"]),
        (
            {"p": (["foo =2"], []), "q": ([], ["foo =4"])},
            [],
            ["p 1 runtime foo 2", "q 1 build foo 4"],
        ),
        ({"p": (["foo =2"], []), "q": ([], ["foo =4"])}, ["-t", "build"], ["q 1 build foo 4"]),
        (
            {"p": (['{ name = "foo =3", condition.in_image = "nowhere" }'], [])},
            [],
            ["p 1 runtime foo 3"],
        ),
    ],
)
def test_what_depends_filter(run, tmp_path: Path, leaves, args, rows) -> None:
    files = {f"{n}/pkg.toml": leaf(n, "1", rt, build=bd) for n, (rt, bd) in leaves.items()}
    files.update({"foo/pkg.toml": leaf("foo", "9"), "bar/pkg.toml": leaf("bar", "9")})
    code, out, err = run(
        "--repo", write_repo(tmp_path, files), "what-depends", "foo", *args, "--csv"
    )
    assert (code, err) == (0, "")
    assert [line.replace(",", " ") for line in out.splitlines()[1:]] == rows


def test_tree_of_example_json_gives_the_reference_edges(run, example_repo: Path) -> None:
    from tests.unit.test_graph import EXAMPLE_EDGES

    code, out, _ = run("--repo", example_repo, "tree-of", "a", "1", "--json")
    data = json.loads(out)
    label = {p.split(" ")[0]: p for p in data["packages"] if not p.startswith("s ")}
    expected = [
        {"from": label[a], "to": b if b.startswith("s ") else label[b], "kind": "runtime"}
        for a, b in EXAMPLE_EDGES
    ]
    key = lambda e: (e["from"], e["to"])  # noqa: E731
    assert sorted(data["edges"], key=key) == sorted(expected, key=key)
    assert set(data) == {"root", "packages", "edges"}
    assert label["z"] == "z 26" and len(label) == 25
