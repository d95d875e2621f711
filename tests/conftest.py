"""Shared fixtures: the butido example corpus and the real infrastructure.

Tests that need a Docker engine or PostgreSQL skip where those are missing, except
under ``CI=true``, where a missing service is a failure: CI always provides them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.tls_engine", "tests.s3_server"]  # a second Docker engine; S3

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUILD_IMAGE = os.environ.get("BUTIDO_TEST_IMAGE", "airflow-butido/debian:bookworm")
PG_ADMIN_URL = os.environ.get(
    "BUTIDO_TEST_PG_URL", "postgresql+psycopg2://butido:butido@127.0.0.1:5432/butido"
)


def unavailable(reason: str) -> None:
    """Skip outside CI; fail in CI, where every service must be present."""
    if IN_CI:
        pytest.fail(f"required infrastructure missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def butido_examples() -> Path:
    """butido's own example corpus (``repo/`` and ``sources/``), read in place."""
    candidates = [Path(os.environ["BUTIDO_EXAMPLES"])] if "BUTIDO_EXAMPLES" in os.environ else []
    candidates.append(ROOT.parent / "shared" / "butido-examples")
    for path in candidates:
        if (path / "repo" / "config.toml").is_file():
            return path
    unavailable("butido's example corpus (../shared/butido-examples) is not present")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def example_repo(butido_examples: Path) -> Path:
    return butido_examples / "repo"


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # any failure to reach the engine
        unavailable(f"no Docker engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def build_image(docker_client) -> str:
    """The offline-built Debian image (scripts/build-base-image)."""
    import docker.errors

    try:
        docker_client.images.get(BUILD_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"image {BUILD_IMAGE} missing: run scripts/build-base-image")
    return BUILD_IMAGE


@pytest.fixture(scope="session")
def pg_admin_engine():
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        unavailable(f"no PostgreSQL at {PG_ADMIN_URL}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin_engine) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"butido_test_{uuid.uuid4().hex[:12]}"
    with pg_admin_engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_admin_engine.url.set(database=name)
    yield url.render_as_string(hide_password=False)
    with pg_admin_engine.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
