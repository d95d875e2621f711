"""A real Airflow deployment for end-to-end tests, shared by the test modules.

``airflow api-server``, ``scheduler`` and ``dag-processor`` (LocalExecutor, PostgreSQL
metadata database, SimpleAuthManager user ``ci`` with a known password), a dags folder with
``dags/butido_build.py`` (and a module's ``extra_dag_files``) and ``BUTIDO_REPO`` pointing at a
copy of the example repository whose overlay config builds in the test image on the local
Docker socket. The fixtures of tests/e2e/conftest.py start one per test module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_butido.airflow_rest import AirflowClient

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


@contextlib.contextmanager
def fresh_databases(pg_admin_engine: Any) -> Iterator[tuple[str, str]]:
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


def wait_until(what: str, check, timeout: float, deployment: Deployment) -> object:
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


def _dags_folder(base: Path, extra: dict[str, str]) -> Path:
    folder = base / "dags"
    folder.mkdir()
    shutil.copy(ROOT / "dags" / "butido_build.py", folder / "butido_build.py")
    for name, source in extra.items():
        (folder / name).write_text(source)
    return folder


def _plugins_folder(base: Path) -> Path:
    """Where Airflow looks for plugin files. Installed, the package registers its plugin
    through its ``airflow.plugins`` entry point; from a source tree whose installed metadata
    predates that entry point, a one-line plugin file registers the same class."""
    from importlib.metadata import entry_points

    folder = base / "plugins"
    folder.mkdir()
    if not any(e.name == "butido" for e in entry_points(group="airflow.plugins")):
        (folder / "butido_plugin.py").write_text(
            "from airflow_butido.web.plugin import ButidoPlugin  # noqa: F401\n"
        )
    return folder


@contextlib.contextmanager
def running_deployment(
    databases: tuple[str, str],
    workspace: dict[str, Path],
    extra_dag_files: dict[str, str],
    extra_env: dict[str, str] | None = None,
) -> Iterator[Deployment]:
    """Migrate, start the three processes, wait for health and the DAG; stop them after.

    ``extra_env`` adds to (or overrides) the processes' environment, e.g. Airflow settings.
    """
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
        "AIRFLOW__CORE__DAGS_FOLDER": str(_dags_folder(base, extra_dag_files)),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(_plugins_folder(base)),
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
    env.update(extra_env or {})
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

        wait_until("a healthy deployment", healthy, START_TIMEOUT, deploy)
        wait_until(
            f"the DAG {DAG_ID}",
            lambda: deploy.client().dag(DAG_ID)["dag_id"] == DAG_ID,
            START_TIMEOUT,
            deploy,
        )
        yield deploy
    finally:
        deploy.stop()
        remove_leftover_containers()


def remove_leftover_containers() -> None:
    import docker
    import docker.errors

    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"label": "io.butido.dag_run"}):
            if str(container.labels.get("io.butido.dag_run", "")).startswith(f"{DAG_ID}/"):
                with contextlib.suppress(docker.errors.NotFound):  # gone since it was listed
                    container.remove(force=True)
    finally:
        client.close()
