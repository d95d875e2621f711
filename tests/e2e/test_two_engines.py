"""`butido build` of the example repository on two Docker engines: the local socket
(``maxjobs = 1``) and a second engine over TLS (``maxjobs = 2``).

``maxjobs`` is checked through each engine's own event stream (containers running between
their ``start`` and ``die`` events), not through the build database. Stopping the TLS
engine mid-run sends its job to the local engine as an infrastructure retry.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import DOCKER_SOCKET
from tests.tls_engine import TlsEngine, launch

pytestmark = [pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MANAGED = {"label": ["io.butido.managed=true"], "type": ["container"]}
# Builds wait this many seconds when BUILD_PAUSE is set, so runs overlap and a test can stop
# an engine while a job runs on it.
PAUSE = 'sleep "${BUILD_PAUSE:-0}"\n'


def workspace(base: Path, engine: TlsEngine, build_image: str) -> Path:
    """A copy of examples/ whose config lists both endpoints."""
    shutil.copytree(ROOT / "examples" / "repo", base / "repo")
    shutil.copytree(ROOT / "examples" / "sources", base / "sources")
    repo = base / "repo"
    root_pkg = repo / "pkg.toml"
    text = root_pkg.read_text()
    text = text.replace('    {{phase "unpack"}}\n', '    {{phase "unpack"}}\n    ' + PAUSE, 1)
    root_pkg.write_text(text)
    config = repo / "config.toml"
    text = config.read_text()
    text = re.sub(r'uri\s*=\s*"/var/run/docker.sock"', f'uri = "{_socket_path()}"', text)
    text = re.sub(r"maxjobs\s*=\s*2", "maxjobs = 1", text)
    text = text.replace('allowed_env     = ["', 'allowed_env     = ["BUILD_PAUSE", "')
    text = text.replace('"airflow-butido/debian:bookworm"', f'"{build_image}"')
    remote_config, remote_tls = engine.endpoint_toml("remote", 2)
    config.write_text(text + remote_config)
    (repo / "airflow-butido.toml").write_text(
        f'database_url = "sqlite:///{base / "butido.sqlite"}"\n\n'
        "[airflow]\nretries = 2\nretry_delay = 1\n" + remote_tls
    )
    return repo


def _socket_path() -> str:
    return DOCKER_SOCKET.removeprefix("unix://")


def butido(repo: Path, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "BUTIDO_PARSE_CACHE": "off",
        "XDG_CACHE_HOME": str(repo.parent / "cache"),
        # the CA variables these machines set: the endpoint's own CA must still win
        "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
        "CURL_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
    }
    for var in ("AIRFLOW_HOME", "BUTIDO_CONFIG", "BUTIDO_SETTINGS"):
        env.pop(var, None)
    return subprocess.Popen(
        [str(VENV_BIN / "butido"), "--repo", str(repo), "build", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"butido build did not finish:\n{output}")
    return output


def peak_running(events: list[dict[str, Any]]) -> int:
    """The most containers running at once, from one engine's start / die events."""
    running: set[str] = set()
    peak = 0
    for event in sorted(events, key=lambda e: e["timeNano"]):
        if event["Action"] == "start":
            running.add(event["id"])
        elif event["Action"] == "die":
            running.discard(event["id"])
        peak = max(peak, len(running))
    return peak


def engine_events(client: Any, since: float, until: float, submits: set[str]) -> list[dict]:
    """The container events of this test's submits (other builds may share the engine)."""
    return [
        e
        for e in client.events(since=since, until=until, filters=MANAGED, decode=True)
        if e.get("Actor", {}).get("Attributes", {}).get("io.butido.submit") in submits
    ]


def recorded(db: Path, query: str) -> list[Any]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query)).all())
    finally:
        engine.dispose()


@pytest.fixture
def clients(tls_engine: TlsEngine, docker_client: Any) -> Iterator[dict[str, Any]]:
    remote = tls_engine.client()
    yield {"local": docker_client, "remote": remote}
    remote.close()


