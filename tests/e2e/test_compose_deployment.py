"""End to end: docker-compose.airflow.yml brought up with the README's commands, building the
example repository, once with the LocalExecutor and the stores on a local directory, and once
with Celery: two workers that share no disk, the stores in an S3 bucket (moto), and queues
that build ``libgreet`` on one worker and ``hello``, which needs its package, on the other.

The README's "Run on Airflow" blocks (marked ``<!-- compose:NAME -->``) run verbatim in bash
from the checkout. Only the settings block is mirrored: the test exports exactly the variables
it names, with its own values (a temporary stores directory, a free port, a fresh password),
plus a unique ``COMPOSE_PROJECT_NAME`` and, for Celery, one task slot per worker. The images
are built once per session with the README's image block (Docker's cache makes later builds
take seconds).
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
SETTINGS_ELSEWHERE = ("POSTGRES_IMAGE", "REDIS_IMAGE", "S3_IMAGE", "DOCKER_GID", "CI_PASSWORD")
# the celery-s3 profile: its workers and the queue each one has to itself
# (examples/repo/two-workers.toml routes libgreet to machine-a and hello to machine-b)
WORKERS = {"worker-a": "machine-a", "worker-b": "machine-b"}
ROUTED = {"libgreet-1.0": "worker-a", "hello-2.1": "worker-b"}
BUCKET = "butido"
# run in the S3 server's container: every object below a prefix, with its sha256 and size,
# read through the S3 API in chunks
LIST_OBJECTS = """
import hashlib, json, sys
import boto3
s3 = boto3.client("s3", endpoint_url="http://localhost:5000", region_name="us-east-1",
                  aws_access_key_id="any", aws_secret_access_key="any")
found = {}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[1], Prefix=sys.argv[2]):
    for item in page.get("Contents", []):
        digest = hashlib.sha256()
        for chunk in s3.get_object(Bucket=sys.argv[1], Key=item["Key"])["Body"].iter_chunks():
            digest.update(chunk)
        found[item["Key"]] = {"sha256": digest.hexdigest(), "size": item["Size"]}
print(json.dumps(found))
"""
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

    def recorded_artifacts(self, submit_uuid: str) -> dict[str, dict]:
        """The build database's artifacts of a submit: path -> sha256 and size."""
        (postgres,) = self.containers("postgres")
        query = (
            "select a.path, a.sha256, a.size from artifacts a join jobs j on j.id = a.job_id "
            f"join submits s on s.id = j.submit_id where s.uuid = '{submit_uuid}'"
        )
        code, out = postgres.exec_run(["psql", "-U", "butido", "-d", "butido", "-At", "-c", query])
        assert code == 0, out.decode(errors="replace")
        rows = (line.split("|") for line in out.decode().splitlines() if line)
        return {path: {"sha256": digest, "size": int(size)} for path, digest, size in rows}

    def s3_objects(self, prefix: str) -> dict[str, dict]:
        """The bucket's objects below ``prefix``: key -> sha256 and size, from the S3 API."""
        (s3,) = self.containers("s3")
        code, out = s3.exec_run(["python3", "-c", LIST_OBJECTS, BUCKET, prefix])
        assert code == 0, out.decode(errors="replace")
        return json.loads(out.decode().strip().splitlines()[-1])

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

    plan = client.xcom(DAG_ID, run_id, "plan")
    manifests = {task_id: client.xcom(DAG_ID, run_id, task_id)["artifacts"] for task_id in DEBS}
    recorded = deployment.recorded_artifacts(plan["submit_uuid"])
    for task_id, deb in DEBS.items():
        (artifact,) = manifests[task_id]
        assert artifact["path"] == deb
        assert recorded[deb] == {"sha256": artifact["sha256"], "size": artifact["size"]}
    hosts = {t: ti["hostname"] for t, ti in ran.items()}
    print(
        "\ntasks: "
        + ", ".join(f"{t} {ti['duration'] or 0:.1f} s on {ti['hostname']}" for t, ti in ran.items())
    )
    if deployment.celery:
        check_no_shared_disk(deployment, plan["submit_uuid"], manifests, tasks, hosts)
        return

    # the .deb files are in the stores directory, as the manifests in XCom describe them
    staging = deployment.stores / "staging" / plan["submit_uuid"]
    for task_id, deb in DEBS.items():
        (artifact,) = manifests[task_id]
        staged = staging / deb
        assert staged.read_bytes().startswith(b"!<arch>\ndebian-binary"), staged
        assert sha256(staged) == artifact["sha256"]
        assert staged.stat().st_size == artifact["size"]
    # the scheduler's LocalExecutor ran every task
    (scheduler,) = deployment.containers("scheduler")
    assert set(hosts.values()) == {scheduler.attrs["Config"]["Hostname"]}, hosts


def check_no_shared_disk(
    deployment: Deployment,
    submit_uuid: str,
    manifests: dict[str, list[dict]],
    tasks: dict[str, dict],
    hosts: dict[str, str],
) -> None:
    """Two workers without a common disk built the chain libgreet -> hello -> greet-suite,
    libgreet on one and hello on the other: hello's input came from the bucket."""
    workers = {}
    for name in WORKERS:
        (container,) = deployment.containers(name)
        workers[name] = container
    # no stores on the workers: the only things mounted are the Docker socket and the
    # repository, read-only; no volume at all, so none they could share
    for name, container in workers.items():
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert set(mounts) == {"/var/run/docker.sock", "/repo"}, (name, mounts)
        assert mounts["/repo"]["RW"] is False, (name, mounts["/repo"])
        assert all(m["Type"] == "bind" for m in mounts.values()), (name, mounts)
        stores = str(deployment.stores)
        assert not any(m["Source"].startswith(stores) for m in mounts.values()), mounts
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["BUTIDO_STAGING"] == f"s3://{BUCKET}/staging", env["BUTIDO_STAGING"]
        command = container.attrs["Config"]["Cmd"]
        assert command[-1] == f"default,{WORKERS[name]}", command

    # each routed package ran on its queue's worker, the dependency and its dependent on
    # different ones; every task ran on one of the two
    hostnames = {name: c.attrs["Config"]["Hostname"] for name, c in workers.items()}
    for task_id, worker in ROUTED.items():
        assert tasks[task_id]["queue"] == WORKERS[worker], tasks[task_id]
        assert hosts[task_id] == hostnames[worker], (task_id, hosts)
    assert hosts["libgreet-1.0"] != hosts["hello-2.1"]
    assert set(hosts.values()) <= set(hostnames.values()), hosts

    # the .deb files are in the bucket, as the manifests in XCom describe them, and nothing
    # was staged on the host's stores directory
    objects = deployment.s3_objects(f"staging/{submit_uuid}/")
    for task_id, deb in DEBS.items():
        (artifact,) = manifests[task_id]
        stored = objects.get(f"staging/{submit_uuid}/{deb}")
        assert stored == {"sha256": artifact["sha256"], "size": artifact["size"]}, (
            deb,
            stored,
            sorted(objects),
        )
    staged_here = deployment.stores / "staging"
    assert not staged_here.exists() or not any(staged_here.iterdir()), list(staged_here.iterdir())
