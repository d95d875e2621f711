"""The build-record view against a real (SQLite) build database and real stores.

Airflow's authentication is replaced by a dependency naming a user here (the refusal of
anonymous requests by the real auth manager is shown against a real api-server in
tests/e2e/test_airflow_ui.py); everything else is the app as the plugin mounts it.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from airflow_butido.db import records
from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import upgrade
from airflow_butido.web.app import BuildRecord, create_app

SUBMIT = str(uuid.uuid4())
BUILT = str(uuid.uuid4())
REUSED = str(uuid.uuid4())
LATER_SUBMIT = str(uuid.uuid4())


@pytest.fixture
def record(tmp_path: Path) -> BuildRecord:
    engine = make_engine(f"sqlite:///{tmp_path / 'butido.sqlite'}")
    upgrade(engine)
    staging = tmp_path / "staging"
    (staging / SUBMIT).mkdir(parents=True)
    data = b"hello 2.1\n"
    (staging / SUBMIT / "hello-2.1.deb").write_bytes(data)
    common = {"package_name": "hello", "package_version": "2.1", "image": "debian:bookworm"}
    records.record_submit(
        engine, uuid=SUBMIT, repo_commit="abc123", dag_id="butido_bookworm", run_id="r1",
        **common,
    )  # fmt: skip
    records.record_job_start(
        engine, uuid=BUILT, submit_uuid=SUBMIT, endpoint="local", container_id="c0ffee",
        script="#!/bin/bash\necho <building>\n", dag_id="butido_bookworm", run_id="r1",
        try_number=1, **common,
    )  # fmt: skip
    records.record_job_finish(
        engine, uuid=BUILT, state="success", exit_status=0, log="step 1\n<done>\n"
    )
    records.record_artifacts(
        engine,
        BUILT,
        [records.ArtifactRecord("hello-2.1.deb", hashlib.sha256(data).hexdigest(), len(data))],
    )
    records.record_submit(
        engine, uuid=LATER_SUBMIT, repo_commit="abc123", dag_id="butido_bookworm", run_id="r2",
        **common,
    )  # fmt: skip
    records.record_reused_job(
        engine, uuid=REUSED, submit_uuid=LATER_SUBMIT, reused_job_uuid=BUILT,
        reason="same build key", dag_id="butido_bookworm", run_id="r2", try_number=1, **common,
    )  # fmt: skip
    return BuildRecord(engine=engine, staging=staging, release_stores=())


def _client(record: BuildRecord, *, logged_in: bool = True) -> TestClient:
    def user(request: Request) -> str:
        if not logged_in:
            raise HTTPException(401, "Not authenticated")
        return "ci"

    return TestClient(create_app(lambda: record, user_dependency=user), follow_redirects=False)


def test_submits_jobs_artifacts_script_and_log_are_browsable(record: BuildRecord):
    client = _client(record)
    index = client.get("/")
    assert index.status_code == 200 and SUBMIT in index.text and LATER_SUBMIT in index.text
    submit = client.get(f"/submits/{SUBMIT}")
    assert BUILT in submit.text and "hello 2.1" in submit.text
    assert "/dags/butido_bookworm/runs/r1" in submit.text
    job = client.get(f"/jobs/{BUILT}")
    assert job.status_code == 200
    assert "echo &lt;building&gt;" in job.text and "&lt;done&gt;" in job.text  # escaped
    assert f"/butido/jobs/{BUILT}/artifacts/hello-2.1.deb" in job.text
    assert client.get(f"/jobs/{BUILT}/log").text == "step 1\n<done>\n"
    assert client.get(f"/jobs/{BUILT}/script").text.startswith("#!/bin/bash")
    assert client.get("/releases").status_code == 200


def test_an_artifact_downloads_and_a_changed_one_does_not(record: BuildRecord):
    client = _client(record)
    download = client.get(f"/jobs/{BUILT}/artifacts/hello-2.1.deb")
    assert download.status_code == 200 and download.content == b"hello 2.1\n"
    assert "hello-2.1.deb" in download.headers["content-disposition"]
    # a reused job serves the artifact of the job it reused
    assert client.get(f"/jobs/{REUSED}/artifacts/hello-2.1.deb").content == b"hello 2.1\n"
    assert client.get(f"/jobs/{BUILT}/artifacts/../../etc/passwd").status_code == 404
    (record.staging / SUBMIT / "hello-2.1.deb").write_bytes(b"changed")
    assert client.get(f"/jobs/{BUILT}/artifacts/hello-2.1.deb").status_code == 410


def test_reused_jobs_say_so_and_lead_to_the_run_that_built_them(record: BuildRecord):
    client = _client(record)
    page = client.get(f"/jobs/{REUSED}").text
    assert "state-reused" in page and f"/butido/jobs/{BUILT}" in page
    origin = client.get(f"/jobs/{BUILT}/run")
    assert origin.status_code == 307
    assert origin.headers["location"] == "/dags/butido_bookworm/runs/r1/tasks/hello-2.1"


def test_a_task_instance_leads_to_its_job(record: BuildRecord):
    client = _client(record)
    found = client.get("/tasks/butido_bookworm/r2/hello-2.1")
    assert found.status_code == 307 and found.headers["location"] == f"/butido/jobs/{REUSED}"
    assert client.get("/tasks/butido_bookworm/r3/hello-2.1").status_code == 404
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    assert client.get("/jobs/not-a-uuid").status_code == 404


def test_without_a_user_every_page_is_refused(record: BuildRecord):
    client = _client(record, logged_in=False)
    for path in ("/", f"/jobs/{BUILT}", f"/jobs/{BUILT}/log", f"/jobs/{BUILT}/artifacts/x"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert "step 1" not in refused.text and "/auth/login" in refused.text


def test_plugin_is_registered_through_an_entry_point_and_mounts_the_app():
    import tomllib

    from airflow_butido.web.plugin import ButidoPlugin

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    entry = project["project"]["entry-points"]["airflow.plugins"]["butido"]
    assert entry == "airflow_butido.web.plugin:ButidoPlugin"
    plugin = ButidoPlugin()
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/butido"
    assert plugin.external_views[0]["href"] == "/butido/"
