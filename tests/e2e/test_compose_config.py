"""docker-compose.airflow.yml is a valid Compose file with the services of the deployment.

Runs ``docker compose config`` (Compose v2 plugin) or Debian's ``docker-compose`` (v1.29, the
package scripts/ensure-services installs); neither needs a running engine for ``config``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.airflow.yml"


def compose_command() -> list[str]:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("neither `docker compose` nor `docker-compose` is installed")
    raise AssertionError("unreachable")


def compose(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_compose_file_is_valid_with_every_service():
    services = set(compose("config", "--services").split())
    assert {
        "postgres",
        "airflow-init",
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
    } <= services


def test_celery_profile_adds_redis_and_a_worker():
    services = set(compose("--profile", "celery", "config", "--services").split())
    assert {"redis", "celery-worker"} <= services


def test_airflow_services_mount_socket_repository_and_stores():
    rendered = compose("config")
    assert "/var/run/docker.sock" in rendered
    assert "target: /repo" in rendered or ":/repo" in rendered
    assert "/stores" in rendered
    assert "AIRFLOW__CORE__EXECUTOR: LocalExecutor" in rendered
    assert "BUTIDO_DATABASE_HOST: postgres" in rendered


@pytest.mark.parametrize("service", ["scheduler", "dag-processor", "api-server", "triggerer"])
def test_airflow_services_wait_for_the_init(service):
    import yaml

    data = yaml.safe_load(compose("config"))
    depends = data["services"][service]["depends_on"]
    assert depends["airflow-init"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"


IMAGE_VARIABLES = ("AIRFLOW_BUTIDO_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE")


def service_images(**settings: str) -> dict[str, str]:
    import yaml

    env = {k: v for k, v in os.environ.items() if k not in IMAGE_VARIABLES} | settings
    data = yaml.safe_load(compose("--profile", "celery", "config", env=env))
    return {name: service["image"] for name, service in data["services"].items()}


def test_images_default_to_the_official_ones():
    images = service_images()
    assert images["postgres"] == "postgres:15" and images["redis"] == "redis:7"
    assert images["scheduler"] == images["celery-worker"] == "airflow-butido/airflow:latest"


def test_images_come_from_variables():
    images = service_images(
        AIRFLOW_BUTIDO_IMAGE="example/airflow:1",
        POSTGRES_IMAGE="airflow-butido/postgres:15",
        REDIS_IMAGE="airflow-butido/redis:7",
    )
    assert images["postgres"] == "airflow-butido/postgres:15"
    assert images["redis"] == "airflow-butido/redis:7"
    assert {images[s] for s in ("airflow-init", "api-server", "scheduler", "celery-worker")} == {
        "example/airflow:1"
    }


def rendered(*profiles: str, **settings: str) -> dict:
    import yaml

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTIDO_", "AIRFLOW"))}
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    return yaml.safe_load(compose(*args, "config", env=env | settings))["services"]


def test_stores_default_to_the_mounted_directory():
    env = rendered()["scheduler"]["environment"]
    assert env["BUTIDO_STAGING"] == "/stores/staging"
    assert env["BUTIDO_SOURCE_CACHE"] == "/stores/sources"


def test_the_celery_s3_profile_has_two_workers_without_stores():
    services = rendered("celery-s3", BUTIDO_STORES_URL="s3://builds/ci")
    assert {"redis", "s3", "s3-init", "worker-a", "worker-b"} <= set(services)
    # the workers of the celery profile mount the shared stores: not started with this one
    assert "celery-s3" not in services["celery-worker"]["profiles"]
    assert {*services["s3"]["profiles"], *services["worker-a"]["profiles"]} == {"celery-s3"}
    for worker, queue in (("worker-a", "machine-a"), ("worker-b", "machine-b")):
        service = services[worker]
        targets = {
            str(v["target"] if isinstance(v, dict) else v.split(":")[1]) for v in service["volumes"]
        }
        assert targets == {"/var/run/docker.sock", "/repo"}, service["volumes"]
        command = service["command"]  # a string (v1.29) or a list (v2)
        assert (command.split() if isinstance(command, str) else command)[-1] == f"default,{queue}"
        assert service["environment"]["BUTIDO_RELEASES_ROOT"] == "s3://builds/ci/releases"
        assert service["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"
    assert services["scheduler"]["environment"]["BUTIDO_STAGING"] == "s3://builds/ci/staging"
    assert services["s3-init"]["command"][1] == "s3://builds/ci/sources"


def test_the_processes_that_fork_tasks_preload_their_modules_and_the_others_do_not():
    """The scheduler (LocalExecutor workers), the DAG processor and Celery workers import
    the package tasks' modules once (airflow_butido/preload.py); the api-server and the
    triggerer fork no task processes and keep the lazy default."""
    from airflow_butido.preload import PRELOAD_ENV

    services = rendered("celery", "celery-s3")
    for name in ("scheduler", "dag-processor", "celery-worker", "worker-a", "worker-b"):
        env = services[name]["environment"]
        assert {k: env.get(k) for k in PRELOAD_ENV} == PRELOAD_ENV, name
        assert env["BUTIDO_REPO"] == "/repo" and env["BUTIDO_STAGING"], name  # the rest kept
    for name in ("api-server", "triggerer", "airflow-init"):
        assert not set(PRELOAD_ENV) & set(services[name]["environment"]), name
