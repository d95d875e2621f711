"""The plan task and the plan-driven package task, with a stand-in task instance.

No Docker: the plan fails on its endpoint check before any container could start, and the
package task's steps that run before a container (skip, dependency manifests, inputs) are
what is checked here. The build itself is covered by tests/integration and tests/e2e.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSkipException,
    DownstreamTasksSkipped,
)

from airflow_butido.manifest import BUILT, ArtifactRef, Manifest
from airflow_butido.operators.build import PackageBuildOperator
from airflow_butido.operators.plan import (
    FAILURE_XCOM_KEY,
    PlannedBuildOperator,
    PlanOperator,
)
from airflow_butido.package_build import LocatedInput
from airflow_butido.plan import RunRequest, resolve_plan
from airflow_butido.recipes.repository import load_repository
from tests.unit._repos import IMAGE_ONE, write_repo


class StubTaskInstance:
    """Records every ``xcom_pull`` and ``xcom_push``."""

    dag_id = "butido_one"
    try_number = 1

    def __init__(self, xcoms: Mapping[str, Any]) -> None:
        self.xcoms = dict(xcoms)
        self.pulls: list[Any] = []
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str | list[str], key: str = "return_value") -> Any:
        self.pulls.append(task_ids)
        if isinstance(task_ids, str):
            return self.xcoms.get(task_ids)
        return [self.xcoms.get(t) for t in task_ids]

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))


class StubDag:
    dag_id = "butido_one"


@pytest.fixture(autouse=True)
def no_parse_cache(monkeypatch):
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    """app needs tool (when WITH_TOOL is set), lib (when FLAVOR=fat) and gfx; tool needs
    base, so base is a transitive dependency of app only while tool's edge is active."""
    return write_repo(
        tmp_path / "repo",
        {
            "app/1": """[dependencies]
runtime = [
  { name = "tool =1", condition = { has_env = "WITH_TOOL" } },
  { name = "lib =1", condition = { env_eq = { FLAVOR = "fat" } } },
  "gfx =1",
]""",
            "tool/1": '[dependencies]\nruntime = ["base =1"]',
            "base/1": "",
            "gfx/1": "",
            "lib/1": "",
            "other/1": "",
        },
    )


def package_task(repo_root: Path, name: str) -> PlannedBuildOperator:
    return PlannedBuildOperator(
        task_id=f"{name}-1",
        repo_path=str(repo_root),
        package_name=name,
        package_version="1",
        image=IMAGE_ONE,
        trigger_rule="none_failed",
    )


def staged_manifest(repo_root: Path, submit: str, name: str) -> dict[str, Any]:
    """A manifest of ``name 1`` whose artifact lies in the staging store."""
    data = f"{name}\n".encode()
    path = repo_root / "staging" / submit / f"{name}-1.pkg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    artifact = ArtifactRef(f"{name}-1.pkg", sha, len(data), submit, f"job-{name}")
    return Manifest(name, "1", IMAGE_ONE, submit, f"job-{name}", BUILT, (artifact,)).to_json()


def inputs_of(task: PlannedBuildOperator, context: Any, config: Any) -> list[LocatedInput]:
    run = task.run_settings(context, task.read_plan(context))
    return task.locate_inputs(config, task.upstream_artifacts(context, run))


def test_package_tasks_are_package_build_operators(repo_root: Path):
    assert isinstance(package_task(repo_root, "app"), PackageBuildOperator)


def test_package_task_outside_the_plan_skips_itself(repo_root: Path):
    plan = resolve_plan(load_repository(repo_root), IMAGE_ONE, RunRequest(("gfx",)))
    ti = StubTaskInstance({"plan": plan.to_json()})
    with pytest.raises(AirflowSkipException, match="other-1 is not part of this run"):
        package_task(repo_root, "other").execute({"ti": ti, "run_id": "r1", "dag": StubDag()})
    assert ti.pulls == ["plan"]  # nothing else was read, no build started


