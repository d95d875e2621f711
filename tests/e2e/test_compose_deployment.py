"""End to end: docker-compose.airflow.yml brought up with the README's commands, building the
example repository, once with the LocalExecutor and once with Celery and two workers.

The README's "Run on Airflow" blocks (marked ``<!-- compose:NAME -->``) run verbatim in bash
from the checkout. Only the settings block is mirrored: the test exports exactly the variables
it names, with its own values (a temporary stores directory, a free port, a fresh password),
plus a unique ``COMPOSE_PROJECT_NAME`` and, for Celery, one task slot per worker so that the
example's two independent packages must go to different workers. The images are built once
per session with the README's image block (Docker's cache makes later builds take seconds).
Whatever happens, the deployment is taken down with the README's command, and what it left
(containers, networks, volumes of the project, build containers of its runs) is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from airflow_butido.airflow_rest import AirflowClient
from tests.conftest import unavailable
from tests.e2e.deployment import free_port

pytestmark = [pytest.mark.airflow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DAG_ID = "butido_deb12"
HEALTH_PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
# greet-suite and what it depends on: task id -> the .deb its build stages
DEBS = {
    "libgreet-1.0": "libgreet_1.0_amd64.deb",
    "wordcount-0.3": "wordcount_0.3_amd64.deb",
    "hello-2.1": "hello_2.1_amd64.deb",
    "greet-suite-1": "greet-suite_1_amd64.deb",
}
IMAGES_TIMEOUT = 1500
UP_TIMEOUT = 600
READY_TIMEOUT = 300
RUN_TIMEOUT = 600
# the compose file's other variables: this machine's environment must not change the deployment
SETTINGS_ELSEWHERE = ("POSTGRES_IMAGE", "REDIS_IMAGE", "DOCKER_GID", "CI_PASSWORD")
T = TypeVar("T")


def readme_block(name: str) -> str:
    """The shell block after ``<!-- compose:NAME -->`` in the README."""
    found = re.search(
        rf"<!-- compose:{re.escape(name)} -->\n```sh\n(.*?)```", README.read_text(), re.S
    )
    assert found, f"README.md has no block <!-- compose:{name} -->"
    return found.group(1)


def readme_settings() -> set[str]:
    """The variables the README's settings block exports."""
    names: set[str] = set()
    for line in readme_block("settings").splitlines():
        if line.startswith("export "):
            names.update(re.findall(r"\b([A-Z][A-Z0-9_]*)=", line))
    return names


def docker_client():
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # no engine
        unavailable(f"no Docker engine: {exc}")
    return client


def run_block(name: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block(name)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"README block {name} failed:\n{done.stdout}\n{done.stderr}"
    return done


def wait_until(
    what: str, check: Callable[[], T | None], timeout: float, logs: Callable[[], str]
) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:  # not there yet
            last = exc
        time.sleep(3)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last})\n{logs()}")


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("AIRFLOW", "BUTIDO_", "COMPOSE_")) or key in SETTINGS_ELSEWHERE:
            del env[key]
    if not (ROOT / ".venv" / "bin" / "pip").exists():
        # the wheels for the image: built with this interpreter's pip where scripts/setup's
        # .venv is not in the checkout (a git worktree)
        env["PIP"] = str(Path(sys.executable).parent / "pip")
    return env


@pytest.fixture(scope="session")
def compose_images() -> dict[str, float]:
    """The README's image block, once per session; how long it took."""
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed (scripts/ensure-services installs it)")
    docker_client().close()
    env = base_env()
    env["POSTGRES_IMAGE"] = "airflow-butido/postgres:15"
    env["REDIS_IMAGE"] = "airflow-butido/redis:7"
    started = time.monotonic()
    run_block("images", env, IMAGES_TIMEOUT)
    return {"images": time.monotonic() - started}