def leftovers(clients: dict[str, Any], submits: set[str]) -> dict[str, list[str]]:
    """Containers of this test's submits still on either engine."""
    found: dict[str, list[str]] = {}
    for name, client in clients.items():
        found[name] = [
            c.name
            for c in client.containers.list(all=True, filters={"label": "io.butido.managed=true"})
            if c.labels.get("io.butido.submit") in submits
        ]
    return {k: v for k, v in found.items() if v}


def test_two_builds_share_both_engines_within_maxjobs(
    tmp_path: Path, tls_engine: TlsEngine, build_image: str, clients: dict[str, Any]
) -> None:
    repo = workspace(tmp_path, tls_engine, build_image)
    since = time.time() - 1
    # Two builds at once (a different environment, so neither reuses the other's packages):
    # up to four jobs want to run at the same time, three slots exist.
    runs = [butido(repo, "greet-suite", "-I", "deb12", "-E", f"BUILD_PAUSE={p}") for p in (2, 3)]
    outputs = [finish(proc) for proc in runs]
    until = time.time() + 1
    for proc, output in zip(runs, outputs, strict=True):
        assert proc.returncode == 0, output
        assert "4 built, 0 reused, 0 failed, 0 not built" in output, output
    db = tmp_path / "butido.sqlite"
    submits = {str(uuid.UUID(row[0])) for row in recorded(db, "select uuid from submits")}
    assert len(submits) == 2
    events = {name: engine_events(c, since, until, submits) for name, c in clients.items()}
    starts = {name: sum(e["Action"] == "start" for e in ev) for name, ev in events.items()}
    assert starts["local"] >= 1 and starts["remote"] >= 1, starts
    assert starts["local"] + starts["remote"] == 8, starts
    assert peak_running(events["local"]) == 1
    assert 1 <= peak_running(events["remote"]) <= 2
    destroyed = {
        name: {e["id"] for e in ev if e["Action"] == "destroy"} for name, ev in events.items()
    }
    created = {
        name: {e["id"] for e in ev if e["Action"] == "create"} for name, ev in events.items()
    }
    assert created == destroyed
    assert leftovers(clients, submits) == {}
    used = dict(
        recorded(
            db,
            "select e.name, count(*) from jobs j join endpoints e on e.id = j.endpoint_id "
            "group by e.name",
        )
    )
    assert used.keys() == {"local", "remote"} and sum(used.values()) == 8


def test_stopping_the_tls_engine_mid_run_retries_its_job_on_the_local_engine(
    tmp_path: Path, tls_engine: TlsEngine, build_image: str, clients: dict[str, Any]
) -> None:
    repo = workspace(tmp_path, tls_engine, build_image)
    stopped = threading.Event()

    def stop_on_first_start() -> None:
        watcher = tls_engine.client()
        try:
            for event in watcher.events(filters=MANAGED, decode=True):
                if event["Action"] == "start":
                    time.sleep(1)  # the script runs (it pauses 12 s)
                    tls_engine.stop()
                    stopped.set()
                    return
        except Exception:  # the stream breaks when the engine stops
            return
        finally:
            watcher.close()

    thread = threading.Thread(target=stop_on_first_start, daemon=True)
    thread.start()
    try:
        output = finish(butido(repo, "greet-suite", "-I", "deb12", "-E", "BUILD_PAUSE=12"))
        assert stopped.is_set(), output
        retried = [line for line in output.splitlines() if ": up_for_retry: " in line]
        assert retried and all("infrastructure failure" in line for line in retried), output
        assert "4 built, 0 reused, 0 failed, 0 not built" in output, output
        db = tmp_path / "butido.sqlite"
        jobs = recorded(
            db,
            "select p.name, e.name, j.state from jobs j join endpoints e "
            "on e.id = j.endpoint_id join packages p on p.id = j.package_id",
        )
        assert any(ep == "remote" for _, ep, _ in jobs), jobs
        submits = {str(uuid.UUID(row[0])) for row in recorded(db, "select uuid from submits")}
        assert leftovers({"local": clients["local"]}, submits) == {}
    finally:
        thread.join(timeout=60)
        if not tls_engine.running():
            launch(tls_engine)  # later tests of the session use the engine again
        restarted = tls_engine.client()
        try:
            for c in restarted.containers.list(
                all=True, filters={"label": "io.butido.managed=true"}
            ):
                c.remove(force=True)
        finally:
            restarted.close()
