"""``[airflow.queues]`` routes a package's tasks to a Celery queue, so that it runs on the
workers listening to that queue (special hardware, another architecture); other packages,
the plan and the report stay on the executor's default queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.cli import main as cli_main
from airflow_butido.dag_factory import create_dags
from airflow_butido.recipes.config import InvalidConfiguration, load_config
from airflow_butido.recipes.errors import RecipeErrors
from airflow_butido.recipes.repository import load_repository
from tests.unit._repos import isolate_dag_parsing, write_repo


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_dag_parsing(monkeypatch)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "repo", {"app/1": "", "app/2": "", "lib/1": ""})


def settings(repo: Path, text: str) -> None:
    (repo / "airflow-butido.toml").write_text(text)


def test_listed_packages_go_to_their_queue_others_to_the_default(repo: Path) -> None:
    settings(repo, '[airflow]\npool = "builds"\n\n[airflow.queues]\napp = "arm64"\n')
    dag = create_dags(repo)["butido_one"]
    default = dag.get_task("plan").queue
    assert {dag.get_task(t).queue for t in ("app-1", "app-2")} == {"arm64"}
    assert dag.get_task("lib-1").queue == default != "arm64"
    assert dag.get_task("report").queue == default


def test_without_queues_every_task_is_on_the_default_queue(repo: Path) -> None:
    dag = create_dags(repo)["butido_one"]
    assert len({task.queue for task in dag.tasks}) == 1


def test_a_task_process_gets_its_queue_too(repo: Path, monkeypatch) -> None:
    """A worker's task process builds a DAG holding only its task."""
    settings(repo, '[airflow.queues]\nlib = "gpu"\n')
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "butido_one")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "lib-1")
    dag = create_dags(repo)["butido_one"]
    assert [(t.task_id, t.queue) for t in dag.tasks] == [("lib-1", "gpu")]


def test_an_unknown_package_names_the_file_key_and_line(repo: Path) -> None:
    settings(repo, '[airflow.queues]\napp = "arm64"\nlibb = "arm64"\n')
    with pytest.raises(RecipeErrors) as info:
        load_repository(repo)
    assert str(info.value) == (
        "airflow-butido.toml:3: airflow.queues.libb: no package named 'libb' in the repository"
    )


def test_an_unknown_package_in_the_settings_overlay_names_the_overlay(
    repo: Path, tmp_path: Path, monkeypatch
) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text('[airflow.queues]\n"no-such" = "x86"\n')
    monkeypatch.setenv("BUTIDO_SETTINGS", str(overlay))
    with pytest.raises(RecipeErrors) as info:
        load_repository(repo)
    assert f"{overlay}:2: airflow.queues.no-such: no package named" in str(info.value)


def test_the_cli_reports_an_unknown_package_without_a_traceback(repo: Path, capsys) -> None:
    settings(repo, '[airflow.queues]\nlibb = "arm64"\n')
    assert cli_main.main(["--repo", str(repo), "tree-of", "app"]) != 0
    err = capsys.readouterr().err
    assert "airflow-butido.toml:2: airflow.queues.libb: no package named 'libb'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[airflow.queues]\napp = 3\n", "airflow.queues.app: expected a queue name (a string)"),
        ('[airflow.queues]\napp = ["a"]\n', "expected a queue name (a string), got list"),
        ('[airflow.queues]\napp = "a,b"\n', "'a,b' is not a queue name"),
        ('[airflow.queues]\napp = ""\n', "'' is not a queue name"),
        ('[airflow]\nqueues = "arm64"\n', "airflow.queues: expected a table"),
    ],
)
def test_a_bad_value_names_the_file_and_key(repo: Path, text: str, message: str) -> None:
    settings(repo, text)
    with pytest.raises(InvalidConfiguration) as info:
        load_config(repo)
    assert "airflow-butido.toml:" in str(info.value) and message in str(info.value)
