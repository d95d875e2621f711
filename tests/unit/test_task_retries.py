"""Package tasks retry infrastructure failures: ``retries`` / ``retry_delay`` of the
``[airflow]`` table, honoured by Airflow and by the local runner of ``butido build``."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_butido.dag_factory import create_dags
from airflow_butido.local_build import LocalRun
from airflow_butido.recipes.config import InvalidConfiguration, load_config
from tests.unit._repos import isolate_dag_parsing, write_repo


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_dag_parsing(monkeypatch)


def test_package_tasks_retry_twice_after_30_seconds_by_default(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"app/1": "", "lib/1": ""})
    dag = create_dags(root)["butido_one"]
    for task_id in ("app-1", "lib-1"):
        task = dag.get_task(task_id)
        assert task.retries == 2
        assert task.retry_delay == timedelta(seconds=30)
    assert dag.get_task("plan").retries == 0
    assert dag.get_task("report").retries == 0


def test_retries_and_retry_delay_come_from_the_airflow_table(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"app/1": ""})
    (root / "airflow-butido.toml").write_text("[airflow]\nretries = 5\nretry_delay = 3\n")
    task = create_dags(root)["butido_one"].get_task("app-1")
    assert (task.retries, task.retry_delay) == (5, timedelta(seconds=3))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('retries = "two"', "airflow.retries: expected an integer, got str"),
        ("retry_delay = -1", "airflow.retry_delay: expected a non-negative integer, got -1"),
        ("retry_delay = 1.5", "airflow.retry_delay: expected an integer, got float"),
    ],
)
def test_bad_retry_settings_name_the_key(tmp_path: Path, line: str, message: str) -> None:
    root = write_repo(tmp_path / "repo", {"app/1": ""})
    (root / "airflow-butido.toml").write_text(f"[airflow]\n{line}\n")
    with pytest.raises(InvalidConfiguration) as info:
        load_config(root)
    assert message in str(info.value)


class Flaky(BaseOperator):
    """Raises an ordinary exception (an infrastructure failure) until its last try."""

    def __init__(self, *, fail_times: int, fatal: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_times = fail_times
        self.fatal = fatal
        self.tries: list[float] = []

    def execute(self, context: Any) -> Any:
        self.tries.append(time.monotonic())
        if self.fatal:
            raise AirflowFailException("the script failed")
        if len(self.tries) <= self.fail_times:
            raise RuntimeError(f"endpoint gone (try {context['ti'].try_number})")
        return context["ti"].try_number


def test_local_runner_waits_retry_delay_between_tries() -> None:
    dag = DAG("retrying", schedule=None)
    flaky = Flaky(
        task_id="flaky", fail_times=2, retries=2, retry_delay=timedelta(seconds=0.6), dag=dag
    )
    events: list[Any] = []
    states = LocalRun(dag, {}, max_parallel=1, on_event=events.append).run()
    assert states == {"flaky": "success"}
    assert [e.state for e in events] == ["running", "up_for_retry", "up_for_retry", "success"]
    assert events[-1].value == 3
    gaps = [b - a for a, b in zip(flaky.tries, flaky.tries[1:], strict=False)]
    assert len(gaps) == 2 and all(0.6 <= g < 3 for g in gaps)


def test_local_runner_never_retries_a_build_failure() -> None:
    dag = DAG("fatal", schedule=None)
    fatal = Flaky(task_id="fatal", fail_times=0, fatal=True, retries=3, dag=dag)
    states = LocalRun(dag, {}, max_parallel=1).run()
    assert states == {"fatal": "failed"}
    assert len(fatal.tries) == 1


def test_local_runner_fails_after_the_last_retry() -> None:
    dag = DAG("exhausted", schedule=None)
    flaky = Flaky(task_id="flaky", fail_times=9, retries=1, retry_delay=timedelta(0), dag=dag)
    states = LocalRun(dag, {}, max_parallel=1).run()
    assert states == {"flaky": "failed"}
    assert len(flaky.tries) == 2
