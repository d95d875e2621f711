"""Package tasks wait for an endpoint slot in an Airflow pool sized to the endpoints'
``maxjobs`` (``[airflow] pool``), not in a running task process; the plan and the report
stay in the default pool. ``butido airflow pool`` creates or sizes the pool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_butido.airflow_rest import AirflowClient
from airflow_butido.cli import main as cli_main
from airflow_butido.dag_factory import create_dags
from airflow_butido.recipes.config import InvalidConfiguration, load_config
from tests.support import docker_toml
from tests.unit._repos import write_repo


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BUTIDO_CONFIG", "BUTIDO_SETTINGS", "BUTIDO_AIRFLOW_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", raising=False)
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = write_repo(tmp_path / "repo", {"app/1": "", "lib/1": ""})
    config = root / "config.toml"
    docker = docker_toml([("registry.local/one:1", "one")], {"b1": 3, "b2": 2})
    config.write_text(config.read_text().split("[docker]")[0] + docker)
    return root


def test_package_tasks_use_the_configured_pool(repo: Path) -> None:
    (repo / "airflow-butido.toml").write_text('[airflow]\npool = "butido_builds"\n')
    dag = create_dags(repo)["butido_one"]
    assert {dag.get_task(t).pool for t in ("app-1", "lib-1")} == {"butido_builds"}
    assert dag.get_task("plan").pool == dag.get_task("report").pool == "default_pool"


def test_without_a_pool_every_task_is_in_the_default_pool(repo: Path) -> None:
    dag = create_dags(repo)["butido_one"]
    assert {task.pool for task in dag.tasks} == {"default_pool"}


def test_a_bad_pool_name_names_the_key(repo: Path) -> None:
    (repo / "airflow-butido.toml").write_text('[airflow]\npool = "two words"\n')
    with pytest.raises(InvalidConfiguration) as info:
        load_config(repo)
    assert "airflow.pool" in str(info.value) and "'two words'" in str(info.value)


def test_the_command_sizes_the_pool_to_the_endpoints_maxjobs(
    repo: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Inside a deployment: `airflow pools set NAME SLOTS DESCRIPTION`."""
    (repo / "airflow-butido.toml").write_text('[airflow]\npool = "butido_builds"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    called = tmp_path / "called"
    fake = bin_dir / "airflow"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {called}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert cli_main.main(["--repo", str(repo), "airflow", "pool"]) == 0
    assert called.read_text().splitlines()[:4] == ["pools", "set", "butido_builds", "5"]
    assert "pool butido_builds: 5 slots" in capsys.readouterr().out


def test_without_a_configured_pool_the_command_does_nothing(repo: Path, capsys) -> None:
    assert cli_main.main(["--repo", str(repo), "airflow", "pool", "--dry-run"]) == 0
    assert "no [airflow] pool" in capsys.readouterr().out


class FakeSession:
    """Answers like Airflow's pools API: PATCH of a missing pool is 404."""

    def __init__(self, existing: dict[str, dict[str, Any]]) -> None:
        self.headers: dict[str, str] = {}
        self.pools = existing
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        self.calls.append((method, url.split("/api/v2", 1)[1]))
        response = requests.Response()
        name = url.rsplit("/", 1)[1]
        body = kwargs.get("json") or {}
        if method == "PATCH" and name not in self.pools:
            response.status_code, response._content = 404, b'{"detail": "not found"}'
            return response
        if method == "PATCH":
            # a whole pool, as Airflow validates it; the mask says what changes
            assert {"pool", "slots", "include_deferred"} <= set(body) and body["pool"] == name
            assert kwargs["params"] == {"update_mask": ["slots", "description"]}
            self.pools[name].update({k: body[k] for k in kwargs["params"]["update_mask"]})
        else:
            self.pools[body["name"]] = body
        response.status_code, response._content = 200, b"{}"
        return response


@pytest.mark.parametrize("exists", [False, True])
def test_rest_creates_or_updates_the_pool(exists: bool) -> None:
    session = FakeSession({"butido": {"slots": 1}} if exists else {})
    client = AirflowClient("http://airflow", token="t", session=session)  # type: ignore[arg-type]
    client.set_pool("butido", 5, "maxjobs")
    assert session.pools["butido"]["slots"] == 5
    expected = [("PATCH", "/pools/butido")] + ([] if exists else [("POST", "/pools")])
    assert session.calls == expected
