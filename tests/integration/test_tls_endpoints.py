"""A remote endpoint over TLS (a second Docker engine on this machine): the configured CA
wins over the environment, bad certificates are refused by name, version checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.endpoints import connect, ping, usable_endpoints, version_problem
from airflow_butido.errors import InfrastructureError
from airflow_butido.recipes.config import (
    Config,
    DockerConfig,
    EndpointConfig,
    ImageSpec,
    TlsConfig,
)
from tests.support import DOCKER_SOCKET
from tests.tls_engine import TlsEngine, make_certificates

pytestmark = [pytest.mark.docker]

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def remote(engine: TlsEngine, **tls: Path | None) -> EndpointConfig:
    files: dict[str, Path | None] = {
        "ca_cert": engine.ca_cert,
        "client_cert": engine.client_cert,
        "client_key": engine.client_key,
        **tls,
    }
    return EndpointConfig(
        "remote", f"http://127.0.0.1:{engine.port}", "http", 2, timeout=10, tls=TlsConfig(**files)
    )


def config(image: str, *endpoints: EndpointConfig, **docker: tuple[str, ...]) -> Config:
    return Config(
        docker=DockerConfig(images=(ImageSpec(image, "test"),), endpoints=endpoints, **docker)
    )


@pytest.fixture
def ca_bundle_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA variables company machines (and these machines) set, pointing elsewhere."""
    bundle = SYSTEM_BUNDLE if Path(SYSTEM_BUNDLE).is_file() else __file__
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    monkeypatch.setenv("CURL_CA_BUNDLE", bundle)


def test_configured_ca_wins_over_requests_and_curl_ca_bundle(
    tls_engine: TlsEngine, build_image: str, ca_bundle_env: None
) -> None:
    endpoint = remote(tls_engine)
    api = connect(endpoint)
    try:
        assert ping(endpoint, api) < 5
        # a streaming call too (the build's log and archives take that path)
        assert any(build_image in (i.get("RepoTags") or ()) for i in api.images())
    finally:
        api.close()
    warnings: list[str] = []
    usable = usable_endpoints(config(build_image, endpoint), "test", warn=warnings.append)
    try:
        assert [c.endpoint.name for c in usable] == ["remote"]
        assert warnings == []
    finally:
        for candidate in usable:
            candidate.api.close()


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_each_ca_variable_alone_is_overridden_too(
    tls_engine: TlsEngine, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv(variable, SYSTEM_BUNDLE if Path(SYSTEM_BUNDLE).is_file() else __file__)
    endpoint = remote(tls_engine)
    api = connect(endpoint)
    try:
        assert ping(endpoint, api) < 5
    finally:
        api.close()


def test_wrong_client_certificate_is_refused_naming_endpoint_and_file(
    tls_engine: TlsEngine, tmp_path: Path, build_image: str, ca_bundle_env: None
) -> None:
    stranger = make_certificates(tmp_path / "stranger", ca_name="stranger")
    endpoint = remote(
        tls_engine, client_cert=stranger["client_cert"], client_key=stranger["client_key"]
    )
    with pytest.raises(InfrastructureError) as info:
        connect(endpoint)
    message = str(info.value)
    assert message.startswith(f"endpoint remote (http://127.0.0.1:{tls_engine.port}) refused")
    assert f"client certificate {stranger['client_cert']}" in message
    assert "endpoints.remote.tls.client_cert" in message
    # in a build the endpoint is skipped with that message and the local socket serves
    local = EndpointConfig("local", DOCKER_SOCKET, "socket", 1)
    warnings: list[str] = []
    usable = usable_endpoints(config(build_image, endpoint, local), "test", warn=warnings.append)
    try:
        assert [c.endpoint.name for c in usable] == ["local"]
    finally:
        for candidate in usable:
            candidate.api.close()
    assert len(warnings) == 1 and str(stranger["client_cert"]) in warnings[0]


def test_untrusted_server_certificate_names_the_ca_file(
    tls_engine: TlsEngine, tmp_path: Path, ca_bundle_env: None
) -> None:
    stranger = make_certificates(tmp_path / "stranger", ca_name="stranger")
    endpoint = remote(tls_engine, ca_cert=stranger["ca_cert"])
    with pytest.raises(InfrastructureError, match="server certificate is not trusted") as info:
        connect(endpoint)
    assert str(stranger["ca_cert"]) in str(info.value)
    assert "endpoints.remote.tls.ca_cert" in str(info.value)


def test_mismatched_key_names_certificate_and_key(tls_engine: TlsEngine, tmp_path: Path) -> None:
    stranger = make_certificates(tmp_path / "stranger", ca_name="stranger")
    endpoint = remote(tls_engine, client_key=stranger["client_key"])
    with pytest.raises(InfrastructureError, match="do not belong together") as info:
        connect(endpoint)
    assert str(tls_engine.client_cert) in str(info.value)
    assert str(stranger["client_key"]) in str(info.value)


def test_docker_versions_exclude_an_endpoint_with_the_found_and_allowed_versions(
    tls_engine: TlsEngine, build_image: str, ca_bundle_env: None
) -> None:
    endpoint = remote(tls_engine)
    api = connect(endpoint)
    try:
        found = api.version()
    finally:
        api.close()
    local = EndpointConfig("local", DOCKER_SOCKET, "socket", 1)
    major_minor = ".".join(found["Version"].split(".")[:2])

    allowed = config(build_image, endpoint, local, docker_versions=(major_minor, "99.0"))
    usable = usable_endpoints(allowed, "test")
    try:
        assert sorted(c.endpoint.name for c in usable) == ["local", "remote"]
    finally:
        for candidate in usable:
            candidate.api.close()

    warnings: list[str] = []
    refused = config(build_image, endpoint, local, docker_api_versions=("1.0", "1.2"))
    with pytest.raises(InfrastructureError, match="no usable Docker endpoint"):
        usable_endpoints(refused, "test", warn=warnings.append)
    assert sorted(warnings) == sorted(
        f"endpoint {name} runs Docker API version {found['ApiVersion']}, "
        "config.toml docker.docker_api_versions allows 1.0, 1.2: skipped"
        for name in ("local", "remote")
    )
    api = connect(endpoint)
    try:
        assert version_problem(config(build_image, endpoint), endpoint, api) is None
    finally:
        api.close()
