"""``PackageBuildOperator.execute()`` with a minimal context on the real Docker engine."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_jobs import pkg_toml, write_repo

pytestmark = pytest.mark.docker


class StubTaskInstance:
    """Only what execute() asks of the task instance: XCom values by task id."""

    dag_id = "test_dag"

    def __init__(self, xcoms: Mapping[str, Any], try_number: int = 1) -> None:
        self.xcoms = dict(xcoms)
        self.try_number = try_number

    def xcom_pull(self, task_ids: str | list[str], key: str = "return_value") -> Any:
        if isinstance(task_ids, str):
            return self.xcoms.get(task_ids)
        return [self.xcoms.get(t) for t in task_ids]


def context_for(dag: Any, xcoms: Mapping[str, Any], run_id: str = "manual__1") -> dict[str, Any]:
    return {"ti": StubTaskInstance(xcoms), "run_id": run_id, "dag": dag}


@pytest.fixture
def repo(tmp_path: Path, build_image: str) -> Path:
    return write_repo(
        tmp_path / "repo",
        build_image,
        {
            "b": pkg_toml("b", "2", "mkdir /outputs; echo b2 > /outputs/b-2.pkg"),
            "c": pkg_toml("c", "3", "mkdir /outputs; echo c3 > /outputs/c-3.pkg"),
            "t": pkg_toml(
                "t", "1", "mkdir /outputs; cat /inputs/b-2.pkg /inputs/c-3.pkg > /outputs/t-1.pkg"
            ),
            "a": pkg_toml(
                "a",
                "1",
                """
                test "$(cat /inputs/b-2.pkg)" = b2 || { {{state "ERR" "no b"}}; exit 1; }
                {{phase "compile"}}
                {{progress 50}}
                mkdir /outputs; cat /inputs/b-2.pkg > /outputs/a-1.pkg
                {{state "OK"}}
                """,
            ),
            "f": pkg_toml("f", "1", '{{phase "compile"}}\necho broken\n{{state "ERR" "bad"}}'),
            "k": pkg_toml("k", "1", "echo started; sleep 300"),
        },
    )


def make_ops(repo: Path, tmp_path: Path, **kw: Any):
    from airflow.sdk import DAG

    from airflow_butido.operators.build import PackageBuildOperator

    db = f"sqlite:///{tmp_path / 'butido.sqlite'}"
    with DAG(dag_id=f"t_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        ops = {
            name: PackageBuildOperator(
                task_id=f"{name}-{version}",
                repo_path=repo,
                package_name=name,
                package_version=version,
                image="test",
                plan_task_id=kw.get("plan_task_id"),
                database_url=db,
            )
            for name, version in (("b", "2"), ("a", "1"), ("f", "1"), ("k", "1"), ("c", "3"))
            + (("t", "1"),)
        }
        ops["b"] >> ops["a"]
        ops["c"] >> ops["b"]
        ops["b"] >> ops["t"]
    return dag, ops


def test_execute_returns_a_json_manifest_and_feeds_dependents(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    dag, ops = make_ops(repo, tmp_path)
    b_manifest = ops["b"].execute(context_for(dag, {}))
    json.dumps(b_manifest)  # XCom-safe
    assert b_manifest["package"] == "b"
    assert b_manifest["version"] == "2"
    assert b_manifest["outcome"] == "built"
    assert b_manifest["image"].startswith("airflow-butido/")
    submit = b_manifest["submit_uuid"]
    assert b_manifest["artifacts"] == [
        {
            "path": "b-2.pkg",
            "sha256": hashlib.sha256(b"b2\n").hexdigest(),
            "size": 3,
            "submit_uuid": submit,
            "job_uuid": b_manifest["job_uuid"],
        }
    ]

    a_manifest = ops["a"].execute(context_for(dag, {"b-2": b_manifest}))
    assert a_manifest["submit_uuid"] == submit  # one submit per DAG run
    assert [x["path"] for x in a_manifest["artifacts"]] == ["a-1.pkg"]
    assert [x["path"] for x in a_manifest["inputs"]] == ["b-2.pkg"]
    assert (repo / "staging" / submit / "a-1.pkg").read_text() == "b2\n"
    assert ops["a"].container["Id"]  # DockerOperator's attribute, kept familiar
    assert ops["a"].docker_url.startswith("unix://")


def test_without_a_plan_upstream_manifests_forward_the_transitive_closure(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    dag, ops = make_ops(repo, tmp_path)
    c_manifest = ops["c"].execute(context_for(dag, {}))
    b_manifest = ops["b"].execute(context_for(dag, {"c-3": c_manifest}))
    assert [x["path"] for x in b_manifest["inputs"]] == ["c-3.pkg"]
    # t depends on b only; c's artifact reaches it through b's manifest
    t_manifest = ops["t"].execute(context_for(dag, {"b-2": b_manifest}))
    assert sorted(x["path"] for x in t_manifest["inputs"]) == ["b-2.pkg", "c-3.pkg"]
    staging = repo / "staging" / t_manifest["submit_uuid"]
    assert (staging / "t-1.pkg").read_text() == "b2\nc3\n"


def test_plan_drives_submit_env_and_inputs_and_the_job_is_recorded(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    import sqlalchemy as sa

    from airflow_butido.db import schema
    from airflow_butido.db.engine import make_engine
    from airflow_butido.db.migrate import upgrade
    from airflow_butido.db.records import record_submit

    dag, ops = make_ops(repo, tmp_path, plan_task_id="plan")
    engine = make_engine(f"sqlite:///{tmp_path / 'butido.sqlite'}")
    upgrade(engine)
    submit = str(uuid.uuid4())
    record_submit(
        engine,
        uuid=submit,
        package_name="a",
        package_version="1",
        image="airflow-butido/debian:bookworm",
        repo_commit="0" * 40,
    )
    from airflow_butido.plan import Plan

    plan = Plan(
        submit_uuid=submit,
        image="test",
        env=(("FOO", "x"),),
        force_rebuild=False,
        requested=("a-1",),
        packages=("b-2", "a-1"),
        labels={"b-2": "b 2", "a-1": "a 1"},
        edges=(("a-1", "b-2"),),
    ).to_json()
    b_manifest = ops["b"].execute(context_for(dag, {"plan": plan}))
    assert b_manifest["submit_uuid"] == submit
    a_manifest = ops["a"].execute(context_for(dag, {"plan": plan, "b-2": b_manifest}))
    assert a_manifest["submit_uuid"] == submit
    with engine.connect() as conn:
        jobs = conn.execute(
            sa.select(schema.jobs.c.uuid, schema.jobs.c.state, schema.jobs.c.log_text)
        ).all()
        artifacts = conn.execute(sa.select(schema.artifacts.c.path)).scalars().all()
        consumed = conn.execute(
            sa.select(schema.jobs.c.uuid, schema.artifacts.c.path)
            .join(schema.job_inputs, schema.job_inputs.c.job_id == schema.jobs.c.id)
            .join(schema.artifacts, schema.artifacts.c.id == schema.job_inputs.c.artifact_id)
        ).all()
    states = {row.uuid: row.state for row in jobs}
    assert states == {b_manifest["job_uuid"]: "success", a_manifest["job_uuid"]: "success"}
    assert sorted(artifacts) == ["a-1.pkg", "b-2.pkg"]
    assert [tuple(row) for row in consumed] == [(a_manifest["job_uuid"], "b-2.pkg")]
    assert any("#BUTIDO:PHASE:compile" in row.log_text for row in jobs)
    engine.dispose()


def test_script_failure_raises_airflow_fail_exception(
    repo: Path, tmp_path: Path, docker_client, caplog
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    dag, ops = make_ops(repo, tmp_path)
    with pytest.raises(AirflowFailException, match="'bad' in phase 'compile'"):
        ops["f"].execute(context_for(dag, {}))


def test_unreachable_endpoints_raise_a_retryable_exception(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    config = repo / "config.toml"
    text = config.read_text()
    config.write_text(text[: text.index("[docker.endpoints.")])
    config.write_text(
        config.read_text()
        + '[docker.endpoints.gone]\nuri = "/nonexistent/docker.sock"\n'
        + 'endpoint_type = "socket"\nmaxjobs = 1\n'
    )
    dag, ops = make_ops(repo, tmp_path)
    with pytest.raises(AirflowException) as info:
        ops["b"].execute(context_for(dag, {}))
    assert not isinstance(info.value, AirflowFailException)
    assert "gone" in str(info.value)


def test_on_kill_removes_the_running_container(repo: Path, tmp_path: Path, docker_client) -> None:
    dag, ops = make_ops(repo, tmp_path)
    op = ops["k"]
    errors: list[BaseException] = []

    def target() -> None:
        try:
            op.execute(context_for(dag, {}))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    from structlog.testing import capture_logs

    with capture_logs() as logs:
        thread = threading.Thread(target=target)
        thread.start()
        deadline = time.monotonic() + 60
        # the script's first line reaches the task log while the container still runs
        while not any(e["event"] == "started" for e in list(logs)):
            assert time.monotonic() < deadline, "no streamed log line within 60 s"
            time.sleep(0.1)
        container_id = op.container["Id"]
        assert docker_client.api.inspect_container(container_id)["State"]["Running"]
        op.on_kill()
        thread.join(60)
    assert not thread.is_alive()
    assert errors, "execute() must fail once its container is gone"
    assert docker_client.api.containers(all=True, filters={"id": container_id}) == []


def test_script_output_streams_into_the_task_log_with_readable_protocol_events(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    from structlog.testing import capture_logs

    dag, ops = make_ops(repo, tmp_path)
    b_manifest = ops["b"].execute(context_for(dag, {}))
    with capture_logs() as logs:
        ops["a"].execute(context_for(dag, {"b-2": b_manifest}))
    messages = [entry["event"] for entry in logs]
    assert "[butido] phase: compile" in messages
    assert "[butido] progress: 50%" in messages
    assert "[butido] state: OK" in messages
    assert not any(m.startswith("#BUTIDO:") for m in messages)


# What Airflow's task runner does when a task is marked failed, cleared or its run stopped:
# the supervisor sends SIGTERM, the task process's handler calls on_kill(), and SIGKILL
# follows 5 s later. The operator runs in the main thread of its own process, as in a task.
KILLED_TASK = """
import signal, sys
from airflow.sdk import DAG
from airflow_butido.operators.build import PackageBuildOperator

