"""``butido endpoint`` maintenance commands on two real engines: the local socket and a
second engine over TLS (``local`` and ``remote``)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_butido.errors import ButidoError, ConfigError
from tests.support import DOCKER_SOCKET, config_toml, make_dirs, write_files
from tests.tls_engine import TlsEngine, make_certificates

pytestmark = [pytest.mark.docker]

MISSING_IMAGE = "airflow-butido/not-here:never"


@pytest.fixture
def repo(tmp_path: Path, build_image: str, tls_engine: TlsEngine) -> Path:
    config = config_toml(
        images=[(build_image, "test"), (MISSING_IMAGE, "missing")],
        endpoints={"local": 1},
        uri=DOCKER_SOCKET,
    )
    remote_config, remote_tls = tls_engine.endpoint_toml("remote", 2)
    return write_files(
        make_dirs(tmp_path / "repo"),
        {"config.toml": config + remote_config, "airflow-butido.toml": remote_tls},
    )


def butido(repo: Path, *argv: str) -> int:
    from airflow_butido.cli import endpoint

    parser = argparse.ArgumentParser(prog="butido")
    parser.add_argument("--repo", type=Path)
    endpoint.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--repo", str(repo), "endpoint", *argv])
    return int(args.func(args))


def as_json(capsys: pytest.CaptureFixture[str], code: int, expected: int = 0) -> list[Any]:
    captured = capsys.readouterr()
    assert code == expected, captured.err
    return json.loads(captured.out)


@pytest.fixture
def engines(docker_client: Any, tls_engine: TlsEngine) -> Iterator[dict[str, Any]]:
    remote = tls_engine.client()
    yield {"local": docker_client, "remote": remote}
    remote.close()


@pytest.fixture
def made(engines: dict[str, Any], build_image: str) -> Iterator[Any]:
    """``made(engine, command, butido=True, name=None)``: a started container, removed after
    the test."""
    created: list[Any] = []
    tag = uuid.uuid4().hex[:8]

    def make(where: str, command: list[str], *, ours: bool = True, name: str | None = None) -> Any:
        labels = {"io.butido.managed": "true", "io.butido.package": f"p{tag}"} if ours else {}
        container = engines[where].containers.create(
            build_image, command, labels=labels, name=name or f"cli-{tag}-{len(created)}"
        )
        created.append(container)
        container.start()
        if command == ["true"]:
            container.wait()
        return container

    yield make
    for container in created:
        with contextlib.suppress(Exception):
            container.remove(force=True)


@contextlib.contextmanager
def terminal(answer: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A terminal on stdin that answers ``answer``."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty(answer + "\n"))
    yield


def test_containers_list_filters_by_image_and_creation_time(
    repo: Path, made: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sleeper = made("remote", ["sleep", "300"])
    exited = made("local", ["true"])

    def listed(*flags: str) -> set[str]:
        rows = as_json(
            capsys, butido(repo, "containers", "list", "--list-stopped", "--json", *flags)
        )
        return {row["name"] for row in rows}

    both = {sleeper.name, exited.name}
    assert both <= listed()
    assert both <= listed("-I", "test", "--newer-than", "1h")
    assert both <= listed("--older-than", "2999-01-01")
    assert not both & listed("-I", "missing")
    assert not both & listed("--older-than", "1h")
    assert not both & listed("--newer-than", "2999-01-01 00:00:00")
    assert sleeper.name not in listed("--older-than", "3weeks")
    rows = as_json(capsys, butido(repo, "local", "containers", "list", "--list-stopped", "--json"))
    assert {row["name"] for row in rows} & both == {exited.name}


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--older-than", "99999999999999years", "--older-than: '99999999999999years' reaches"),
        ("--newer-than", "9999999999999999999999w", "reaches before the year 1"),
        pytest.param("--older-than", "9" * 5000 + "s", "reaches before", id="5000-digits"),
        ("--older-than", "yesterday", "--older-than: 'yesterday' is neither a duration"),
        ("--newer-than", "2024-13-45", "is neither a duration"),
    ],
)
def test_absurd_dates_are_clear_errors(repo: Path, flag: str, value: str, message: str) -> None:
    with pytest.raises(ButidoError, match=message.replace("(", r"\(")):
        butido(repo, "containers", "list", flag, value)


def test_unknown_image_is_a_config_error(repo: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        butido(repo, "containers", "list", "-I", "nope")


def test_containers_stop_stops_running_butido_containers_only_after_confirmation(
    repo: Path, made: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # only on the engine of the tests: the local one may run other builds
    ours = made("remote", ["sleep", "300"])
    foreign = made("remote", ["sleep", "300"], ours=False)
    exited = made("remote", ["true"])
    with pytest.raises(ButidoError, match="needs a terminal \\(or pass --non-interactive\\)"):
        butido(repo, "remote", "containers", "stop", "-t", "0")
    with terminal("n", monkeypatch):
        assert butido(repo, "remote", "containers", "stop", "-t", "0") == 1
    ours.reload()
    assert ours.status == "running"
    capsys.readouterr()
    assert butido(repo, "remote", "containers", "stop", "-t", "0", "--non-interactive") == 0
    out = capsys.readouterr().out
    for c in (ours, foreign, exited):
        c.reload()
    assert ours.status == "exited"
    assert foreign.status == "running"
    assert f"remote: stop {ours.id[:12]}" in out
    assert exited.id[:12] not in out  # butido's stop picked exactly these


def test_containers_prune_honours_the_filters(
    repo: Path, made: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exited = made("local", ["true"])
    remote_exited = made("remote", ["true"])
    assert (
        butido(repo, "remote", "containers", "prune", "--older-than", "1h", "--non-interactive")
        == 0
    )
    assert "no containers to remove" in capsys.readouterr().out
    with terminal("yes", monkeypatch):
        assert butido(repo, "remote", "containers", "prune", "-I", "test") == 0
    with pytest.raises(Exception, match="No such container|404"):
        remote_exited.reload()
    exited.reload()  # on the other endpoint: still there


def test_containers_top_has_one_row_per_process_with_ps_columns(
    repo: Path, made: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    local = made("local", ["sleep", "301"])
    remote = made("remote", ["sleep", "302"])
    rows = as_json(capsys, butido(repo, "containers", "top", "--json"))
    mine = {r["container"]: r for r in rows if r["container"] in (local.id[:12], remote.id[:12])}
    assert mine[local.id[:12]]["endpoint"] == "local"
    assert mine[local.id[:12]]["CMD"] == "sleep 301"
    assert mine[remote.id[:12]]["CMD"] == "sleep 302"
    assert {"PID", "UID", "CMD"} <= set(mine[remote.id[:12]])
    assert len(as_json(capsys, butido(repo, "containers", "top", "--limit", "1", "--json"))) >= 1


def test_one_container_is_found_on_its_endpoint(
    repo: Path, made: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = made("remote", ["sleep", "300"])
    info = as_json(capsys, butido(repo, "container", remote.id[:12], "inspect"))
    assert isinstance(info, dict)  # one JSON object, keys sorted
    assert info["endpoint"] == "remote" and info["Id"] == remote.id
    rows = as_json(capsys, butido(repo, "container", remote.name, "top", "--json"))
    assert [r["CMD"] for r in rows] == ["sleep 300"]

    script = "echo out; echo err >&2; exit 3"
    code = butido(repo, "container", remote.id, "exec", "--non-interactive", "sh", "-c", script)
    assert code == 3
    said = capsys.readouterr()
    assert said.out.endswith("out\n")
    assert said.err.endswith("err\n")

    with terminal("n", monkeypatch):  # butido killed even after a "no"
        assert butido(repo, "container", remote.id, "kill") == 1
    remote.reload()
    assert remote.status == "running"
    assert butido(repo, "container", remote.id, "stop", "-t", "0", "-y") == 0
    remote.reload()
    assert remote.status == "exited"
    assert butido(repo, "container", remote.id, "start", "--non-interactive") == 0
    remote.reload()
    assert remote.status == "running"
    assert butido(repo, "container", remote.id, "kill", "SIGTERM", "--non-interactive") == 0
    assert butido(repo, "container", remote.id, "delete", "-f", "--non-interactive") == 0
    with pytest.raises(ButidoError, match="no container"):
        butido(repo, "container", remote.id, "inspect")


def test_a_container_name_on_both_endpoints_needs_the_endpoint_named(
    repo: Path, made: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-twin-{uuid.uuid4().hex[:8]}"
    made("local", ["true"], name=name)
    twin = made("remote", ["true"], name=name)
    with pytest.raises(ButidoError, match=r"on several endpoints \(local, remote\)"):
        butido(repo, "container", name, "inspect")
    info = as_json(capsys, butido(repo, "remote", "container", name, "inspect"))
    assert info["Id"] == twin.id


def test_images_list_and_verify_present(
    repo: Path, build_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = as_json(capsys, butido(repo, "images", "list", "--json"))
    for endpoint in ("local", "remote"):
        assert any(r["endpoint"] == endpoint and build_image in r["tags"] for r in rows)
    rows = as_json(capsys, butido(repo, "images", "verify-present", "--json"), expected=1)
    assert sorted((r["endpoint"], r["image"], r["present"]) for r in rows) == sorted(
        [
            ("local", MISSING_IMAGE, "missing"),
            ("local", build_image, "found"),
            ("remote", MISSING_IMAGE, "missing"),
            ("remote", build_image, "found"),
        ]
    )


def test_ping_with_a_wrong_client_certificate_names_the_endpoint_and_the_file(
    repo: Path, tls_engine: TlsEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = make_certificates(tmp_path / "stranger", ca_name="stranger")
    settings = repo / "airflow-butido.toml"
    settings.write_text(
        settings.read_text()
        .replace(str(tls_engine.client_cert), str(stranger["client_cert"]))
        .replace(str(tls_engine.client_key), str(stranger["client_key"]))
    )
    assert butido(repo, "ping") == 1
    captured = capsys.readouterr()
    assert "local: pong in" in captured.out
    assert (
        f"remote: endpoint remote (http://127.0.0.1:{tls_engine.port}) refused the client "
        f"certificate {stranger['client_cert']}"
    ) in captured.err
