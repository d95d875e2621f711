from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_butido.errors import ButidoError
from tests.unit.cli.runner import butido_fixture
from tests.unit.recipes.repo_factory import CONFIG, ROOT_PKG, leaf, write_repo

run = butido_fixture()


def test_lint_ok_on_the_example_repository(run, example_repo: Path) -> None:
    code, out, err = run("--repo", example_repo, "lint")
    assert (code, out, err) == (0, "29 package(s) ok\n", "")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            leaf("a", "1", extra='[phases]\ncheck.script = "x"'),
            "phases not in available_phases: check",
        ),
        (leaf("a", "1", ["b =1"]), "runtime dependency b 1 does not exist (versions of b: none)"),
        (
            leaf("a", "1", extra='allowed_images = ["foo"]'),
            "allowed_images: 'foo' is a short name and never matches; write 'fooimage'",
        ),
        (
            leaf("a", "1", extra='denied_images = ["ubuntu"]'),
            "denied_images: image 'ubuntu' is not configured",
        ),
    ],
)
def test_lint_reports_package_problems(run, tmp_path: Path, text: str, problem: str) -> None:
    root = write_repo(tmp_path, {"a/pkg.toml": text})
    code, out, err = run("--repo", root, "lint")
    assert code == 1
    assert f"a 1 (a/pkg.toml): {problem}\n" in out
    assert "error: lint failed: 1 problem(s) in 1 package(s)" in err


def test_lint_requires_exactly_the_configured_phases(run, tmp_path: Path) -> None:
    config = CONFIG.replace('available_phases = ["build"]', 'available_phases = ["a", "build"]')
    root = write_repo(tmp_path, {"a/pkg.toml": leaf("a", "1")}, config=config)
    assert "phases missing: a" in run("--repo", root, "lint")[1]


def test_lint_rejects_path_phases(run, tmp_path: Path) -> None:
    root = write_repo(
        tmp_path,
        {"a/pkg.toml": leaf("a", "1", extra='phases.build = { path = "x" }')},
        root_pkg=ROOT_PKG.replace('build.script = "echo build"', ""),
    )
    code, out, _ = run("--repo", root, "lint")
    assert "'path' phases are not supported" in out


def test_lint_checks_environment_names(run, tmp_path: Path) -> None:
    config = CONFIG.replace(
        "check_env_names = false\nallowed_env = []", 'check_env_names = true\nallowed_env = ["OK"]'
    )
    text = leaf("a", "1", extra='[environment]\nOK = "1"\nBAD = "2"')
    root = write_repo(tmp_path, {"a/pkg.toml": text}, config=config)
    out = run("--repo", root, "lint")[1]
    assert "environment variable BAD is not in containers.allowed_env" in out
    assert "variable OK" not in out


def test_lint_finds_cycles_hidden_behind_conditions(run, tmp_path: Path) -> None:
    root = write_repo(
        tmp_path,
        {
            "a/pkg.toml": leaf("a", "1", ['{ name = "b =1", condition.has_env = "X" }']),
            "b/pkg.toml": leaf("b", "1", ["a =1"]),
        },
    )
    code, out, _ = run("--repo", root, "lint")
    assert code == 1 and "dependency cycle: a 1 -> b 1 -> a 1" in out


def test_lint_of_one_package(run, tmp_path: Path) -> None:
    root = write_repo(
        tmp_path, {"a/pkg.toml": leaf("a", "1"), "b/pkg.toml": leaf("b", "1", ["x 1"])}
    )
    assert run("--repo", root, "lint", "a")[:2] == (0, "1 package(s) ok\n")


@dataclass
class _Result:
    ok: bool
    output: str


def test_lint_renders_and_runs_the_script_linter(run, tmp_path: Path, monkeypatch) -> None:
    config = CONFIG.replace("compatibility = 1", 'compatibility = 1\nscript_linter = "lint.sh"')
    root = write_repo(
        tmp_path, {"a/pkg.toml": leaf("a", "1"), "b/pkg.toml": leaf("b", "1")}, config=config
    )
    calls = []

    def render_script(package, cfg):
        if package.name == "b":
            raise ButidoError("strict mode: no such variable")
        return f"script of {package.label}"

    def lint_script(linter, script, *, cwd):
        calls.append((linter, script, cwd))
        return _Result(False, "SC2086: quote this")

    render = types.ModuleType("airflow_butido.scripts.render")
    render.render_script = render_script
    lint = types.ModuleType("airflow_butido.scripts.lint")
    lint.lint_script = lint_script
    monkeypatch.setitem(sys.modules, "airflow_butido.scripts.render", render)
    monkeypatch.setitem(sys.modules, "airflow_butido.scripts.lint", lint)
    code, out, _ = run("--repo", root, "lint")
    assert code == 1
    assert calls == [(root / "lint.sh", "script of a 1", root)]
    assert "a 1 (a/pkg.toml): script linter" in out and "SC2086: quote this" in out
    assert "b 1 (b/pkg.toml): script does not render: strict mode: no such variable" in out


def test_lint_pipes_every_rendered_script_into_the_real_linter(run, tmp_path: Path) -> None:
    config = CONFIG.replace("compatibility = 1", 'compatibility = 1\nscript_linter = "lint.sh"')
    forbidden = "[phases]\nbuild.script = 'echo FORBIDDEN {{name}}-{{version}}'\n"
    root = write_repo(
        tmp_path,
        {"a/pkg.toml": leaf("a", "1"), "b/pkg.toml": leaf("b", "2") + forbidden},
        config=config,
    )
    linter = root / "lint.sh"
    linter.write_text(
        "#!/bin/sh\n"
        'script=$(cat)\nprintf "%s\\n----\\n" "$script" >> seen.txt\n'
        'case "$script" in *FORBIDDEN*) echo "line 3: FORBIDDEN used"; exit 1;; esac\n'
    )
    linter.chmod(0o755)
    code, out, err = run("--repo", root, "lint")
    assert code == 1
    assert "Traceback" not in err
    assert "b 2 (b/pkg.toml): script linter" in out and "line 3: FORBIDDEN used" in out
    assert "a 1 (a/pkg.toml)" not in out
    seen = (root / "seen.txt").read_text().split("----\n")  # $(cat) drops final newlines
    assert sorted(seen[:-1]) == [
        "#!/bin/bash\n### phase build\necho FORBIDDEN b-2\n### / build phase\n",
        "#!/bin/bash\n### phase build\necho build\n### / build phase\n",
    ]