repo, db, run_id = sys.argv[1:4]
with DAG(dag_id="kill_test", schedule=None) as dag:
    op = PackageBuildOperator(
        task_id="k-1", repo_path=repo, package_name="k", package_version="1", image="test",
        plan_task_id=None, database_url=db,
    )
signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
try:
    op.execute({"run_id": run_id, "dag": dag})
except BaseException as exc:
    print("FAILED:", type(exc).__name__, exc, flush=True)
    sys.exit(1)
print("SUCCEEDED", flush=True)
"""


def _start_killable_task(repo: Path, db: str, run_id: str):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", KILLED_TASK, str(repo), db, run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run_containers(docker_client, run_id: str) -> list:
    label = f"io.butido.dag_run=kill_test/{run_id}"
    return docker_client.containers.list(all=True, filters={"label": label})


def _wait_for_running_build(proc, docker_client, run_id: str) -> None:
    """Until the task's build container runs its script (`sleep 300`)."""
    deadline = time.monotonic() + 90
    while not any(c.status == "running" for c in _run_containers(docker_client, run_id)):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the build container never ran"
        time.sleep(0.2)
    time.sleep(1)  # the script runs `sleep 300` now


def test_sigterm_to_the_task_process_removes_its_container_before_sigkill(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    import signal

    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    proc = _start_killable_task(repo, f"sqlite:///{tmp_path / 'kill.sqlite'}", run_id)
    try:
        _wait_for_running_build(proc, docker_client, run_id)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert time.monotonic() - killed_at < 5, "Airflow would SIGKILL the task after 5 s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = _run_containers(docker_client, run_id)
        for container in leftovers:
            container.remove(force=True)
    assert leftovers == []
    assert proc.returncode == 1, output
    assert "FAILED: AirflowFailException the task was killed" in output  # no retry


def test_a_task_killed_while_waiting_for_a_slot_never_starts_a_container(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    import signal

    from airflow_butido.db.engine import make_engine
    from airflow_butido.db.migrate import upgrade
    from airflow_butido.endpoints import DatabaseSlots

    config = repo / "config.toml"
    config.write_text(config.read_text().replace("maxjobs = 4", "maxjobs = 1"))
    db = f"sqlite:///{tmp_path / 'kill.sqlite'}"
    engine = make_engine(db)
    upgrade(engine)
    slots = DatabaseSlots(engine)
    assert slots.acquire("another-job", [("local", 1)]) == "local"
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    proc = _start_killable_task(repo, db, run_id)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120  # a busy machine takes long to import Airflow
        while not any("waiting 0 s for a slot" in line for line in said):
            assert proc.poll() is None, "".join(said)
            assert time.monotonic() < deadline, "".join(said)
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        slots.release("another-job")  # the slot frees right after the kill
        proc.wait(timeout=30)
        reader.join(10)
        output = "".join(said)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = _run_containers(docker_client, run_id)
        for container in leftovers:
            container.remove(force=True)
        engine.dispose()
    assert leftovers == []
    assert proc.returncode == 1, output
    assert "the task was killed" in output


def test_a_task_killed_while_another_run_builds_the_same_key_stops_waiting(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    import signal

    db = f"sqlite:///{tmp_path / 'kill.sqlite'}"
    first_run, second_run = (f"manual__{uuid.uuid4().hex[:8]}" for _ in range(2))
    first = _start_killable_task(repo, db, first_run)
    second = None
    try:
        deadline = time.monotonic() + 90
        while not any(c.status == "running" for c in _run_containers(docker_client, first_run)):
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first build never ran"
            time.sleep(0.2)
        second = _start_killable_task(repo, db, second_run)  # same build key: it waits
        time.sleep(8)
        assert second.poll() is None, second.communicate()[0]
        assert _run_containers(docker_client, second_run) == []
        killed_at = time.monotonic()
        second.send_signal(signal.SIGTERM)
        second_output, _ = second.communicate(timeout=30)
        assert time.monotonic() - killed_at < 5, "Airflow would SIGKILL the task after 5 s"
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        leftovers = [c for r in (first_run, second_run) for c in _run_containers(docker_client, r)]
        for container in leftovers:
            container.remove(force=True)
    assert leftovers == []
    assert second.returncode == 1, second_output
    assert "cancelled while waiting for job" in second_output


def test_operator_is_a_docker_operator_whose_recipe_values_are_no_templates() -> None:
    """A package named ``p{{ params.leak }}`` stays that name: recipe-controlled values are
    never rendered by Airflow, so a recipe cannot pull variables or connections into logs."""
    import jinja2
    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.sdk import DAG

    from airflow_butido.operators.build import PackageBuildOperator

    with DAG(dag_id=f"t_{uuid.uuid4().hex[:8]}", schedule=None):
        op = PackageBuildOperator(
            task_id="x",
            repo_path="/r",
            package_name="p{{ params.leak }}",
            package_version="{{ var.value.secret }}",
            image="{{ conn.butido_db.password }}",
        )
        with pytest.raises(ValueError, match="does not use DockerOperator argument.*command"):
            PackageBuildOperator(
                task_id="y", repo_path="/r", package_name="p", package_version="1",
                image="test", command="true",
            )  # fmt: skip
    assert isinstance(op, DockerOperator)
    assert op.template_fields == ()
    context = {"params": {"leak": "LEAKED"}, "run_id": "manual__1"}
    op.render_template_fields(context, jinja_env=jinja2.Environment())
    assert (op.package_name, op.package_version) == ("p{{ params.leak }}", "{{ var.value.secret }}")
    assert op.image == "{{ conn.butido_db.password }}"


def test_a_sigkilled_task_leaves_its_container_stopped_not_building(
    repo: Path, tmp_path: Path, docker_client
) -> None:
    """SIGKILL cannot be handled; the container's bash loses its attached stdin and exits."""
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    proc = _start_killable_task(repo, f"sqlite:///{tmp_path / 'kill.sqlite'}", run_id)
    status = None
    try:
        _wait_for_running_build(proc, docker_client, run_id)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            [container] = _run_containers(docker_client, run_id)
            status = container.status
            if status == "exited":
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for container in _run_containers(docker_client, run_id):
            container.remove(force=True)
    assert status == "exited"  # and `butido endpoint containers prune` removes it
