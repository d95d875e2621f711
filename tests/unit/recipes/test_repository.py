from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from airflow_butido.recipes import RecipeErrors, load_repository
from airflow_butido.recipes.dependency import Condition, Dependency
from tests.unit.recipes.repo_factory import ROOT_PKG, leaf, packages, write_repo

SHA1 = "e5fa44f2b31c1fb553b6021e7360d07d5d91ff5e"


def load(root: Path):
    return load_repository(root, environ={})


def errors_of(root: Path) -> list:
    with pytest.raises(RecipeErrors) as info:
        load(root)
    return list(info.value.errors)


# ----------------------------------------------------------------- the example repository


def test_load_example_pkg_repo(example_repo: Path) -> None:
    repo = load(example_repo)
    assert len(repo) == 29
    for name, version in [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("s", "19.0"),
        ("s", "19.1"),
        ("z", "26"),
    ]:
        package = repo.get(name, version)
        assert package is not None
        assert len(package.sources) == 1


@pytest.mark.parametrize(
    ("version", "patches"),
    [
        ("19.0", ("s/19.0/foo.patch", "s/19.0/s190.patch")),
        ("19.1", ("s/foo.patch",)),
        ("19.2", ("s/foo.patch",)),
        ("19.3", ("s/19.3/s193.patch",)),
    ],
)
def test_example_patch_lists(example_repo: Path, version: str, patches: tuple[str, ...]) -> None:
    assert load(example_repo).get("s", version).patches == patches


def test_example_layers_provide_fields(example_repo: Path) -> None:
    s = load(example_repo).get("s", "19.0")
    assert s.layers == ("pkg.toml", "s/pkg.toml", "s/19.0/pkg.toml")
    assert s.path == "s/19.0/pkg.toml"
    assert s.version_is_semver is False
    assert s.sources[0].hash_type == "sha1"  # from the root layer
    assert s.sources[0].hash == "ba9f376fa71904ccde2a756a24a4e47ec014ee0a"  # from s/pkg.toml
    assert [p.name for p in s.phases] == ["sourcecheck", "patchcheck", "depcheck", "build"]
    a = load(example_repo).get("a", "1")
    assert a.runtime_dependencies == (Dependency("a", "x", "runtime"),)[:0] + (
        Dependency("b", "2", "runtime"),
        Dependency("c", "3", "runtime"),
    )


# ----------------------------------------------------------------- finding packages


def _multi(tmp_path: Path):
    return load(
        write_repo(
            tmp_path,
            packages(
                ("a", "1", []),
                ("a", "2", []),
                ("a", "2.1", []),
                ("b", "1", []),
            ),
        )
    )


def test_finding_by_name(tmp_path: Path) -> None:
    repo = _multi(tmp_path)
    assert [p.version for p in repo.find("a")] == ["1", "2", "2.1"]
    assert repo.find("nope") == []
    assert repo.versions_of("a") == ["1", "2", "2.1"]
    assert repo.names() == ["a", "b"]


@pytest.mark.parametrize(
    ("constraint", "versions"), [("=2", ["2"]), ("2", ["2", "2.1"]), ("2.1", ["2.1"]), ("3", [])]
)
def test_find_with_version_constraint(tmp_path: Path, constraint: str, versions) -> None:
    assert [p.version for p in _multi(tmp_path).find("a", constraint)] == versions


def test_iteration_is_sorted_by_key(tmp_path: Path) -> None:
    assert [p.key for p in _multi(tmp_path)] == [("a", "1"), ("a", "2"), ("a", "2.1"), ("b", "1")]


# ----------------------------------------------------------------- layering


def test_deeper_layer_replaces_arrays_and_merges_tables(tmp_path: Path) -> None:
    repo = load(
        write_repo(
            tmp_path,
            {
                "g/pkg.toml": (
                    'allowed_images = ["fooimage"]\n[environment]\nA = "1"\nB = "2"\n'
                    '[dependencies]\nruntime = ["x =1"]\nbuild = []\n'
                ),
                "g/p/pkg.toml": (
                    'name = "p"\nversion = "1"\nallowed_images = ["barimage"]\n'
                    '[environment]\nB = "3"\nb = "4"\n'
                ),
                "g/q/pkg.toml": 'name = "q"\nversion = "1"\n[dependencies]\nruntime = []\n',
                "x/pkg.toml": leaf("x", "1"),
            },
        )
    )
    p, q = repo.get("p", "1"), repo.get("q", "1")
    assert p.allowed_images == ("barimage",)
    assert p.environment == (("A", "1"), ("B", "3"), ("b", "4"))  # case-sensitive keys
    assert [d.label for d in p.dependencies] == ["x 1"]  # inherited unchanged
    assert q.dependencies == ()  # replaced by the leaf
    assert q.allowed_images == ("fooimage",)


