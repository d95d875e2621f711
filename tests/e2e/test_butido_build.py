"""`butido build` runs the image's DAG in one process on the real Docker engine.

Uses a copy of butido's example repository (tests/e2e/_example.py) with an embedded SQLite
build database; no Airflow service runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e._example import butido_in_workspace, example_workspace

pytestmark = [pytest.mark.docker]

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, butido_examples: Path, build_image: str) -> dict[str, Path]:
    ws = example_workspace(tmp_path_factory.mktemp("build"), butido_examples, build_image)
    ws["db"] = ws["base"] / "butido.sqlite"
    (ws["base"] / "airflow-butido.toml").write_text(f'database_url = "sqlite:///{ws["db"]}"\n')
    return ws


def butido_build(ws: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return butido_in_workspace(ws, "build", *args)


def most_at_once(spans) -> int:
    """The most jobs whose [started_at, finished_at] overlap (an end before a start at ties)."""
    events = sorted([(str(a), 1) for a, _ in spans] + [(str(b), -1) for _, b in spans])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def imported_packages(importtime: str) -> set[str]:
    """The top-level packages named in ``python -X importtime`` output."""
    return {
        line.split("|")[-1].strip().split(".")[0]
        for line in importtime.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_build_a_builds_the_whole_graph_and_prints_the_artifacts(workspace):
    done = butido_in_workspace(
        workspace, "build", "a", "-I", "bookworm", env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a-1: built" in done.stdout and "z-26: built" in done.stdout
    assert "29 built, 0 reused, 0 failed, 0 not built" in done.stdout
    created = done.stdout.split("Packages created:\n", 1)[1].split()
    assert len(created) == 29
    assert all(Path(p).is_file() for p in created)
    assert Path(next(p for p in created if p.endswith("/a-1.pkg"))).read_text() == "1\n"
    # recorded in the build database
    engine = sa.create_engine(f"sqlite:///{workspace['db']}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from submits")).scalar() == 1
        assert conn.execute(sa.text("select count(*) from jobs")).scalar() == 29
        spans = conn.execute(sa.text("select started_at, finished_at from jobs")).all()
        phases = [json.loads(p) for (p,) in conn.execute(sa.text("select phase_seconds from jobs"))]
        submit = conn.execute(sa.text("select uuid from submits")).scalar()
    engine.dispose()
    # containers are removed after their jobs' slots, in the background, each removal
    # added to its job's phases; the command waits for all of them before it reports
    assert all("record" in p and p.get("remove", -1) >= 0 for p in phases)
    import docker

    client = docker.from_env()
    try:
        assert (
            client.api.containers(all=True, filters={"label": f"io.butido.submit={submit}"}) == []
        )
    finally:
        client.close()
    # packages build in parallel up to the endpoint's maxjobs (2), never more
    assert "up to 2 at a time" in done.stdout
    assert most_at_once(spans) == 2
    # the packages were built without loading Airflow
    assert {"airflow_butido", "docker", "sqlalchemy"} <= imported_packages(done.stderr)
    assert "airflow" not in imported_packages(done.stderr)


def test_failing_package_fails_the_build_but_not_its_independent_siblings(workspace):
    done = butido_build(workspace, "c", "-I", "bookworm", "-E", "FAIL_H=1", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    outcomes = {p["package"]: p for p in report["packages"]}
    assert outcomes["h 8"]["outcome"] == "failed"
    assert "FAIL_H is set" in outcomes["h 8"]["message"]
    assert outcomes["c 3"]["outcome"] == "not built"
    assert outcomes["c 3"]["message"] == "dependency failed: h 8"
    assert outcomes["g 7"]["outcome"] in ("built", "reused")
    assert outcomes["i 9"]["outcome"] in ("built", "reused")
    assert report["ok"] is False
    assert "h-8: failed" in done.stderr


def test_plan_problems_stop_the_build_before_any_container(workspace):
    done = butido_build(workspace, "s", "-I", "bookworm")
    assert done.returncode == 1
    assert "s has several versions (19.0, 19.1, 19.2, 19.3)" in done.stdout
    tasks = {line.split("] ")[1].split(":")[0] for line in done.stdout.splitlines() if "] " in line}
    assert tasks == {"plan", "report"}  # no package task started


def test_sigterm_stops_the_build_and_removes_its_containers(tmp_path: Path, build_image: str):
    """A cancelled CI job sends SIGTERM: the running builds' containers must not stay."""
    import signal
    import time

    import docker

    from tests.integration.test_jobs import pkg_toml, write_repo

    repo = write_repo(tmp_path / "repo", build_image, {"k": pkg_toml("killme", "1", "sleep 300")})
    (repo / "airflow-butido.toml").write_text(f'database_url = "sqlite:///{tmp_path}/b.sqlite"\n')
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "BUTIDO_PARSE_CACHE": "off"}
    for var in ("AIRFLOW_HOME", "BUTIDO_CONFIG", "BUTIDO_SETTINGS"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [str(VENV_BIN / "butido"), "--repo", str(repo), "build", "-I", "test", "killme", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = docker.from_env()

    def ours() -> list:
        # the low-level list: no inspect per container, which races with a removal
        return client.api.containers(all=True, filters={"label": "io.butido.package=killme"})

    try:
        deadline = time.monotonic() + 120
        while not any(c["State"] == "running" for c in ours()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the build container never ran"
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = ours()
        for container in leftovers:
            client.api.remove_container(container["Id"], force=True)
        client.close()
    assert leftovers == []
    assert proc.returncode != 0, output
    assert "interrupted" in output
