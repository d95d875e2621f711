"""``docker_versions`` / ``docker_api_versions`` matching, and TLS failures named by file."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from airflow_butido.endpoints import unreachable_message, version_allowed, version_problem
from airflow_butido.recipes.config import (
    Config,
    DockerConfig,
    EndpointConfig,
    TlsConfig,
)


@pytest.mark.parametrize(
    ("found", "allowed", "ok"),
    [
        ("20.10.24+dfsg1", ["20.10.24+dfsg1"], True),
        ("20.10.24+dfsg1", ["20.10"], True),
        ("20.10.24+dfsg1", ["20"], True),
        ("20.10.24+dfsg1", ["20.10.24"], True),
        ("20.10.24+dfsg1", ["20.1"], False),
        ("20.10.24+dfsg1", ["24.0", "25"], False),
        ("1.41", ["1.41"], True),
        ("1.41", ["1.4"], False),
        ("1.41", ["1.40", "1.41"], True),
        ("24.0.7-rc1", ["24.0.7"], True),
        ("1.41", [], False),
        ("", ["1.41"], False),
    ],
)
def test_version_allowed(found: str, allowed: list[str], ok: bool) -> None:
    assert version_allowed(found, allowed) is ok


class FakeApi:
    def __init__(self) -> None:
        self.asked = 0

    def version(self, api_version: bool = True) -> dict[str, str]:
        self.asked += 1
        return {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41"}


def config(**versions: tuple[str, ...]) -> Config:
    return Config(docker=DockerConfig(**versions))


ENDPOINT = EndpointConfig("old", "/var/run/docker.sock", "socket", 1)


def test_no_version_lists_ask_nothing() -> None:
    api = FakeApi()
    assert version_problem(config(), ENDPOINT, api) is None
    assert api.asked == 0


@pytest.mark.parametrize(
    ("versions", "problem"),
    [
        ({"docker_versions": ("20.10",), "docker_api_versions": ("1.41",)}, None),
        (
            {"docker_versions": ("19.03", "24.0")},
            "endpoint old runs Docker version 20.10.24+dfsg1, "
            "config.toml docker.docker_versions allows 19.03, 24.0",
        ),
        (
            {"docker_versions": ("20.10",), "docker_api_versions": ("1.43",)},
            "endpoint old runs Docker API version 1.41, "
            "config.toml docker.docker_api_versions allows 1.43",
        ),
        (
            {"docker_api_versions": ()},
            "endpoint old runs Docker API version 1.41, "
            "config.toml docker.docker_api_versions allows none",
        ),
    ],
)
def test_version_problem_names_found_and_allowed(
    versions: dict[str, tuple[str, ...]], problem: str | None
) -> None:
    assert version_problem(config(**versions), ENDPOINT, FakeApi()) == problem


TLS = TlsConfig(Path("/c/ca.pem"), Path("/c/cert.pem"), Path("/c/key.pem"))
REMOTE = EndpointConfig("remote", "http://build:2376", "http", 1, tls=TLS)


BAD_CERT = "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate"
UNTRUSTED = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
MISMATCH = "[X509: KEY_VALUES_MISMATCH] key values mismatch"


@pytest.mark.parametrize(
    ("reason", "names"),
    [
        (BAD_CERT, ["refused the client certificate /c/cert.pem", "tls.client_cert"]),
        (UNTRUSTED, ["not trusted by /c/ca.pem", "tls.ca_cert"]),
        (MISMATCH, ["/c/cert.pem and key /c/key.pem"]),
    ],
)
def test_tls_failures_name_the_endpoint_and_the_file(reason: str, names: list[str]) -> None:
    wrapped = RuntimeError("Error while fetching server API version")
    wrapped.__cause__ = ssl.SSLError(1, reason)
    message = unreachable_message(REMOTE, wrapped)
    assert message.startswith("endpoint remote (http://build:2376)")
    for name in names:
        assert name in message


def test_other_failures_say_the_endpoint_does_not_answer() -> None:
    message = unreachable_message(REMOTE, ConnectionRefusedError(111, "Connection refused"))
    assert message == (
        "endpoint remote (http://build:2376) does not answer: [Errno 111] Connection refused"
    )