class Deployment:
    """One compose project: the README's settings with this test's values."""

    def __init__(self, base: Path, celery: bool) -> None:
        self.base = base
        self.celery = celery
        self.project = f"butido-e2e-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.password = uuid.uuid4().hex
        self.stores = base / "stores"
        self.env = base_env()
        settings = {
            "BUTIDO_REPO_DIR": str(ROOT / "examples" / "repo"),
            "BUTIDO_STORES_DIR": str(self.stores),
            "AIRFLOW_PORT": str(self.port),
            "AIRFLOW_PASSWORDS_DIR": str(base / "airflow-passwords"),
            "CI_PASSWORD": self.password,
            "AIRFLOW_UID": str(os.getuid()),
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            "AIRFLOW_JWT_SECRET": uuid.uuid4().hex,
            "POSTGRES_IMAGE": "airflow-butido/postgres:15",
            "REDIS_IMAGE": "airflow-butido/redis:7",
        }
        assert set(settings) == readme_settings(), "the README's settings changed: mirror them"
        self.env.update(settings)
        self.env["COMPOSE_PROJECT_NAME"] = self.project
        if celery:
            self.env["AIRFLOW_WORKER_CONCURRENCY"] = "1"
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_ids: list[str] = []
        self.timings: dict[str, float] = {}
        self.docker = docker_client()

    def run(self, block: str, timeout: float) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        try:
            return run_block(block, self.env, timeout)
        finally:
            self.timings[block] = time.monotonic() - started

    def containers(self, service: str | None = None) -> list:
        labels = [f"com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        return self.docker.containers.list(all=True, filters={"label": labels})

    def leftovers(self) -> list[str]:
        label = {"label": f"com.docker.compose.project={self.project}"}
        return (
            [f"container {c.name}" for c in self.containers()]
            + [f"network {n.name}" for n in self.docker.networks.list(filters=label)]
            + [f"volume {v.name}" for v in self.docker.volumes.list(filters=label)]
        )

    def logs(self, lines: int = 40) -> str:
        """The last lines of every container of the deployment, each service in turn."""
        parts = []
        for container in sorted(self.containers(), key=lambda c: c.name):
            tail = container.logs(tail=lines).decode(errors="replace").splitlines()
            shown = "\n".join(line[:500] for line in tail)
            parts.append(f"===== {container.name} ({container.status})\n{shown}")
        return "\n".join(parts)

    def client(self) -> AirflowClient:
        client = AirflowClient(self.url, username="ci", password=self.password, timeout=30)
        client.login()
        return client

    def healthy(self) -> dict | None:
        import requests

        health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=10).json()
        states = {part: (health.get(part) or {}).get("status") for part in HEALTH_PARTS}
        if set(states.values()) != {"healthy"}:
            return None
        (api_server,) = self.containers("api-server")
        api_server.reload()
        if api_server.attrs["State"]["Health"]["Status"] != "healthy":
            return None
        return health

    def tear_down(self) -> None:
        started = time.monotonic()
        try:
            run_block("down", self.env, 300)
        finally:
            self.timings["down"] = time.monotonic() - started
            self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """After a failed `down`: nothing of this deployment stays."""
        for run_id in self.run_ids:
            label = f"io.butido.dag_run={DAG_ID}/{run_id}"
            for container in self.docker.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
        for container in self.containers():
            container.remove(force=True, v=True)
        label = {"label": f"com.docker.compose.project={self.project}"}
        for network in self.docker.networks.list(filters=label):
            network.remove()
        for volume in self.docker.volumes.list(filters=label):
            volume.remove(force=True)


@pytest.fixture
def deployment(request, tmp_path: Path, compose_images) -> Iterator[Deployment]:
    deploy = Deployment(tmp_path, celery=request.param == "celery")
    try:
        yield deploy
    finally:
        try:
            deploy.tear_down()
            left = deploy.leftovers()
        finally:
            deploy.docker.close()
            shutil.rmtree(tmp_path, ignore_errors=True)
        timings = {**compose_images, **deploy.timings}
        shown = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
        print(f"\ncompose {request.param}: {shown}")
        assert not left, f"`down` left {left}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("deployment", ["local", "celery"], indirect=True)
def test_readme_deployment_builds_greet_suite(deployment: Deployment):
    deployment.run("prepare", 60)
    deployment.run("up-celery" if deployment.celery else "up", UP_TIMEOUT)
    started = time.monotonic()
    health = wait_until("a healthy deployment", deployment.healthy, READY_TIMEOUT, deployment.logs)
    assert health["scheduler"]["latest_scheduler_heartbeat"]
    wait_until(
        f"the DAG {DAG_ID}",
        lambda: deployment.client().dag(DAG_ID)["dag_id"] == DAG_ID,
        READY_TIMEOUT,
        deployment.logs,
    )
    deployment.timings["ready"] = time.monotonic() - started

    started = time.monotonic()
    run_id = deployment.run("trigger", 120).stdout.strip().splitlines()[-1]
    deployment.run_ids.append(run_id)
    client = deployment.client()
    state = wait_until(
        f"run {run_id} to finish",
        lambda: (s := client.dag_run(DAG_ID, run_id)["state"]) in ("success", "failed") and s,
        RUN_TIMEOUT,
        deployment.logs,
    )
    deployment.timings["run"] = time.monotonic() - started
    tasks = {ti["task_id"]: ti for ti in client.task_instances(DAG_ID, run_id)}
    ran = {t: ti for t, ti in tasks.items() if ti["state"] != "skipped"}
    assert state == "success", (
        json.dumps({t: ti["state"] for t, ti in tasks.items()}) + deployment.logs()
    )
    assert set(ran) == {"plan", "report", *DEBS}
    assert {ti["state"] for ti in ran.values()} == {"success"}

    # the .deb files are in the stores directory, as the manifests in XCom describe them
    plan = client.xcom(DAG_ID, run_id, "plan")
    staging = deployment.stores / "staging" / plan["submit_uuid"]
    for task_id, deb in DEBS.items():
        (artifact,) = client.xcom(DAG_ID, run_id, task_id)["artifacts"]
        assert artifact["path"] == deb
        staged = staging / deb
        assert staged.read_bytes().startswith(b"!<arch>\ndebian-binary"), staged
        assert sha256(staged) == artifact["sha256"]
        assert staged.stat().st_size == artifact["size"]

    # who ran the tasks: the scheduler (LocalExecutor), or both Celery workers
    hosts = {t: ti["hostname"] for t, ti in ran.items()}
    if deployment.celery:
        workers = {c.attrs["Config"]["Hostname"] for c in deployment.containers("celery-worker")}
        assert len(workers) == 2
        assert set(hosts.values()) == workers, (hosts, workers)
    else:
        (scheduler,) = deployment.containers("scheduler")
        assert set(hosts.values()) == {scheduler.attrs["Config"]["Hostname"]}, hosts
