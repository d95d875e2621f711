"""``find-pkg``, ``dependencies-of`` and ``what-depends`` print through
``package_print_format``, with butido's switches."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import config_toml
from tests.unit.cli.runner import butido_fixture
from tests.unit.recipes.repo_factory import leaf, write_repo

run = butido_fixture()

IMAGES = [("debian:bookworm", "deb12"), ("fooimage", "foo"), ("barimage", "bar")]


def repo(tmp_path: Path, extra_config: str = "") -> Path:
    files = {
        "a/pkg.toml": leaf(
            "a",
            "1",
            ["b =1"],
            build=["t =1"],
            extra=(
                'patches = ["fix.patch"]\nallowed_images = ["debian:bookworm"]\n'
                'denied_images = ["fooimage"]\n[environment]\nCC = "gcc"\n'
                '[sources.src]\nurl = "https://example.com/a.tgz"\n'
                'hash.type = "sha256"\nhash.hash = "' + "0" * 64 + '"\n'
            ),
        ),
        "a/fix.patch": "",
        "b/pkg.toml": leaf("b", "1"),
        "t/pkg.toml": leaf("t", "1"),
    }
    config = config_toml(images=IMAGES, extra=extra_config)
    return write_repo(tmp_path / "repo", files, config=config)


SECTIONS = {
    "Sources:": "        src = https://example.com/a.tgz (sha256: " + "0" * 64 + ")",
    "Build dependencies:": "        t =1",
    "Runtime dependencies:": "        b =1",
    "Patches:": "        a/fix.patch",
    "Environment:": "        CC = gcc",
    "Flags:": None,
    "Allowed images:": "        debian:bookworm",
    "Denied images:": "        fooimage",
    "Phases:": "        build",
}


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        ([], []),
        (["-S"], ["Sources:"]),
        (["--source"], ["Sources:"]),
        (["-D"], ["Build dependencies:", "Runtime dependencies:"]),
        (["-D", "--dependency-type", "build"], ["Build dependencies:"]),
        (["-D", "--dependency-type", "runtime"], ["Runtime dependencies:"]),
        (["-p"], ["Patches:"]),
        (["-E"], ["Environment:"]),
        (["-F"], ["Flags:"]),
        (["--allowed-images"], ["Allowed images:"]),
        (["--denied-images"], ["Denied images:"]),
        (["-P"], ["Phases:"]),
        (["-A"], list(SECTIONS)),
    ],
)
def test_find_pkg_switches(run, tmp_path: Path, flags: list[str], shown: list[str]) -> None:
    code, out, err = run("--repo", repo(tmp_path), "find-pkg", "^a$", *flags)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "0 - a 1"
    headings = [line.strip() for line in lines if line.strip() in SECTIONS]
    assert headings == shown
    for heading in shown:
        item = SECTIONS[heading]
        if item is not None:
            assert lines[lines.index("    " + heading) + 1] == item


def test_find_pkg_script_with_and_without_line_numbers(run, tmp_path: Path) -> None:
    root = repo(tmp_path)
    code, out, _ = run("--repo", root, "find-pkg", "^b$", "-s")
    assert code == 0 and "echo build" in out.splitlines()
    code, out, _ = run("--repo", root, "find-pkg", "^b$", "-s", "--line-numbers")
    assert code == 0 and any(line.endswith("| echo build") for line in out.splitlines())
    code, out, _ = run("--repo", root, "find-pkg", "^b$", "-s", "--no-line-numbers")
    assert "| echo build" not in out


def test_highlighting_needs_a_theme_and_colours_only_a_terminal(run, tmp_path: Path) -> None:
    code, _, err = run("--repo", repo(tmp_path), "find-pkg", "^b$", "-s", "--highlighting")
    assert code == 1 and "--highlighting needs script_highlight_theme" in err
    themed = repo(tmp_path / "themed", 'script_highlight_theme = "Solarized (dark)"')
    code, out, _ = run("--repo", themed, "find-pkg", "^b$", "-s", "--highlighting")
    assert code == 0 and "echo build" in out and "\x1b[" not in out  # piped: plain text


def test_highlighted_script_has_colours() -> None:
    from airflow_butido.cli.common import format_text

    text = format_text("echo build\n", line_numbers=True, highlight_theme="Solarized (dark)")
    assert "\x1b[" in text and text.startswith("1 | ")


def test_custom_print_format_for_dependencies_and_dependents(run, tmp_path: Path) -> None:
    fmt = 'package_print_format = "{{p.name}}={{p.version}} b:{{print_build_deps}}\\n"'
    root = repo(tmp_path, fmt)
    assert run("--repo", root, "what-depends", "t")[1] == "a=1 b:true\n"
    assert run("--repo", root, "what-depends", "b", "-t", "runtime")[1] == "a=1 b:false\n"
    assert run("--repo", root, "dependencies-of", "a")[1] == "a=1 b:true\n"
    assert run("--repo", root, "find-pkg", ".")[1] == "a=1 b:false\nb=1 b:false\nt=1 b:false\n"


def test_default_print_format_for_dependencies(run, tmp_path: Path) -> None:
    code, out, _ = run("--repo", repo(tmp_path), "depsof", "a", "-t", "build")
    assert out == "0 - a 1\n    Build dependencies:\n        t =1\n"


def test_bad_print_format_is_named(run, tmp_path: Path) -> None:
    root = repo(tmp_path, 'package_print_format = "{{#if p.name}}"')
    code, _, err = run("--repo", root, "find-pkg", "a")
    assert code == 1 and "package_print_format" in err and "Traceback" not in err