def test_every_pkg_toml_field_is_read(tmp_path: Path) -> None:
    sha256, sha512 = "ab" * 32, "cd" * 64
    text = f"""\
name = "full"
version = "2.0.1"
version_is_semver = true
patches = ["fix.patch"]
allowed_images = ["debian:bookworm", "fooimage"]
denied_images = ["barimage"]

[dependencies]
build = ["b 1", {{ name = "b =1", condition = {{ has_env = ["CC", "CXX"] }} }}]
runtime = [
    {{ name = "b =1", condition = {{ env_eq = {{ TARGET = "x86_64" }}, in_image = "fooimage" }} }},
]

[sources.src]
url = "https://example.com/full-2.0.1.tar.gz"
hash.type = "sha256"
hash.hash = "{sha256}"

[sources.docs]
url = "ftp://example.com/docs.tar.xz"
hash = {{ type = "sha512", hash = "{sha512}" }}
download_manually = true

[environment]
CFLAGS = "-O2"

[meta]
description = "all fields"

[phases]
fixup.path = "scripts/fixup.sh"
"""
    root = write_repo(
        tmp_path, {"g/full/pkg.toml": text, "g/full/fix.patch": "", "b/pkg.toml": leaf("b", "1")}
    )
    p = load(root).get("full", "2.0.1")
    assert p.version_is_semver is True
    assert p.patches == ("g/full/fix.patch",)
    assert p.allowed_images == ("debian:bookworm", "fooimage")
    assert p.denied_images == ("barimage",)
    assert p.build_dependencies == (
        Dependency("b", "1", "build"),
        Dependency("b", "1", "build", Condition(has_env=("CC", "CXX"))),
    )
    assert p.runtime_dependencies == (
        Dependency(
            "b", "1", "runtime", Condition(env_eq=(("TARGET", "x86_64"),), in_image=("fooimage",))
        ),
    )
    assert [(s.name, s.url, s.hash_type, s.hash, s.download_manually) for s in p.sources] == [
        ("src", "https://example.com/full-2.0.1.tar.gz", "sha256", sha256, False),
        ("docs", "ftp://example.com/docs.tar.xz", "sha512", sha512, True),
    ]
    assert p.environment == (("CFLAGS", "-O2"),)
    assert p.meta == (("description", "all fields"),)
    assert [(ph.name, ph.script, ph.path) for ph in p.phases] == [
        ("build", "echo build", None),
        ("fixup", None, "scripts/fixup.sh"),
    ]
    assert p.layers == ("pkg.toml", "g/full/pkg.toml")


def test_conditional_dependencies_are_loaded(tmp_path: Path) -> None:
    repo = load(
        write_repo(
            tmp_path,
            {
                "a/pkg.toml": leaf("a", "1", build=['{ name = "b =1", condition.has_env = "X" }']),
                "b/pkg.toml": leaf("b", "1"),
            },
        )
    )
    assert repo.get("a", "1").build_dependencies == (
        Dependency("b", "1", "build", Condition(has_env=("X",))),
    )


# ----------------------------------------------------------------- patches


def test_patches_resolve_against_the_declaring_layer(tmp_path: Path) -> None:
    repo = load(
        write_repo(
            tmp_path,
            {
                "g/pkg.toml": 'patches = ["common.patch"]\n',
                "g/common.patch": "",
                "g/fix/x.patch": "",
                "g/a/pkg.toml": leaf("a", "1"),
                "g/b/pkg.toml": leaf("b", "1", extra='patches = ["../fix/./x.patch"]'),
            },
        )
    )
    assert repo.get("a", "1").patches == ("g/common.patch",)
    assert repo.get("b", "1").patches == ("g/fix/x.patch",)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("missing.patch", "patch does not exist: a/missing.patch"),
        ("../../outside.patch", "points outside the repository"),
        ("/etc/passwd", "must be relative"),
    ],
)
def test_bad_patches(tmp_path: Path, patch: str, message: str) -> None:
    errors = errors_of(
        write_repo(
            tmp_path,
            {
                "a/pkg.toml": leaf("a", "1", extra=f'patches = ["{patch}"]'),
            },
        )
    )
    assert len(errors) == 1
    assert errors[0].file == "a/pkg.toml"
    assert errors[0].key == "patches[0]"
    assert message in errors[0].message


