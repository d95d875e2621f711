"""What the tasks of a DAG run write to the build database: the plan's submit with the
repository's commit and dirty flag, the job row from container start to end, a clear
retryable failure when the database is gone, and the report's repair of jobs whose task
died."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_butido.db import records
from airflow_butido.db.queries import job_detail
from airflow_butido.package_build import RunSettings
from airflow_butido.plan import Plan, RunRequest, resolve_plan
from airflow_butido.recipes.repository import load_repository
from tests.unit._repos import IMAGE_ONE, write_repo

from .builds import record_submit
from .conftest import run_cli

pytestmark = pytest.mark.postgres


class StubDag:
    dag_id = "butido_one"


class StubTaskInstance:
    dag_id = "butido_one"
    try_number = 1

    def __init__(self, xcoms: dict[str, Any], states: dict[str, str]) -> None:
        self.xcoms = xcoms
        self.states = states

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: Any, key: str = "return_value") -> Any:
        if isinstance(task_ids, str):
            return self.xcoms.get(task_ids) if key == "return_value" else None
        return [self.xcoms.get(t) if key == "return_value" else None for t in task_ids]

    def get_task_states(self, dag_id: str, run_ids: list[str]) -> dict[str, Any]:
        return {run_ids[0]: dict(self.states)}


@pytest.fixture
def repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    return write_repo(
        tmp_path / "repo",
        {"app/1": '[dependencies]\nruntime = ["lib =1", "gfx =1"]', "lib/1": "", "gfx/1": ""},
    )


def plan_of(submit: str) -> Plan:
    """A plan of ``lib 1`` alone in ``submit``."""
    return Plan(
        submit_uuid=submit, image=IMAGE_ONE, env=(), force_rebuild=False, requested=("lib-1",),
        packages=("lib-1",), labels={"lib-1": "lib 1"},
    )  # fmt: skip


def start_running_jobs(
    engine: Any, submit: str, dag_id: str, run_id: str, names: tuple[str, ...]
) -> dict[str, str]:
    """A running job (first try) of version 1 of each package in ``names``: name -> job UUID."""
    jobs = {}
    for name in names:
        jobs[name] = str(uuid.uuid4())
        records.record_job_start(
            engine, uuid=jobs[name], submit_uuid=submit, package_name=name,
            package_version="1", image=IMAGE_ONE, endpoint="local", container_id="c",
            script="#!/bin/bash\n", dag_id=dag_id, run_id=run_id, try_number=1,
        )  # fmt: skip
    return jobs


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_the_plan_task_records_the_commit_the_dirty_tree_and_the_env(
    repo_root: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_butido.operators.plan import PlanOperator

    monkeypatch.setattr("airflow_butido.operators.plan.image_digest", lambda c, i: "sha256:x")
    (repo_root / ".gitignore").write_text("staging/\n")
    git(repo_root, "init", "-q")
    git(repo_root, "add", "-A")
    git(repo_root, "commit", "-qm", "recipes")
    head = git(repo_root, "rev-parse", "HEAD")
    task = PlanOperator(
        task_id="plan", repo_path=str(repo_root), image=IMAGE_ONE, database_url=db_url
    )

    def plan_run(run_id: str) -> str:
        class DagRun:
            conf = {"packages": ["app"], "env": {"FLAVOR": "fat"}}

        context = {"ti": StubTaskInstance({}, {}), "run_id": run_id, "dag": StubDag(),
                   "dag_run": DagRun(),
                   "params": {"packages": ["app"], "env": {"FLAVOR": "fat"}}}  # fmt: skip
        return str(task.execute(context)["submit_uuid"])

    (repo_root / "staging").mkdir()
    (repo_root / "staging" / "ignored.pkg").write_text("x")  # ignored: still clean
    clean = plan_run("manual__clean")
    (repo_root / "lib" / "1" / "pkg.toml").write_text('name = "lib"\nversion = "1"\n# edited\n')
    dirty = plan_run("manual__dirty")
    git(repo_root, "checkout", "--", "lib")
    (repo_root / "lib" / "1" / "new.patch").write_text("+x\n")
    untracked = plan_run("manual__untracked")

    code, out = run_cli("db", "submits", "--database-url", db_url, "--json", "-L", "0")
    assert code == 0
    commits = {s["UUID"]: s["Commit"] for s in json.loads(out)}
    assert commits == {clean: head, dirty: f"{head} (dirty)", untracked: f"{head} (dirty)"}
    code, out = run_cli("db", "submit", dirty, "--database-url", db_url, "--json")
    assert code == 0 and "FLAVOR=fat" in out and "manual__dirty" in out


def test_the_report_marks_running_jobs_of_finished_tasks_failed_and_spares_live_ones(
    repo_root: Path, engine: Any, db_url: str
) -> None:
    """lib's task was killed (its job still says running), gfx's task is still building in
    another branch when app's upstream_failed lets the report start."""
    from airflow_butido.operators.report import ReportOperator

    plan = resolve_plan(load_repository(repo_root), IMAGE_ONE, RunRequest(("app",)))
    run_id = "manual__orphans"
    submit = record_submit(engine, package=("app", "1"), submit_uuid=plan.submit_uuid,
                           dag_id=StubDag.dag_id, run_id=run_id)  # fmt: skip
    jobs = start_running_jobs(engine, submit, StubDag.dag_id, run_id, ("lib", "gfx"))
    states = {"plan": "success", "lib-1": "failed", "gfx-1": "running", "app-1": "upstream_failed"}
    ti = StubTaskInstance({"plan": plan.to_json()}, states)
    report = ReportOperator(
        task_id="report", repo_path=str(repo_root), image=IMAGE_ONE, database_url=db_url
    )
    with pytest.raises(AirflowFailException, match="lib 1"):
        report.execute({"ti": ti, "run_id": run_id, "dag": StubDag()})

    killed, alive = job_detail(engine, jobs["lib"]), job_detail(engine, jobs["gfx"])
    assert killed is not None and (killed.state, killed.failure_class) == ("failed", "orphaned")
    assert alive is not None and alive.state == "running"

    states["gfx-1"] = "success"  # the run ends: a report then leaves nothing running
    with pytest.raises(AirflowFailException):
        report.execute({"ti": ti, "run_id": run_id, "dag": StubDag()})
    alive = job_detail(engine, jobs["gfx"])
    assert alive is not None and alive.state == "failed"


