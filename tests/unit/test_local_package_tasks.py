"""`butido build`'s tasks without Airflow: LocalDag scheduling and LocalPackageTask's verdicts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_butido.errors import BuildError, InfrastructureError
from airflow_butido.local_build import LocalDag, LocalRun
from airflow_butido.manifest import REUSED, Manifest, ReusedFrom
from airflow_butido.package_build import FAILURE_XCOM_KEY, LocalPackageTask, NotInRun
from airflow_butido.plan import RunRequest, resolve_plan
from airflow_butido.recipes.repository import load_repository
from tests.unit._repos import IMAGE_ONE, write_repo


class Task:
    """A plain task: raises ``errors`` in turn (one per try), then returns its id."""

    trigger_rule = "none_failed"

    def __init__(self, task_id: str, upstream: tuple[str, ...] = (), *errors: Exception) -> None:
        self.task_id = task_id
        self.upstream_task_ids = set(upstream)
        self.errors = list(errors)
        self.retries = 2
        self.retry_delay = timedelta(0)
        self.tries = 0

    def execute(self, context: Any) -> Any:
        self.tries += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.task_id

    def on_kill(self) -> None:
        pass


def run(*tasks: Task) -> dict[str, str | None]:
    return LocalRun(LocalDag("d", list(tasks), {}), {}, max_parallel=2).run()


def test_a_build_failure_is_final_and_its_dependents_are_not_run():
    a = Task("a", (), BuildError("exit 2"))
    b, c = Task("b", ("a",)), Task("c")
    assert run(a, b, c) == {"a": "failed", "b": "upstream_failed", "c": "success"}
    assert (a.tries, b.tries) == (1, 0)


def test_an_infrastructure_failure_is_retried():
    a = Task("a", (), InfrastructureError("endpoint gone"), RuntimeError("socket closed"))
    events: list[Any] = []
    dag = LocalDag("d", [a], {})
    assert LocalRun(dag, {}, max_parallel=1, on_event=events.append).run() == {"a": "success"}
    assert a.tries == 3
    assert [e.message for e in events if e.state == "up_for_retry"] == [
        "infrastructure failure: endpoint gone (will retry)",
        "RuntimeError: socket closed (will retry)",
    ]


def test_not_in_run_skips_and_the_dependents_still_run():
    a, b = Task("a", (), NotInRun("a is not part of this run")), Task("b", ("a",))
    assert run(a, b) == {"a": "skipped", "b": "success"}


@pytest.fixture
def repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    return write_repo(
        tmp_path / "repo", {"app/1": '[dependencies]\nruntime = ["lib =1"]', "lib/1": ""}
    )


class TaskInstance:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: Any, key: str = "return_value") -> Any:
        assert task_ids == "plan", "only the plan is read before the verdict"
        return self.plan

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def local_task(repo_root: Path, name: str) -> LocalPackageTask:
    return LocalPackageTask(
        task_id=f"{name}-1",
        upstream=("plan",),
        repo_path=repo_root,
        package_name=name,
        package_version="1",
    )


def test_the_plans_failure_fails_the_task_with_its_first_line_and_leaves_it_for_the_report(
    repo_root: Path,
):
    plan = resolve_plan(load_repository(repo_root), IMAGE_ONE, RunRequest(("app",)))
    plan = plan.with_failures({"lib-1": "lib 1: source src: missing\nsecond line"})
    ti = TaskInstance(plan.to_json())
    with pytest.raises(BuildError) as failed:
        local_task(repo_root, "lib").execute({"ti": ti, "run_id": "r"})
    assert str(failed.value) == "lib 1: source src: missing"
    assert ti.pushed[FAILURE_XCOM_KEY]["message"].endswith("second line")


def test_outside_the_plan_the_task_has_nothing_to_do_and_a_planned_reuse_is_its_answer(
    repo_root: Path,
):
    plan = resolve_plan(load_repository(repo_root), IMAGE_ONE, RunRequest(("lib",)))
    with pytest.raises(NotInRun, match="app-1 is not part of this run"):
        local_task(repo_root, "app").execute({"ti": TaskInstance(plan.to_json()), "run_id": "r"})
    earlier = Manifest(
        "lib",
        "1",
        IMAGE_ONE,
        "s1",
        "j1",
        REUSED,
        (),
        reused_from=ReusedFrom("j0", "s0", "same key"),
    )
    plan = plan.with_reused({"lib-1": earlier})
    got = local_task(repo_root, "lib").execute({"ti": TaskInstance(plan.to_json()), "run_id": "r"})
    assert Manifest.from_json(got) == earlier