def test_package_task_without_a_plan_fails(repo_root: Path):
    ti = StubTaskInstance({})
    with pytest.raises(AirflowFailException, match="the plan task did not succeed"):
        package_task(repo_root, "app").execute({"ti": ti, "run_id": "r1", "dag": StubDag()})


def test_direct_dependencies_are_pulled_and_forward_the_rest(repo_root: Path):
    """tool's edge is active (WITH_TOOL), lib's is not (FLAVOR=thin): app receives the
    artifacts of gfx, tool and tool's dependency base, and nothing of lib. Only the direct
    dependencies' XComs are read: base's artifact comes forwarded in tool's manifest."""
    repo = load_repository(repo_root)
    request = RunRequest(("app",), (("FLAVOR", "thin"), ("WITH_TOOL", "1")))
    plan = resolve_plan(repo, IMAGE_ONE, request)
    assert "lib-1" not in plan.labels
    submit = plan.submit_uuid
    xcoms = {"plan": plan.to_json()}
    for name in ("base", "tool", "gfx", "lib"):
        xcoms[f"{name}-1"] = staged_manifest(repo_root, submit, name)
    xcoms["tool-1"]["inputs"] = xcoms["base-1"]["artifacts"]
    ti = StubTaskInstance(xcoms)
    task = package_task(repo_root, "app")
    context = {"ti": ti, "run_id": "r1", "dag": StubDag()}

    inputs = inputs_of(task, context, repo.config)

    list_pulls = [p for p in ti.pulls if isinstance(p, list)]
    assert len(list_pulls) == 1 and sorted(list_pulls[0]) == ["gfx-1", "tool-1"]
    assert sorted(i.path.name for i in inputs) == ["base-1.pkg", "gfx-1.pkg", "tool-1.pkg"]
    assert all(i.ref.submit_uuid == submit for i in inputs)


def test_dependencies_built_in_the_run_are_read_from_the_build_database(
    repo_root: Path, tmp_path: Path
):
    """With the build database, what app receives is the artifacts its dependencies' jobs
    recorded in this run (base's too, transitively), read there without an XCom request;
    a dependency the database has no finished job of sends it back to the manifests."""
    from airflow_butido.db.engine import make_engine
    from airflow_butido.db.migrate import upgrade
    from tests.integration.db.builds import record_build, record_submit

    repo = load_repository(repo_root)
    plan = resolve_plan(repo, IMAGE_ONE, RunRequest(("app",), (("WITH_TOOL", "1"),)))
    engine = make_engine(f"sqlite:///{tmp_path / 'build.sqlite'}")
    upgrade(engine)
    submit = record_submit(engine, package=("app", "1"), submit_uuid=plan.submit_uuid)
    jobs = {
        name: record_build(
            engine, staging=repo_root / "staging", package=(name, "1"), submit_uuid=submit,
            contents={f"{name}-1.pkg": f"{name}\n".encode()},
        ).job_uuid
        for name in ("base", "tool")
    }  # fmt: skip
    xcoms = {"plan": plan.to_json()}
    for name in ("base", "tool", "gfx"):
        xcoms[f"{name}-1"] = staged_manifest(repo_root, submit, name)
    ti = StubTaskInstance(xcoms)
    task = package_task(repo_root, "app")
    context = {"ti": ti, "run_id": "r1", "dag": StubDag()}
    run = task.run_settings(context, plan)

    # gfx has no job in the database: the manifests say what app receives
    refs = task.upstream_artifacts(context, run, engine)
    assert sorted(ti.pulls[-1]) == ["gfx-1", "tool-1"]
    assert {r.job_uuid for r in refs} == {"job-gfx", "job-tool"}

    jobs["gfx"] = record_build(
        engine, staging=repo_root / "staging", package=("gfx", "1"), submit_uuid=submit,
        contents={"gfx-1.pkg": b"gfx\n"},
    ).job_uuid  # fmt: skip
    ti.pulls.clear()
    inputs = task.locate_inputs(repo.config, task.upstream_artifacts(context, run, engine))
    engine.dispose()
    assert ti.pulls == []
    assert {i.path.name: i.ref.job_uuid for i in inputs} == {
        f"{name}-1.pkg": job for name, job in jobs.items()
    }
    assert all(i.ref.submit_uuid == submit for i in inputs)