def test_a_package_task_fails_retryably_naming_the_database_when_it_is_unreachable(
    repo_root: Path,
) -> None:
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowException

    from airflow_butido.operators.build import PackageBuildOperator

    url = "postgresql+psycopg2://butido:secret@127.0.0.1:1/gone?connect_timeout=3"
    with DAG(dag_id="butido_one", schedule=None) as dag:
        task = PackageBuildOperator(
            task_id="lib-1", repo_path=repo_root, package_name="lib", package_version="1",
            image=IMAGE_ONE, plan_task_id="plan", database_url=url,
        )  # fmt: skip
    ti = StubTaskInstance({"plan": plan_of(str(uuid.uuid4())).to_json()}, {})
    with pytest.raises(AirflowException) as info:
        task.execute({"ti": ti, "run_id": "r1", "dag": dag})
    assert not isinstance(info.value, AirflowFailException)  # retried, not failed for good
    message = str(info.value)
    assert "infrastructure failure (will retry): database" in message
    assert "127.0.0.1:1/gone" in message and "secret" not in message


def build_recorded(
    engine: Any, repo_dir: Path, image: str, name: str, script: str, on_line: Any = None
) -> tuple[Any, Any, Path]:
    """Package ``name`` 1 built on the real engine, recorded in ``engine``'s database:
    (its JobRequest, its JobResult, the repository). ``on_line(request, line)`` sees the log."""
    from airflow_butido.db.recorder import DatabaseRecorder
    from airflow_butido.endpoints import DatabaseSlots
    from airflow_butido.jobs import run_job
    from tests.integration.test_jobs import pkg_toml, request_for
    from tests.integration.test_jobs import write_repo as write_build_repo

    repo = write_build_repo(repo_dir, image, {name: pkg_toml(name, "1", script)})
    request = request_for(repo, name, "1")
    record_submit(engine, package=(name, "1"), submit_uuid=request.submit_uuid)
    seen = (lambda line, _item: on_line(request, line)) if on_line else None
    result = run_job(
        request, slots=DatabaseSlots(engine), recorder=DatabaseRecorder(engine), on_line=seen
    )
    return request, result, repo


