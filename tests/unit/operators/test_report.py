"""The report task: it reads the run's task states and XComs and fails the run when a
package failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_butido.manifest import BUILT, REUSED, ArtifactRef, Manifest
from airflow_butido.operators.plan import FAILURE_XCOM_KEY
from airflow_butido.operators.report import ReportOperator
from airflow_butido.plan import RunRequest, resolve_plan
from airflow_butido.recipes.repository import load_repository
from airflow_butido.report import report_from_json
from tests.unit._repos import IMAGE_ONE, write_repo


class StubTaskInstance:
    def __init__(self, xcoms: dict[tuple[str, str], Any], states: dict[str, str]) -> None:
        self.xcoms = xcoms
        self.states = states
        self.list_pulls: list[list[str]] = []

    def xcom_pull(self, task_ids: Any, key: str = "return_value") -> Any:
        if isinstance(task_ids, str):
            return self.xcoms.get((task_ids, key))
        self.list_pulls.append(list(task_ids))
        return [self.xcoms.get((t, key)) for t in task_ids]

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[("report", key)] = value

    def get_task_states(self, dag_id: str, run_ids: list[str]) -> dict[str, dict[str, str]]:
        return {run_ids[0]: dict(self.states)}


class StubDag:
    dag_id = "butido_one"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    root = write_repo(
        tmp_path / "repo",
        {
            "app/1": '[dependencies]\nruntime = ["lib =1", "tool =1"]',
            "lib/1": "",
            "tool/1": "",
            "other/1": "",
        },
    )
    plan = resolve_plan(load_repository(root), IMAGE_ONE, RunRequest(("app",)))
    task = ReportOperator(
        task_id="report",
        repo_path=str(root),
        image=IMAGE_ONE,
        database_url=f"sqlite:///{tmp_path / 'butido.sqlite'}",
    )
    return task, plan


def manifest(name: str, reused: bool = False) -> dict[str, Any]:
    artifact = ArtifactRef(f"{name}-1.pkg", "0" * 64, 1, "submit", f"job-{name}")
    outcome = REUSED if reused else BUILT
    return Manifest(name, "1", IMAGE_ONE, "submit", f"job-{name}", outcome, (artifact,)).to_json()


def context(ti: StubTaskInstance) -> dict[str, Any]:
    return {"ti": ti, "run_id": "manual__1", "dag": StubDag()}


def test_report_of_a_successful_run_lists_built_and_reused(setup):
    task, plan = setup
    xcoms = {
        ("plan", "return_value"): plan.to_json(),
        ("lib-1", "return_value"): manifest("lib", reused=True),
        ("tool-1", "return_value"): manifest("tool"),
        ("app-1", "return_value"): manifest("app"),
    }
    states = {"plan": "success", "lib-1": "success", "tool-1": "success", "app-1": "success"}
    states["other-1"] = "skipped"
    ti = StubTaskInstance(xcoms, states)
    result = task.execute(context(ti))
    outcomes = {p["package"]: p["outcome"] for p in result["packages"]}
    assert outcomes == {"lib 1": "reused", "tool 1": "built", "app 1": "built"}
    assert ti.list_pulls == [list(plan.packages)]  # the manifests in one xcom_pull


def test_report_fails_the_run_when_a_package_failed(setup):
    task, plan = setup
    xcoms = {
        ("plan", "return_value"): plan.to_json(),
        ("tool-1", "return_value"): manifest("tool"),
        ("lib-1", FAILURE_XCOM_KEY): {"message": "lib 1: exit 2", "log_tail": ["boom"]},
    }
    states = {"lib-1": "failed", "tool-1": "success", "app-1": "upstream_failed"}
    ti = StubTaskInstance(xcoms, states)
    with pytest.raises(AirflowFailException, match=r"package\(s\) failed: lib 1; 1 not built"):
        task.execute(context(ti))
    # the report is published all the same, for `butido trigger` to print
    published = report_from_json(ti.xcoms[("report", "return_value")])
    assert [o.outcome for o in published.outcomes] == ["failed", "built", "not built"]
    assert published.outcomes[0].log_tail == ("boom",)


def test_report_fails_the_run_when_the_plan_failed(setup):
    task, _ = setup
    ti = StubTaskInstance({}, {"plan": "failed"})
    with pytest.raises(AirflowFailException, match="the plan task failed"):
        task.execute(context(ti))


def test_the_report_takes_finished_jobs_from_the_build_database_and_pulls_the_rest(
    setup, monkeypatch
):
    """One query for the run's finished jobs instead of one XCom request per package task
    (the Task SDK makes one per task id): only what the database lacks is pulled. The
    database is opened once for reading and recording."""
    import uuid

    from airflow_butido.db import migrate, records
    from airflow_butido.db.migrate import open_database
    from airflow_butido.recipes.config import load_config

    task, plan = setup
    engine = open_database(load_config(Path(task.repo_path)), url=task.database_url)
    records.record_submit(
        engine, uuid=plan.submit_uuid, package_name="app", package_version="1",
        image=IMAGE_ONE, repo_commit="c" * 40, repo_dirty=False, env={},
    )  # fmt: skip
    for name in ("lib", "tool"):
        job = str(uuid.uuid4())
        records.record_job_start(
            engine, uuid=job, submit_uuid=plan.submit_uuid, package_name=name,
            package_version="1", image=IMAGE_ONE, endpoint="local", container_id="c",
            script="#!/bin/sh\n",
        )  # fmt: skip
        records.record_job_finish(engine, uuid=job, state="success", exit_status=0, log="")
        records.record_artifacts(
            engine, job, [records.ArtifactRecord(f"{name}-from-db.pkg", "0" * 64, 1)]
        )
    engine.dispose()
    xcoms = {
        ("plan", "return_value"): plan.to_json(),
        ("app-1", "return_value"): manifest("app", reused=True),
    }
    states = {"lib-1": "success", "tool-1": "success", "app-1": "success"}
    ti = StubTaskInstance(xcoms, states)
    opened = []
    monkeypatch.setattr(
        migrate, "open_database", lambda *a, **k: opened.append(a) or open_database(*a, **k)
    )
    result = task.execute(context(ti))
    assert len(opened) == 1
    found = {p["package"]: (p["outcome"], p["artifacts"]) for p in result["packages"]}
    assert found == {
        "lib 1": ("built", ["lib-from-db.pkg"]),
        "tool 1": ("built", ["tool-from-db.pkg"]),
        "app 1": ("reused", ["app-1.pkg"]),  # not in the database: its manifest
    }
    assert ti.list_pulls == [["app-1"]]
