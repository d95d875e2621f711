from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.recipes.errors import InvalidValue
from airflow_butido.recipes.layers import (
    discover,
    find_key_line,
    merge,
    normalize_relative_path,
    read_bytes,
    read_toml,
    scan,
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "."),
        (".", "."),
        ("./a//b/../b/./c/.", "a/b/c"),
        ("./a//../b/", "b"),
        ("s/19.0/../foo.patch", "s/foo.patch"),
    ],
)
def test_relative_path_normalization(path: str, expected: str) -> None:
    assert normalize_relative_path(path) == expected


@pytest.mark.parametrize("path", ["/root", "a/../../root", ".."])
def test_relative_path_normalization_rejects(path: str) -> None:
    with pytest.raises(InvalidValue):
        normalize_relative_path(path)


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")


@pytest.mark.parametrize(
    ("files", "trails"),
    [
        (["a/pkg.toml"], [("a/pkg.toml",)]),  # one file in a directory
        (["a/b/c/d/pkg.toml"], [("a/b/c/d/pkg.toml",)]),  # deep pkg.toml
        (
            ["a/pkg.toml", "a/b/pkg.toml", "a/b/c/pkg.toml"],  # hierarchy
            [("a/pkg.toml", "a/b/pkg.toml", "a/b/c/pkg.toml")],
        ),
        (
            ["a/pkg.toml", "a/b/c/pkg.toml", "a/d/pkg.toml"],  # missing intermediate
            [("a/pkg.toml", "a/b/c/pkg.toml"), ("a/pkg.toml", "a/d/pkg.toml")],
        ),
        (
            ["pkg.toml", "a/pkg.toml", "a/b/pkg.toml", "c/pkg.toml"],  # top-level file
            [("pkg.toml", "a/pkg.toml", "a/b/pkg.toml"), ("pkg.toml", "c/pkg.toml")],
        ),
        (["pkg.toml"], [("pkg.toml",)]),  # a lonely root file is a package
        (["pkg.toml", "other/x.toml", "empty/dir/README"], [("pkg.toml",)]),
    ],
    ids=["one", "deep", "hierarchy", "missing-intermediate", "toplevel", "root", "no-pkg-dirs"],
)
def test_leaves_and_trails(tmp_path: Path, files: list[str], trails: list[tuple[str, ...]]):
    _touch(tmp_path, *files)
    found_files, found_trails = discover(tmp_path)
    assert found_files == sorted(f for f in files if f.endswith("pkg.toml"))
    assert found_trails == trails


def test_dot_directories_and_files_are_ignored(tmp_path: Path) -> None:
    _touch(tmp_path, "pkg.toml", "a/pkg.toml", ".git/pkg.toml", "a/.hidden/pkg.toml")
    files, trails = discover(tmp_path)
    assert files == ["a/pkg.toml", "pkg.toml"]
    assert trails == [("pkg.toml", "a/pkg.toml")]


def test_symlinked_directories_are_not_followed(tmp_path: Path) -> None:
    _touch(tmp_path, "pkg.toml", "real/pkg.toml")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert discover(tmp_path)[0] == ["pkg.toml", "real/pkg.toml"]


def test_trails_of_directories_whose_names_share_a_prefix(tmp_path: Path) -> None:
    # sorted, "a-b/..." and "ab/..." surround "a/b/..." but are not below "a"
    _touch(tmp_path, "a/pkg.toml", "a-b/pkg.toml", "a/b/pkg.toml", "ab/pkg.toml")
    files, trails = discover(tmp_path)
    assert files == ["a-b/pkg.toml", "a/b/pkg.toml", "a/pkg.toml", "ab/pkg.toml"]
    assert trails == [("a-b/pkg.toml",), ("a/pkg.toml", "a/b/pkg.toml"), ("ab/pkg.toml",)]


def test_scan_lists_every_file_and_the_links_it_does_not_follow(tmp_path: Path) -> None:
    _touch(tmp_path, "pkg.toml", "a/pkg.toml", "a/x.patch", ".git/config", "a/.hidden")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "pkg.toml").symlink_to(tmp_path / "a" / "pkg.toml")
    (tmp_path / "alink").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "plink").symlink_to(tmp_path / "a" / "x.patch")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    listing = scan(tmp_path)
    files = ["a/pkg.toml", "a/plink", "a/x.patch", "b/pkg.toml", "pkg.toml"]
    assert sorted(listing.files) == [f"{tmp_path}/{rel}" for rel in files]  # links to files too
    assert sorted(listing.links) == ["alink", "b/pkg.toml"]
    assert listing.pkg_tomls() == ["a/pkg.toml", "pkg.toml"]  # a linked pkg.toml is none
    links: list[str] = []
    assert discover(tmp_path, links)[0] == listing.pkg_tomls()
    assert sorted(links) == ["alink", "b/pkg.toml"]


@pytest.mark.parametrize("size", [0, 1, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, 300_000])
def test_read_bytes_reads_the_whole_file(tmp_path: Path, size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    (tmp_path / "f").write_bytes(data)
    assert read_bytes(str(tmp_path / "f")) == data


def test_reading_a_directory_as_toml_is_an_invalid_value(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match="^cannot read: Is a directory$"):
        read_toml(str(tmp_path))


def test_loading_the_example_repo(example_repo: Path) -> None:
    files, trails = discover(example_repo)
    assert len(files) == 31
    assert len(trails) == 29
    leaves = {t[-1] for t in trails}
    assert "s/19.0/pkg.toml" in leaves
    assert "s/pkg.toml" not in leaves and "pkg.toml" not in leaves
    by_leaf = {t[-1]: t for t in trails}
    assert by_leaf["z/pkg.toml"] == ("pkg.toml", "z/pkg.toml")
    assert by_leaf["s/19.1/pkg.toml"] == ("pkg.toml", "s/pkg.toml", "s/19.1/pkg.toml")
    assert "nope/pkg.toml" not in by_leaf


@pytest.mark.parametrize(
    ("base", "overlay", "expected"),
    [
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}, {"a": {"x": 1, "y": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),  # arrays are replaced
        ({"a": [1, 2]}, {}, {"a": [1, 2]}),  # ... or inherited unchanged
        ({"a": {"b": {"c": 1}}}, {"a": {"b": {"d": 2}}}, {"a": {"b": {"c": 1, "d": 2}}}),
        ({"a": {"x": 1}}, {"a": "s"}, {"a": "s"}),
        ({"Foo": 1}, {"foo": 2}, {"Foo": 1, "foo": 2}),  # case-sensitive keys
    ],
)
def test_merge(base, overlay, expected) -> None:
    assert merge(base, overlay) == expected


def test_merge_does_not_modify_its_inputs() -> None:
    base = {"a": {"x": 1}}
    merge(base, {"a": {"y": 2}})
    assert base == {"a": {"x": 1}}


TEXT = """\
name = "x"

[sources.src]
url = "u"
hash.type = "sha1"
hash.hash = "abc"

[dependencies]
runtime = [
  { name = "a =1", condition = { in_imag = "x" } },
]
"""


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("name", 1),
        ("sources.src", 3),
        ("sources.src.url", 4),
        ("sources.src.hash.type", 5),
        ("sources.src.hash.hash", 6),
        ("dependencies.runtime", 9),
        ("dependencies.runtime[0].condition.in_imag", 10),
        ("nothing.here", None),
    ],
)
def test_find_key_line(key: str, line: int | None) -> None:
    assert find_key_line(TEXT, key) == line
