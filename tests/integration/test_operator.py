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
    assert b_manifest["reused"] is False
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
    plan = {
        "submit_uuid": submit,
        "env": {"FOO": "x"},
        "dependencies": {"a-1": ["b-2"], "b-2": []},
    }
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

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 60
    while op._build_container is None and time.monotonic() < deadline:
        time.sleep(0.1)
    container_id = op.container["Id"]
    time.sleep(1)  # let the script start
    op.on_kill()
    thread.join(60)
    assert not thread.is_alive()
    assert errors, "execute() must fail once its container is gone"
    assert docker_client.api.containers(all=True, filters={"id": container_id}) == []