@pytest.mark.docker
def test_the_job_row_is_written_when_the_container_starts_and_completed_when_it_ends(
    tmp_path: Path, engine: Any, build_image: str
) -> None:
    seen_while_running = []

    def on_line(request: Any, line: str) -> None:
        if line == "started":
            seen_while_running.append(job_detail(engine, request.job_uuid))

    script = "echo started; mkdir /outputs; echo s > /outputs/s-1.pkg"
    repo_dir = tmp_path / "repo"
    request, result, _ = build_recorded(engine, repo_dir, build_image, "s", script, on_line)
    (running,) = seen_while_running
    assert running is not None and running.state == "running"
    assert running.container == result.container_id and running.started_at
    assert running.finished_at is None and running.log == ""
    assert running.script.startswith("#!/bin/bash")
    done = job_detail(engine, request.job_uuid)
    assert done is not None and (done.state, done.exit_status) == ("success", 0)
    assert done.finished_at and "started" in done.log and done.artifacts


@pytest.mark.docker
def test_a_real_build_records_its_phase_timings_and_db_job_shows_them(
    tmp_path: Path, engine: Any, db_url: str, build_image: str
) -> None:
    from airflow_butido.jobs import PHASES

    script = "sleep 0.3; mkdir /outputs; echo t > /outputs/t-1.pkg"
    request, result, repo = build_recorded(engine, tmp_path / "repo", build_image, "t", script)

    done = job_detail(engine, request.job_uuid)
    assert done is not None
    phases = done.phase_seconds
    assert set(phases) == set(PHASES) - {"reuse_check"}  # no build cache was given
    # the script's own sleep: it runs from the container's start on, also while the job
    # records that it started (which takes longer than the sleep on a busy machine)
    assert phases["start"] + phases["record"] + phases["run"] >= 0.3
    assert phases["record"] > 0 and phases["outputs"] > 0
    assert 0 < phases["record"] <= result.phase_seconds["record"]  # the result comes after
    code, out = run_cli(
        "--repo", str(repo), "db", "job", request.job_uuid, "--database-url", db_url
    )
    (line,) = [x for x in out.splitlines() if x.startswith("Phases")]
    assert code == 0 and "run " in line and "copy_in " in line and "(total " in line
    code, out = run_cli(
        "--repo", str(repo), "db", "job", request.job_uuid, "--database-url", db_url, "--json"
    )
    assert code == 0 and json.loads(out)["Phases"] == phases


def test_a_task_retry_fails_the_job_its_dead_try_left_and_frees_its_slot_and_claim(
    repo_root: Path, engine: Any, db_url: str
) -> None:
    from airflow.sdk import DAG

    from airflow_butido.db import leases, reuse
    from airflow_butido.operators.build import PackageBuildOperator

    run_id = "manual__retry"
    submit = record_submit(engine, package=("lib", "1"), dag_id="butido_one", run_id=run_id)
    jobs = start_running_jobs(engine, submit, "butido_one", run_id, ("lib", "gfx"))
    assert reuse.claim_build_key(engine, "k" * 64, jobs["lib"])
    assert leases.acquire_slot(engine, jobs["lib"], [("local", 2)]) == "local"

    with DAG(dag_id="butido_one", schedule=None) as dag:
        task = PackageBuildOperator(
            task_id="lib-1", repo_path=repo_root, package_name="lib", package_version="1",
            image=IMAGE_ONE, database_url=db_url,
        )  # fmt: skip
    ti = StubTaskInstance({}, {})
    ti.try_number = 2  # type: ignore[attr-defined]
    run = RunSettings(submit, IMAGE_ONE, (), False, plan_of(submit), (), False)
    task.recorder({"ti": ti, "run_id": run_id, "dag": dag}, engine, run, [])

    dead, other = job_detail(engine, jobs["lib"]), job_detail(engine, jobs["gfx"])
    assert dead is not None and (dead.state, dead.failure_class) == ("failed", "orphaned")
    assert other is not None and other.state == "running"  # another task's job
    assert leases.slot_usage(engine) == {}
    assert reuse.claim_build_key(engine, "k" * 64, str(uuid.uuid4()))  # free at once