def test_dependencies_reused_up_front_come_from_the_plan(repo_root: Path):
    """base and tool reused up front: their manifests (own artifacts only) are the plan's,
    for the direct dependency tool and the transitive base alike; only gfx is pulled."""
    repo = load_repository(repo_root)
    request = RunRequest(("app",), (("FLAVOR", "thin"), ("WITH_TOOL", "1")))
    plan = resolve_plan(repo, IMAGE_ONE, request)
    earlier = "earlier-submit"
    reused = {
        t: Manifest.from_json(staged_manifest(repo_root, earlier, t.removesuffix("-1")))
        for t in ("base-1", "tool-1")
    }
    plan = plan.with_reused(reused)
    xcoms = {"plan": plan.to_json(), "gfx-1": staged_manifest(repo_root, plan.submit_uuid, "gfx")}
    ti = StubTaskInstance(xcoms)
    task = package_task(repo_root, "app")
    context = {"ti": ti, "run_id": "r1", "dag": StubDag()}

    inputs = inputs_of(task, context, repo.config)

    assert [p for p in ti.pulls if isinstance(p, list)] == [["gfx-1"]]
    found = {i.path.name: i.ref.submit_uuid for i in inputs}
    assert found == {"base-1.pkg": earlier, "tool-1.pkg": earlier, "gfx-1.pkg": plan.submit_uuid}


def test_inactive_conditional_dependency_delivers_nothing(repo_root: Path):
    repo = load_repository(repo_root)
    plan = resolve_plan(repo, IMAGE_ONE, RunRequest(("app",)))
    xcoms: dict[str, Any] = {"plan": plan.to_json()}
    for name in ("base", "tool", "gfx", "lib"):  # as if an earlier step had built them all
        xcoms[f"{name}-1"] = staged_manifest(repo_root, plan.submit_uuid, name)
    ti = StubTaskInstance(xcoms)
    task = package_task(repo_root, "app")
    context = {"ti": ti, "run_id": "r1", "dag": StubDag()}
    inputs = inputs_of(task, context, repo.config)
    assert [i.path.name for i in inputs] == ["gfx-1.pkg"]
    assert [p for p in ti.pulls if isinstance(p, list)] == [["gfx-1"]]


def test_failed_package_task_leaves_message_for_the_report(repo_root: Path):
    """A dependency artifact missing from every store fails the task before a container
    starts; the failure record names it."""
    repo = load_repository(repo_root)
    plan = resolve_plan(repo, IMAGE_ONE, RunRequest(("app",)))
    manifest = staged_manifest(repo_root, plan.submit_uuid, "gfx")
    (repo_root / "staging" / plan.submit_uuid / "gfx-1.pkg").unlink()
    ti = StubTaskInstance({"plan": plan.to_json(), "gfx-1": manifest})
    with pytest.raises(AirflowFailException, match="gfx-1.pkg of job job-gfx is in no store"):
        package_task(repo_root, "app").execute({"ti": ti, "run_id": "r1", "dag": StubDag()})
    assert "gfx-1.pkg of job job-gfx is in no store" in ti.pushed[FAILURE_XCOM_KEY]["message"]


# --- the plan task --------------------------------------------------------------------------


def plan_context(conf: Mapping[str, Any]) -> dict[str, Any]:
    class DagRun:
        pass

    dag_run = DagRun()
    dag_run.conf = dict(conf)  # type: ignore[attr-defined]
    params = {"packages": [], "env": {}, "force_rebuild": False}
    params.update({k: v for k, v in conf.items() if k in params})
    return {
        "ti": StubTaskInstance({}),
        "run_id": "manual__1",
        "dag": StubDag(),
        "dag_run": dag_run,
        "params": params,
    }