# ----------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (
            f'[sources.src]\nurl = "https://x"\nhash = {{ type = "sha1", hash = "{SHA1}" }}\n'
            'urll = "y"',
            "sources.src.urll",
        ),
        (
            f'[sources.src]\nurl = "https://x"\n'
            f'hash = {{ type = "sha1", hash = "{SHA1}", typo = 1 }}',
            "sources.src.hash.typo",
        ),
        ('[phases.build]\nscript = "x"\nscirpt = "y"', "phases.build.scirpt"),
        ('[meta]\nA = ["x"]', "meta.A"),
        ("[environment]\nA = 1.5", "environment.A"),
    ],
)
def test_unknown_or_bad_keys_are_rejected_with_file_and_key(
    tmp_path: Path, extra: str, key: str
) -> None:
    errors = errors_of(write_repo(tmp_path, {"a/pkg.toml": leaf("a", "1") + extra + "\n"}))
    assert [(e.file, e.key) for e in errors] == [("a/pkg.toml", key)]


@pytest.mark.parametrize(
    ("deps", "key"),
    [
        ('runtime = ["b =1"]\nbuild = []\ntest = []', "dependencies.test"),
        ('runtime = [{ name = "b =1", cond = {} }]\nbuild = []', "dependencies.runtime[0].cond"),
        (
            'runtime = [{ name = "b =1", condition = { has_enn = "A" } }]\nbuild = []',
            "dependencies.runtime[0].condition.has_enn",
        ),
        ('runtime = ["b >1"]\nbuild = []', "dependencies.runtime[0]"),
        ('runtime = []\nbuild = ["ok =1", "b  1"]', "dependencies.build[1]"),
    ],
)
def test_dependency_errors_name_the_key(tmp_path: Path, deps: str, key: str) -> None:
    text = f'name = "a"\nversion = "1"\n[dependencies]\n{deps}\n'
    errors = errors_of(write_repo(tmp_path, {"a/pkg.toml": text, "b/pkg.toml": leaf("b", "1")}))
    assert [(e.file, e.key) for e in errors] == [("a/pkg.toml", key)]


def test_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    errors = errors_of(write_repo(tmp_path, {"a/pkg.toml": leaf("a", "1", extra="flags = []")}))
    assert [(e.file, e.key, e.line) for e in errors] == [("a/pkg.toml", "flags", 3)]
    assert "flags were removed" in errors[0].message


def test_dependency_lists_are_both_required(tmp_path: Path) -> None:
    root_pkg = ROOT_PKG.replace("build = []\n", "")
    errors = errors_of(
        write_repo(tmp_path, {"a/pkg.toml": 'name = "a"\nversion = "1"\n'}, root_pkg=root_pkg)
    )
    assert [(e.file, e.key) for e in errors] == [("pkg.toml", "dependencies.build")]


def test_unknown_key_error_carries_the_line(tmp_path: Path) -> None:
    text = (
        leaf("a", "1") + "\n[sources.src]\nurl = 'https://x'\nhash.type = 'sha1'\n"
        f"hash.hash = '{SHA1}'\nhash.tpye = 'x'\n"
    )
    root = write_repo(tmp_path, {"a/pkg.toml": text})
    (error,) = errors_of(root)
    lines = (root / "a/pkg.toml").read_text().splitlines()
    assert error.key == "sources.src.hash.tpye"
    assert lines[error.line - 1].startswith("hash.tpye")
    assert str(error) == f"a/pkg.toml:{error.line}: sources.src.hash.tpye: {error.message}"


def test_error_in_a_shared_layer_is_reported_once_against_that_layer(tmp_path: Path) -> None:
    errors = errors_of(
        write_repo(
            tmp_path,
            {
                "g/pkg.toml": "[sources.src]\nhash.type = 'md5'\n",
                "g/a/pkg.toml": leaf("a", "1")
                + f"[sources.src]\nurl = 'https://x'\nhash.hash = '{SHA1}'",
                "g/b/pkg.toml": leaf("b", "1")
                + f"[sources.src]\nurl = 'https://x'\nhash.hash = '{SHA1}'",
            },
        )
    )
    assert [(e.file, e.key, e.line) for e in errors] == [("g/pkg.toml", "sources.src.hash.type", 2)]
    assert "md5" in errors[0].message


