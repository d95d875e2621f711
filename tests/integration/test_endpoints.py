"""Endpoints: URLs and TLS, health and image checks, slot leasing, ``butido endpoint``."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import time
import uuid
from pathlib import Path

import pytest

from airflow_butido.endpoints import (
    DatabaseSlots,
    LocalSlots,
    base_url,
    check_endpoints,
    lease_endpoint,
    ping,
    tls_config,
    usable_endpoints,
)
from airflow_butido.errors import ConfigError, InfrastructureError
from airflow_butido.recipes.config import (
    Config,
    DockerConfig,
    EndpointConfig,
    ImageSpec,
    TlsConfig,
)
from tests.support import DOCKER_SOCKET, config_toml, make_dirs, write_files

GONE = EndpointConfig("gone", "/nonexistent/docker.sock", "socket", 1, timeout=2)


def local(name: str = "local", maxjobs: int = 2) -> EndpointConfig:
    return EndpointConfig(name, DOCKER_SOCKET, "socket", maxjobs)


def config_with(image: str, *endpoints: EndpointConfig, extra_images: tuple = ()) -> Config:
    images = (ImageSpec(image, "test"), *extra_images)
    return Config(docker=DockerConfig(images=images, endpoints=endpoints))


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        (EndpointConfig("s", "/var/run/docker.sock", "socket", 1), "unix:///var/run/docker.sock"),
        (EndpointConfig("u", "unix:///run/d.sock", "socket", 1), "unix:///run/d.sock"),
        (EndpointConfig("h", "http://10.0.0.1:2375", "http", 1), "http://10.0.0.1:2375"),
        (EndpointConfig("t", "tcp://10.0.0.1:2376", "http", 1), "tcp://10.0.0.1:2376"),
        (
            EndpointConfig("tls", "http://10.0.0.1:2376", "http", 1, tls=TlsConfig(verify=True)),
            "https://10.0.0.1:2376",
        ),
    ],
)
def test_base_url_for_every_endpoint_form(endpoint: EndpointConfig, url: str) -> None:
    assert base_url(endpoint) == url


def test_tls_config_carries_client_certificate_and_ca(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    tls = TlsConfig(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem", True)
    config = tls_config(EndpointConfig("r", "tcp://h:2376", "http", 1, tls=tls))
    assert config.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert config.ca_cert == str(tmp_path / "ca.pem")
    assert config.verify is True
    assert tls_config(local()) is None


def test_tls_config_needs_key_with_certificate(tmp_path: Path) -> None:
    tls = TlsConfig(None, tmp_path / "cert.pem", None, True)
    with pytest.raises(ConfigError, match="client_cert and client_key go together"):
        tls_config(EndpointConfig("r", "tcp://h:2376", "http", 1, tls=tls))


@pytest.mark.docker
def test_ping_answers_on_the_local_socket_and_fails_on_a_missing_one(docker_client) -> None:
    assert ping(local()) >= 0
    with pytest.raises(InfrastructureError, match="gone .* does not answer"):
        ping(GONE)


@pytest.mark.docker
def test_usable_endpoints_skip_unreachable_ones_with_a_warning(build_image: str) -> None:
    warnings: list[str] = []
    usable = usable_endpoints(config_with(build_image, GONE, local()), "test", warn=warnings.append)
    assert [c.endpoint.name for c in usable] == ["local"]
    assert len(warnings) == 1
    assert warnings[0].startswith("endpoint gone skipped")
    for c in usable:
        c.api.close()


@pytest.mark.docker
def test_a_job_checks_an_endpoint_and_reads_the_image_id_in_two_requests(
    build_image: str, monkeypatch
) -> None:
    """The version query (which the client makes anyway) proves the engine answers and one
    image inspection both proves the image is there and names it for the build key."""
    import docker

    from airflow_butido import endpoints
    from airflow_butido.container import local_image_digest
    from airflow_butido.jobs import DockerRuntime

    asked: list[str] = []
    real_send = docker.APIClient.send

    def counting_send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(request.path_url.split("?")[0].rsplit("/", 1)[-1])
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(docker.APIClient, "send", counting_send)
    config = config_with(build_image, local())
    candidates, digest = DockerRuntime().endpoints(config, "test", None)
    for c in candidates:
        c.api.close()
    assert asked == ["version", "json"], asked  # GET /version, GET /images/<image>/json
    assert [c.endpoint.name for c in candidates] == ["local"]
    assert digest == local_image_digest(build_image)
    assert endpoints.image_id(candidates[0].api, "airflow-butido/not-built:0") is None


@pytest.mark.docker
def test_endpoint_without_the_image_is_not_used(build_image: str) -> None:
    missing = ImageSpec("airflow-butido/not-built:0", "missing")
    config = config_with(build_image, local(), extra_images=(missing,))
    with pytest.raises(InfrastructureError, match="image airflow-butido/not-built:0 not present"):
        usable_endpoints(config, "missing", warn=lambda _: None)
    assert check_endpoints(config, "missing") != []
    assert check_endpoints(config, "test") == []


def test_image_not_in_docker_images_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not configured in docker.images"):
        usable_endpoints(config_with("some/image:1", local()), "other/image:2")


def test_local_slots_pick_the_least_utilised_endpoint_with_a_free_slot() -> None:
    slots = LocalSlots()
    candidates = [("a", 2), ("b", 1)]
    assert [slots.acquire(f"j{i}", candidates) for i in range(4)] == ["a", "b", "a", None]
    assert slots.acquire("j0", candidates) == "a"  # a job keeps its lease
    slots.release("j1")
    assert slots.acquire("j4", candidates) == "b"


class _FakeApi:
    def close(self) -> None:
        pass


def test_lease_endpoint_waits_with_backoff_then_gives_up() -> None:
    from airflow_butido.endpoints import Candidate

    slots = LocalSlots()
    candidate = Candidate(local("only", 1), _FakeApi())
    slots.acquire("other-job", [("only", 1)])
    sleeps: list[float] = []
    with (
        pytest.raises(InfrastructureError, match="all endpoints full"),
        lease_endpoint(slots, "j", [candidate], max_wait=0, sleep=sleeps.append),
    ):
        pass
    slots.release("other-job")
    with lease_endpoint(slots, "j", [candidate], sleep=sleeps.append) as chosen:
        assert chosen is candidate
        assert slots.in_use() == {"only": 1}
    assert slots.in_use() == {}


def test_a_slot_released_in_the_process_wakes_a_waiting_job_at_once() -> None:
    import threading

    from airflow_butido.endpoints import Candidate

    slots = LocalSlots()
    candidate = Candidate(local("only", 1), _FakeApi())
    holding, released = threading.Event(), threading.Event()
    got: list[float] = []

    def first() -> None:
        with lease_endpoint(slots, "a", [candidate]):
            holding.set()
            time.sleep(0.9)  # the waiter's backoff: tries at 0, ~0.25, ~0.75, ~1.75 s
        released.set()

    def second() -> None:
        holding.wait(5)
        with lease_endpoint(slots, "b", [candidate]):
            got.append(time.monotonic())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    released.wait(5)
    freed = time.monotonic()
    for thread in threads:
        thread.join(10)
    assert got and got[0] - freed < 0.3  # not at its next backoff try, about 0.85 s later


def test_lease_endpoint_retries_until_a_slot_frees() -> None:
    from airflow_butido.endpoints import Candidate

    slots = LocalSlots()
    candidate = Candidate(local("only", 1), _FakeApi())
    slots.acquire("other-job", [("only", 1)])
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            slots.release("other-job")

    with lease_endpoint(slots, "j", [candidate], sleep=sleep):
        pass
    assert len(sleeps) == 3
    assert sleeps[1] > sleeps[0]  # backoff grows


@pytest.mark.postgres
def test_database_slots_hold_maxjobs_across_engines(pg_url: str) -> None:
    from airflow_butido.db.engine import make_engine
    from airflow_butido.db.migrate import upgrade

    first, second = make_engine(pg_url), make_engine(pg_url)
    upgrade(first)
    candidates = [("one", 1), ("two", 1)]
    a, b = DatabaseSlots(first), DatabaseSlots(second)
    assert a.acquire("job-1", candidates) == "one"
    assert b.acquire("job-2", candidates) == "two"
    assert b.acquire("job-3", candidates) is None
    a.renew("job-1")
    a.release("job-1")
    assert b.acquire("job-3", candidates) == "one"
    first.dispose()
    second.dispose()


# -- butido endpoint --------------------------------------------------------------------


def write_config(root: Path, image: str) -> Path:
    config = config_toml(images=[(image, "test")], endpoints={"local": 1}, uri=DOCKER_SOCKET)
    return write_files(make_dirs(root), {"config.toml": config})


def butido(repo: Path, *argv: str) -> int:
    from airflow_butido.cli import endpoint

    parser = argparse.ArgumentParser(prog="butido")
    parser.add_argument("--repo", type=Path)
    endpoint.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--repo", str(repo), "endpoint", *argv])
    return args.func(args)


@pytest.mark.docker
def test_cli_ping_and_stats(tmp_path: Path, build_image: str, capsys) -> None:
    repo = write_config(tmp_path / "repo", build_image)
    assert butido(repo, "local", "ping") == 0
    assert "local: pong in" in capsys.readouterr().out
    assert butido(repo, "stats", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["endpoint"] == "local"
    assert int(row["cores"]) >= 1
    with pytest.raises(ConfigError, match="unknown endpoint 'nope'"):
        butido(repo, "nope", "ping")


@pytest.mark.docker
def test_cli_prune_removes_only_exited_butido_containers(
    tmp_path: Path, build_image: str, docker_client, capsys
) -> None:
    repo = write_config(tmp_path / "repo", build_image)
    tag = uuid.uuid4().hex[:8]
    ours = docker_client.containers.create(
        build_image,
        ["true"],
        name=f"butido-prune-{tag}",
        labels={"io.butido.managed": "true", "io.butido.package": "p"},
    )
    foreign = docker_client.containers.create(build_image, ["true"], name=f"other-{tag}")
    running = docker_client.containers.create(
        build_image,
        ["sleep", "300"],
        name=f"butido-running-{tag}",
        labels={"io.butido.managed": "true"},
    )
    try:
        ours.start()
        ours.wait()
        running.start()
        assert butido(repo, "containers", "list", "--list-stopped", "--json") == 0
        listed = {row["name"] for row in json.loads(capsys.readouterr().out)}
        assert {f"butido-prune-{tag}", f"butido-running-{tag}"} <= listed
        assert f"other-{tag}" not in listed
        assert butido(repo, "containers", "prune", "--yes") == 0
        remaining = {c.name for c in docker_client.containers.list(all=True)}
        assert f"butido-prune-{tag}" not in remaining
        assert f"other-{tag}" in remaining
        assert f"butido-running-{tag}" in remaining
    finally:
        for c in (ours, foreign, running):
            with contextlib.suppress(Exception):  # already removed by prune
                c.remove(force=True)


@pytest.mark.docker
def test_cli_containers_list_says_by_its_exit_status_when_an_endpoint_is_missing(
    tmp_path: Path, build_image: str, capsys
) -> None:
    repo = write_config(tmp_path / "repo", build_image)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = repo / "config.toml"
    config.write_text(
        config.read_text()
        + "\n[docker.endpoints.gone]\n"
        + f'uri = "http://127.0.0.1:{port}"\nendpoint_type = "http"\nmaxjobs = 1\ntimeout = 2\n'
    )
    assert butido(repo, "containers", "list", "--json") == 1
    captured = capsys.readouterr()
    assert isinstance(json.loads(captured.out), list)  # the reachable endpoint's rows
    assert "gone:" in captured.err
    assert butido(repo, "local", "containers", "list", "--json") == 0


@pytest.mark.docker
def test_missing_tls_file_names_the_setting_and_skips_only_that_endpoint(
    tmp_path: Path, build_image: str
) -> None:
    (tmp_path / "cert.pem").write_text("x")
    tls = TlsConfig(None, tmp_path / "cert.pem", tmp_path / "certs" / "key.pem", True)
    remote = EndpointConfig("remote", "tcp://127.0.0.1:2376", "http", 1, tls=tls)
    with pytest.raises(ConfigError) as info:
        tls_config(remote)
    assert str(info.value) == (
        "airflow-butido.toml: endpoints.remote.tls.client_key: "
        f"{tmp_path / 'certs' / 'key.pem'} does not exist"
    )
    warnings: list[str] = []
    usable = usable_endpoints(
        config_with(build_image, remote, local()), "test", warn=warnings.append
    )
    try:
        assert [c.endpoint.name for c in usable] == ["local"]
    finally:
        for candidate in usable:
            candidate.api.close()
    assert any("remote skipped" in w and "tls.client_key" in w for w in warnings)