def plan_task(repo_root: Path, db: Path) -> PlanOperator:
    return PlanOperator(
        task_id="plan", repo_path=str(repo_root), image=IMAGE_ONE, database_url=f"sqlite:///{db}"
    )


def test_plan_fails_before_any_build_when_no_endpoint_answers(repo_root: Path, tmp_path: Path):
    config = repo_root / "config.toml"
    config.write_text(config.read_text().replace("/var/run/docker.sock", str(tmp_path / "x.s")))
    db = tmp_path / "butido.sqlite"
    with pytest.raises(AirflowFailException) as info:
        plan_task(repo_root, db).execute(plan_context({"packages": ["app"]}))
    assert "the run cannot start" in str(info.value)
    assert "no usable Docker endpoint for image registry.local/one:1" in str(info.value)
    assert not db.exists()  # no submit recorded for a run that cannot start


def test_plan_failure_is_left_in_xcom_for_the_ci_client(repo_root: Path, tmp_path: Path):
    context = plan_context({"packages": ["nosuch"]})
    with pytest.raises(AirflowFailException):
        plan_task(repo_root, tmp_path / "db.sqlite").execute(context)
    failure = context["ti"].pushed[FAILURE_XCOM_KEY]
    assert failure["message"] == "package 'nosuch' not found in the repository"


def test_plan_lists_every_problem_of_the_run_conf(repo_root: Path, tmp_path: Path):
    conf = {"packages": ["app", "nosuch"], "env": {"1BAD": "x"}, "colour": "red"}
    with pytest.raises(AirflowFailException) as info:
        plan_task(repo_root, tmp_path / "db.sqlite").execute(plan_context(conf))
    text = str(info.value)
    assert "unknown key(s) colour" in text
    assert "invalid variable name '1BAD'" in text


def test_plan_records_the_submit_publishes_the_plan_and_skips_the_rest(
    repo_root: Path, tmp_path: Path, monkeypatch
):
    # the endpoint check needs Docker (tests/integration, tests/e2e); here it passes
    monkeypatch.setattr("airflow_butido.operators.plan.image_digest", lambda c, i: "sha256:x")
    db = tmp_path / "butido.sqlite"
    conf = {"packages": ["app"], "env": {"WITH_TOOL": "1"}, "force_rebuild": True}
    context = plan_context(conf)
    with pytest.raises(DownstreamTasksSkipped) as skip:
        plan_task(repo_root, db).execute(context)
    assert sorted(skip.value.tasks) == ["lib-1", "other-1"]  # outside the run: no process
    plan = context["ti"].pushed["return_value"]
    assert plan["requested"] == ["app-1"] and plan["force_rebuild"] is True
    assert set(plan["packages"]) == {"app-1", "gfx-1", "tool-1", "base-1"}
    assert plan["packages"][-1] == "app-1"
    assert ["tool-1", "base-1"] in plan["edges"]
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        row = conn.execute(sa.text("select uuid, dag_id, run_id from submits")).one()
    engine.dispose()
    assert uuid.UUID(str(row[0])) == uuid.UUID(plan["submit_uuid"])
    assert tuple(row[1:]) == ("butido_one", "manual__1")


def test_a_package_that_cannot_build_fails_at_once_with_the_plans_message(repo_root: Path):
    plan = resolve_plan(load_repository(repo_root), IMAGE_ONE, RunRequest(("gfx",)))
    plan = plan.with_failures({"gfx-1": "gfx 1: source src: missing"})
    ti = StubTaskInstance({"plan": plan.to_json()})
    task = package_task(repo_root, "gfx")
    with pytest.raises(AirflowFailException, match="gfx 1: source src: missing"):
        task.execute({"ti": ti, "run_id": "r1", "dag": StubDag()})
    assert ti.pushed[FAILURE_XCOM_KEY] == {"message": "gfx 1: source src: missing"}
    assert ti.pulls == ["plan"]  # nothing else read, no build started
    # kept for the task's extra links, which then need not read it back
    assert task.left_values.values == {FAILURE_XCOM_KEY: ti.pushed[FAILURE_XCOM_KEY]}
