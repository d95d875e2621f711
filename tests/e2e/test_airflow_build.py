"""End to end: a real Airflow deployment builds butido's example repository.

Starts ``airflow api-server``, ``scheduler`` and ``dag-processor`` (LocalExecutor, PostgreSQL
metadata database, SimpleAuthManager user ``ci`` with a known password), with the project's
dags folder and ``BUTIDO_REPO`` pointing at a copy of the example repository whose overlay
config builds in the test image on the local Docker socket. Runs are triggered with
``butido trigger`` exactly as CI would, and checked through the REST API.

The copy differs from the example in one place: package ``h`` fails when the run's env sets
``FAIL_H`` (and ``FAIL_H`` is an allowed env name), which drives the failure run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_butido.airflow_rest import AirflowClient
from tests.e2e._example import example_workspace

pytestmark = [pytest.mark.airflow, pytest.mark.docker, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DAG_ID = "butido_bookworm"
PASSWORD = "ci-password"
START_TIMEOUT = 150
RUN_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def databases(pg_admin_engine) -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases: Airflow's metadata and the build database."""
    import sqlalchemy as sa

    names = [f"butido_e2e_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("airflow", "build")]
    with pg_admin_engine.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    urls = [
        pg_admin_engine.url.set(database=n).render_as_string(hide_password=False) for n in names
    ]
    yield urls[0], urls[1]
    with pg_admin_engine.connect() as conn:
        for name in names:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, butido_examples: Path, build_image: str) -> dict[str, Path]:
    return example_workspace(tmp_path_factory.mktemp("e2e"), butido_examples, build_image)


class Deployment:
    def __init__(self, base: Path, env: dict[str, str], port: int) -> None:
        self.base = base
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the process)
        self.processes[name] = subprocess.Popen(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def logs(self, lines: int = 60) -> str:
        parts = []
        for path in sorted(self.base.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"===== {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def client(self) -> AirflowClient:
        client = AirflowClient(self.url, username="ci", password=PASSWORD, timeout=30)
        client.login()
        return client


def _wait_until(what: str, check, timeout: float, deployment: Deployment) -> object:
    deadline = time.monotonic() + timeout
    last_error: object = None
    while time.monotonic() < deadline:
        for name, proc in deployment.processes.items():
            if proc.poll() is not None:
                pytest.fail(f"airflow {name} exited ({proc.returncode})\n{deployment.logs()}")
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what} ({last_error})\n{deployment.logs()}")


@pytest.fixture(scope="module")
def deployment(databases, workspace) -> Iterator[Deployment]:
    metadata_url, build_url = databases
    base = workspace["base"]
    home = base / "airflow-home"
    home.mkdir()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"ci": PASSWORD}))
    settings = base / "airflow-butido.toml"
    settings.write_text(f'database_url = "{build_url}"\n')
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ci:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "BUTIDO_REPO": str(workspace["repo"]),
        "BUTIDO_CONFIG": str(workspace["overlay"]),
        "BUTIDO_SETTINGS": str(settings),
        "BUTIDO_PARSE_CACHE": str(base / "parse-cache"),
    }
    for key in ("CI", "BUTIDO_AIRFLOW_TOKEN", "BUTIDO_AIRFLOW_URL"):
        env.pop(key, None)
    deploy = Deployment(base, env, port)
    migrate = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    try:
        deploy.start("api-server", "api-server")
        deploy.start("scheduler", "scheduler")
        deploy.start("dag-processor", "dag-processor")

        def healthy() -> bool:
            import requests

            health = requests.get(f"{deploy.url}/api/v2/monitor/health", timeout=5).json()
            return all(
                (health.get(part) or {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "dag_processor")
            )

        _wait_until("a healthy deployment", healthy, START_TIMEOUT, deploy)
        _wait_until(
            f"the DAG {DAG_ID}",
            lambda: deploy.client().dag(DAG_ID)["dag_id"] == DAG_ID,
            START_TIMEOUT,
            deploy,
        )
        yield deploy
    finally:
        deploy.stop()
        _remove_leftover_containers()


def _remove_leftover_containers() -> None:
    import docker

    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"label": "io.butido.dag_run"}):
            if str(container.labels.get("io.butido.dag_run", "")).startswith(f"{DAG_ID}/"):
                container.remove(force=True)
    finally:
        client.close()


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
        _wait_until(
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
        _wait_until("the container is removed", lambda: not containers(), 60, deployment)
        assert states_of(deployment, run_id)["h-8"] == "failed"
    finally:
        for container in containers():
            container.remove(force=True)
        docker_client.close()