def test_key_missing_below_a_shared_table_names_the_packages_lacking_it(tmp_path: Path) -> None:
    root_pkg = ROOT_PKG.replace("[sources]\n", "[sources.src]\nhash.type = 'sha1'\n")
    src = f"[sources.src]\nurl = 'https://x'\nhash.hash = '{SHA1}'\n"
    files = {f"{n}/pkg.toml": leaf(n, "1") for n in "abcde"}
    files["f/pkg.toml"] = leaf("f", "1") + src
    errors = errors_of(write_repo(tmp_path, files, root_pkg=root_pkg))
    assert [(e.file, e.key) for e in errors] == [
        ("pkg.toml", "sources.src.url"),
        ("pkg.toml", "sources.src.hash.hash"),
    ]
    assert errors[0].message == (
        "missing required key in a/pkg.toml, b/pkg.toml, c/pkg.toml and 2 more"
    )
    assert str(errors[1]) == (
        "pkg.toml: sources.src.hash.hash: missing required key in a/pkg.toml, b/pkg.toml, "
        "c/pkg.toml and 2 more"
    )


@pytest.mark.parametrize(
    ("source", "key", "message"),
    [
        (
            f"url = 'https://x'\nhash.type = 'sha1'\nhash.hash = '{SHA1.upper()}'",
            "sources.src.hash.hash",
            "lower-case hexadecimal",
        ),
        (
            f"url = 'https://x'\nhash.type = 'sha256'\nhash.hash = '{SHA1}'",
            "sources.src.hash.hash",
            "64 hex digits",
        ),
        (
            f"url = 'not a url'\nhash.type = 'sha1'\nhash.hash = '{SHA1}'",
            "sources.src.url",
            "not a URL",
        ),
        (f"hash.type = 'sha1'\nhash.hash = '{SHA1}'", "sources.src.url", "missing"),
        (
            f"url = 'https://x'\nhash.type = 'sha1'\nhash.hash = '{SHA1}'\n"
            "download_manually = 'yes'",
            "sources.src.download_manually",
            "boolean",
        ),
    ],
)
def test_source_validation(tmp_path: Path, source: str, key: str, message: str) -> None:
    errors = errors_of(
        write_repo(tmp_path, {"a/pkg.toml": leaf("a", "1") + "[sources.src]\n" + source + "\n"})
    )
    assert [(e.key, message in e.message) for e in errors] == [(key, True)]


def test_phase_needs_exactly_one_of_script_and_path(tmp_path: Path) -> None:
    errors = errors_of(
        write_repo(
            tmp_path,
            {
                "a/pkg.toml": leaf("a", "1") + "[phases.build]\npath = 'x.sh'\n",
            },
        )
    )
    assert [(e.key, e.message) for e in errors] == [
        ("phases.build", "expected exactly one of 'script' and 'path'")
    ]


def test_missing_required_keys(tmp_path: Path) -> None:
    errors = errors_of(write_repo(tmp_path, {"a/pkg.toml": 'name = "a"\n'}, root_pkg=None))
    keys = {e.key for e in errors}
    assert keys == {"version", "version_is_semver", "sources", "dependencies", "patches", "phases"}


def test_toml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    errors = errors_of(write_repo(tmp_path, {"a/pkg.toml": 'name = "a"\nversion = \n'}))
    assert [(e.file, e.line) for e in errors] == [("a/pkg.toml", 2)]
    assert "TOML syntax error" in errors[0].message


def test_duplicate_leaves_name_both_files(tmp_path: Path) -> None:
    errors = errors_of(
        write_repo(
            tmp_path,
            {
                "one/pkg.toml": leaf("a", "1"),
                "two/pkg.toml": leaf("a", "1"),
            },
        )
    )
    assert len(errors) == 1
    assert "one/pkg.toml" in errors[0].message and "two/pkg.toml" in errors[0].message


