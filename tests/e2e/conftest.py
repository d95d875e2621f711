"""Fixtures of the end-to-end tests: one real Airflow deployment per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._example import example_workspace
from tests.e2e.deployment import Deployment, fresh_databases, running_deployment


@pytest.fixture(scope="module")
def databases(pg_admin_engine) -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases: Airflow's metadata and the build database."""
    with fresh_databases(pg_admin_engine) as urls:
        yield urls


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, butido_examples: Path, build_image: str) -> dict[str, Path]:
    return example_workspace(tmp_path_factory.mktemp("e2e"), butido_examples, build_image)


@pytest.fixture(scope="module")
def extra_dag_files() -> dict[str, str]:
    """DAG files placed beside dags/butido_build.py (name: source); a module overrides it."""
    return {}


@pytest.fixture(scope="module")
def deployment(databases, workspace, extra_dag_files) -> Iterator[Deployment]:
    with running_deployment(databases, workspace, extra_dag_files) as deploy:
        yield deploy
