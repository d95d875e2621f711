"""End to end: a real Airflow deployment builds butido's example repository.

The deployment of tests/e2e/deployment.py (api-server, scheduler, dag-processor) builds a copy
of the example repository. Runs are triggered with ``butido trigger`` exactly as CI would, and
checked through the REST API.

The copy differs from the example in one place: package ``h`` fails when the run's env sets
``FAIL_H`` (and ``FAIL_H`` is an allowed env name), which drives the failure run.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.deployment import DAG_ID, PASSWORD, RUN_TIMEOUT, VENV_BIN, Deployment, wait_until

pytestmark = [pytest.mark.airflow, pytest.mark.docker, pytest.mark.postgres]


def butido_trigger(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in deployment.env.items() if not k.startswith("AIRFLOW__")}
    return subprocess.run(
        [
            str(VENV_BIN / "butido"),
            "trigger",
            "--airflow",
            deployment.url,
            "--user",
            "ci",
            "--password",
            PASSWORD,
            "--dag-id",
            DAG_ID,
            "--poll",
            "2",
            "--timeout",
            str(RUN_TIMEOUT),
            "--json",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT + 60,
    )


def result_of(done: subprocess.CompletedProcess[str]) -> dict:
    """`butido trigger --json` prints one JSON document on stdout (progress on stderr)."""
    assert f"triggered {DAG_ID} run " in done.stderr
    return json.loads(done.stdout)


def states_of(deployment: Deployment, run_id: str) -> dict[str, str | None]:
    return {
        ti["task_id"]: ti.get("state") for ti in deployment.client().task_instances(DAG_ID, run_id)
    }


def test_ci_trigger_builds_a_with_every_task_successful(
    deployment: Deployment, workspace, databases
):
    done = butido_trigger(deployment, "a", "-I", "bookworm")
    assert done.returncode == 0, done.stdout + done.stderr + deployment.logs()
    result = result_of(done)
    assert result["state"] == "success"
    run_id = result["run_id"]
    states = states_of(deployment, run_id)
    assert len(states) == 31
    assert {s for s in states.values()} == {"success"}, states

    client = deployment.client()
    plan = client.xcom(DAG_ID, run_id, "plan")
    assert plan["requested"] == ["a-1"] and len(plan["packages"]) == 29
    manifest = client.xcom(DAG_ID, run_id, "z-26")
    assert manifest["package"] == "z" and manifest["version"] == "26"
    (artifact,) = manifest["artifacts"]
    assert artifact["path"] == "z-26.pkg" and len(artifact["sha256"]) == 64
    assert artifact["size"] == len("26\n") and manifest["outcome"] == "built"
    assert manifest["job_uuid"] and manifest["image"] == plan["image"]
    # a-1 received the artifact of every transitive dependency (28 packages)
    received = client.xcom(DAG_ID, run_id, "a-1")["inputs"]
    assert sorted(i["path"] for i in received) == sorted(
        f"{t}.pkg" for t in plan["packages"] if t != "a-1"
    )
    staged = workspace["stores"] / "staging" / plan["submit_uuid"] / "a-1.pkg"
    assert staged.read_text() == "1\n"
    report = client.xcom(DAG_ID, run_id, "report")
    assert {p["outcome"] for p in report["packages"]} <= {"built", "reused"}
    assert "a-1.pkg" in result["artifacts"] and len(result["artifacts"]) == 29
    assert result["report"]["ok"] is True and len(result["report"]["packages"]) == 29
    # the plan recorded the submit, the package tasks their jobs, in the build database
    import sqlalchemy as sa

    engine = sa.create_engine(databases[1])
    with engine.connect() as conn:
        submit_id = conn.execute(
            sa.text("select id from submits where uuid = :u"), {"u": plan["submit_uuid"]}
        ).scalar_one()
        jobs = conn.execute(
            sa.text("select count(*) from jobs where submit_id = :s"), {"s": submit_id}
        ).scalar()
    engine.dispose()
    assert jobs == 29


def test_failing_package_fails_its_dependents_only(deployment: Deployment):
    done = butido_trigger(deployment, "a", "-I", "bookworm", "-E", "FAIL_H=1")
    assert done.returncode == 1, done.stdout + done.stderr + deployment.logs()
    result = result_of(done)
    assert result["state"] == "failed"
    run_id = result["run_id"]
    client = deployment.client()
    assert client.dag_run(DAG_ID, run_id)["state"] == "failed"
    states = states_of(deployment, run_id)
    assert states["h-8"] == "failed"
    assert states["c-3"] == "upstream_failed" and states["a-1"] == "upstream_failed"
    for independent in ("b-2", "d-4", "g-7", "i-9", "z-26", "s-19.0"):
        assert states[independent] == "success", (independent, states)
    assert states["report"] == "failed" and states["plan"] == "success"
    failure = client.xcom(DAG_ID, run_id, "h-8", key="failure")
    assert "FAIL_H is set" in failure["message"]
    assert any("h fails on purpose" in line for line in failure["log_tail"])
    assert set(result["failures"]) == {"h-8"} and "FAIL_H is set" in result["failures"]["h-8"]


def test_bad_request_fails_the_plan_and_the_ci_client_says_why(deployment: Deployment):
    done = butido_trigger(deployment, "nosuch", "s", "-I", "bookworm")
    assert done.returncode == 1, done.stdout + done.stderr + deployment.logs()
    result = result_of(done)
    assert result["state"] == "failed"
    message = result["failures"]["plan"]
    assert "package 'nosuch' not found in the repository" in message
    assert "package s has several versions (19.0, 19.1, 19.2, 19.3)" in message
    states = states_of(deployment, result["run_id"])
    assert states["plan"] == "failed" and states["report"] == "failed"
    assert not {s for t, s in states.items() if t not in ("plan", "report")} - {
        "upstream_failed"
    }  # no package task ran


@pytest.mark.parametrize("kill", ["mark the task failed", "stop the DAG run"])
def test_killing_a_running_build_removes_its_container(deployment: Deployment, kill: str):
    import docker

    client = deployment.client()
    client.set_paused(DAG_ID, False)
    run_id = client.trigger(DAG_ID, {"packages": ["h 8"], "env": {"SLEEP_H": "1"}})
    label = f"io.butido.dag_run={DAG_ID}/{run_id}"
    docker_client = docker.from_env()

    def containers() -> list:
        return docker_client.containers.list(all=True, filters={"label": label})

    try:
        wait_until(
            "the build container of h runs",
            lambda: any(c.status == "running" for c in containers()),
            RUN_TIMEOUT,
            deployment,
        )
        run_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"
        if kill == "mark the task failed":
            client._request("PATCH", f"{run_path}/taskInstances/h-8", json={"new_state": "failed"})
        else:
            client._request("PATCH", run_path, json={"state": "failed"})
        wait_until("the container is removed", lambda: not containers(), 60, deployment)
        assert states_of(deployment, run_id)["h-8"] == "failed"
    finally:
        for container in containers():
            container.remove(force=True)
        docker_client.close()