def test_all_broken_files_are_reported_together(tmp_path: Path) -> None:
    root = write_repo(
        tmp_path,
        {
            "a/pkg.toml": "name = ",
            "b/pkg.toml": leaf("b", "1", ["c >1"]),
            "c/pkg.toml": leaf("c", "1", extra="flags = []"),
            "d/pkg.toml": leaf("d", "1"),
        },
    )
    with pytest.raises(RecipeErrors) as info:
        load(root)
    assert [e.file for e in info.value.errors] == ["a/pkg.toml", "b/pkg.toml", "c/pkg.toml"]
    assert len(str(info.value).splitlines()) == 3


def test_integer_version_is_accepted_as_string(tmp_path: Path) -> None:
    repo = load(write_repo(tmp_path, {"a/pkg.toml": 'name = "a"\nversion = 2\n'}))
    assert repo.get("a", "2") is not None


# ----------------------------------------------------------------- values


def test_package_is_picklable_and_has_the_template_shape(tmp_path: Path) -> None:
    repo = load(
        write_repo(
            tmp_path,
            {
                "a/pkg.toml": leaf(
                    "a",
                    "1",
                    ["b =1", '{ name = "b 1", condition.in_image = "x" }'],
                    extra='[meta]\nk = "v"\n',
                ),
                "b/pkg.toml": leaf("b", "1"),
            },
        )
    )
    a = repo.get("a", "1")
    assert pickle.loads(pickle.dumps(a)) == a
    ctx = a.template_context()
    assert ctx["dependencies"] == {
        "build": [],
        "runtime": ["b =1", {"name": "b 1", "condition": {"in_image": "x"}}],
    }
    assert ctx["meta"] == {"k": "v"}
    assert "environment" not in ctx and "allowed_images" not in ctx
    assert ctx["phases"] == {"build": {"script": "echo build"}}
    assert ctx["sources"] == {}
    assert a.phase("build").script == "echo build" and a.phase("nope") is None


def test_root_pkg_fixture_is_valid(tmp_path: Path) -> None:
    assert "phases" in ROOT_PKG
    assert len(load(write_repo(tmp_path, {"a/pkg.toml": leaf("a", "1")}))) == 1


def test_broken_config_and_broken_packages_are_reported_together(tmp_path: Path) -> None:
    from airflow_butido.errors import ConfigError
    from tests.unit.recipes.repo_factory import CONFIG

    config = CONFIG.replace("maxjobs = 2", "maxjobs = 0")
    root = write_repo(tmp_path, {"a/pkg.toml": leaf("a", "1", extra="bogus = 1")}, config=config)
    with pytest.raises(ConfigError) as info:
        load(root)
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert lines[1].startswith("config.toml:") and "maxjobs: must be at least 1" in lines[1]
    assert lines[2:] == [
        "invalid packages:",
        "a/pkg.toml:3: bogus: unknown key; set strict_keys = false to accept unknown keys "
        "with a warning",
    ]
    (root / "a/pkg.toml").write_text(leaf("a", "1"))
    with pytest.raises(ConfigError, match="maxjobs") as info:
        load(root)
    assert "invalid packages" not in str(info.value)


def test_the_loader_reads_the_pkg_toml_files_of_the_listing_it_is_given(tmp_path: Path) -> None:
    from airflow_butido.recipes.layers import scan

    root = write_repo(tmp_path, packages(("a", "1", ["b =1"]), ("b", "1", [])))
    listing = scan(root)  # as the parse cache walks the repository for its fingerprint
    write_repo(tmp_path, packages(("c", "1", [])))
    assert load_repository(root, environ={}, listing=listing).names() == ["a", "b"]
    assert load(root).names() == ["a", "b", "c"]


def test_packages_writing_the_same_dependency_share_it(tmp_path: Path) -> None:
    root = write_repo(
        tmp_path, packages(("a", "1", ["c =1"]), ("b", "1", ["c =1"]), ("c", "1", []))
    )
    repo = load(root)
    (a_dep,) = repo.get("a", "1").dependencies
    (b_dep,) = repo.get("b", "1").dependencies
    assert a_dep is b_dep and a_dep == Dependency("c", "1", "runtime", None, "c =1")


def test_a_bad_dependency_string_is_reported_for_every_package_writing_it(tmp_path: Path) -> None:
    root = write_repo(tmp_path, packages(("a", "1", ["c  =1"]), ("b", "1", ["c  =1"])))
    errors = errors_of(root)
    assert [(e.file, e.key) for e in errors] == [
        ("a/1/pkg.toml", "dependencies.runtime[0]"),
        ("b/1/pkg.toml", "dependencies.runtime[0]"),
    ]
