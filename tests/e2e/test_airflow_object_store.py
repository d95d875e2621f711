"""A real Airflow deployment (LocalExecutor task processes) builds with staging and source
cache in S3 (moto on loopback): the package tasks reach the bucket through the Airflow
connection ``butido_stores`` set in the deployment's environment."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._example import example_workspace
from tests.e2e.deployment import DAG_ID, Deployment, running_deployment
from tests.e2e.test_airflow_build import butido_trigger, result_of, states_of
from tests.e2e.test_object_store_build import with_stores
from tests.s3_server import CONN_ENV, S3Server

pytestmark = [pytest.mark.airflow, pytest.mark.docker, pytest.mark.postgres]


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server, butido_examples: Path) -> str:
    name = s3_server.new_bucket()
    s3_server.upload_tree(butido_examples / "sources", name, "cache")
    return name


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, butido_examples: Path, build_image: str, bucket: str):
    ws = example_workspace(tmp_path_factory.mktemp("e2e-s3"), butido_examples, build_image)
    stores = {"staging": f"s3://{bucket}/staging", "source_cache": f"s3://{bucket}/cache"}
    with_stores(ws["overlay"], {**stores, "releases_root": str(ws["stores"] / "releases")})
    return ws


@pytest.fixture(scope="module")
def deployment(databases, workspace, s3_server: S3Server) -> Iterator[Deployment]:
    extra_env = {CONN_ENV: s3_server.connection}
    with running_deployment(databases, workspace, {}, extra_env) as deploy:
        yield deploy


def test_package_tasks_build_from_and_into_the_bucket(
    deployment: Deployment, workspace, s3_server: S3Server, bucket: str
) -> None:
    done = butido_trigger(deployment, "c", "-I", "bookworm")
    assert done.returncode == 0, done.stdout + done.stderr + deployment.logs()
    result = result_of(done)
    assert result["state"] == "success"
    states = states_of(deployment, result["run_id"])
    client = deployment.client()
    plan = client.xcom(DAG_ID, result["run_id"], "plan")
    assert {states[t] for t in plan["packages"]} == {"success"}, states
    keys = s3_server.objects(bucket, f"staging/{plan['submit_uuid']}/")
    assert len(keys) == len(plan["packages"])
    # c received its dependencies' artifacts from the bucket and built on them
    manifest = client.xcom(DAG_ID, result["run_id"], "c-3")
    assert manifest["outcome"] == "built" and manifest["inputs"]
    (artifact,) = manifest["artifacts"]
    data = s3_server.read(bucket, f"staging/{plan['submit_uuid']}/{artifact['path']}")
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"] and data == b"3\n"
    assert not (workspace["stores"] / "staging").exists() or not any(
        (workspace["stores"] / "staging").iterdir()
    )
