"""The distribution itself: entry points, pinned installs, CI semantics of the fixtures."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from tests import conftest

ROOT = Path(__file__).resolve().parents[2]


def _entry_point(group: str, name: str) -> metadata.EntryPoint:
    eps = metadata.distribution("airflow-butido").entry_points
    (found,) = [ep for ep in eps if ep.group == group and ep.name == name]
    return found


def test_airflow_finds_the_provider_through_its_entry_point() -> None:
    ep = _entry_point("apache_airflow_provider", "provider_info")
    assert ep in metadata.entry_points(group="apache_airflow_provider")
    assert ep.value == "airflow_butido.provider:get_provider_info"
    info = ep.load()()
    assert info["package-name"] == "airflow-butido"
    assert info["versions"] == [metadata.version("airflow-butido")]


def test_butido_console_script_is_installed_next_to_the_interpreter() -> None:
    assert _entry_point("console_scripts", "butido").value == "airflow_butido.cli.main:main"
    assert (Path(sys.executable).parent / "butido").is_file()


def test_every_dependency_is_pinned_in_the_constraints_file() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + [r for reqs in extras.values() for r in reqs]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].lower())
        if name == project["name"]:  # an extra naming other extras of this project
            extra_names = re.findall(r"\[(.*)\]", requirement)[0].split(",")
            assert set(extra_names) <= set(extras), requirement
            continue
        assert name in pins, f"{requirement} is not pinned in constraints.txt"
    assert pins["apache-airflow"].startswith("3.3.")


def test_ci_runs_the_readme_test_command_with_ci_true() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["scripts/run-example", "scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "export CI=true" in ci and ci.rstrip().endswith("exec scripts/test")


def test_missing_infrastructure_fails_under_ci_and_skips_elsewhere(monkeypatch) -> None:
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="missing in CI: no engine"):
        conftest.unavailable("no engine")
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="no engine"):
        conftest.unavailable("no engine")
