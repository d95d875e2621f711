"""Docker endpoints: clients, health checks, and choosing where a job runs.

butido counted running jobs per process; here ``maxjobs`` holds across every task process
and every DAG run, because a job takes a *slot lease* in the build database before it
creates its container and gives it back afterwards (``airflow_butido.db.leases``). The
least-utilised endpoint with a free slot wins; while all are full the job waits with
backoff. Endpoints that do not answer, run a Docker version ``docker.docker_versions`` /
``docker_api_versions`` do not allow, or lack the build image, are passed over with a
warning. An endpoint's TLS settings win over ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airflow_butido.errors import ConfigError, InfrastructureError
from airflow_butido.heartbeat import heartbeat
from airflow_butido.recipes.config import Config, EndpointConfig

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

DEFAULT_API_TIMEOUT = 120  # seconds per Docker API call (streams have none)
HEARTBEAT_SECONDS = 4.0  # slot leases live 20 s (db.leases.DEFAULT_TTL_SECONDS) unless renewed
WAIT_REPORT_SECONDS = 15.0  # a job waiting for a slot says for what, this often
REPAIRED_LATELY_SECONDS = 1.0  # a slot request repairs dead jobs unless this process just did


def base_url(endpoint: EndpointConfig) -> str:
    """The URL docker-py takes: ``unix:///path`` for a socket path, http/tcp/https as is."""
    uri = endpoint.uri
    if endpoint.endpoint_type == "socket" or uri.startswith("/"):
        return uri if uri.startswith("unix://") else f"unix://{uri}"
    if endpoint.tls is not None and uri.startswith("http://"):
        return "https://" + uri[len("http://") :]
    return uri


def tls_config(endpoint: EndpointConfig) -> Any:
    """A ``docker.tls.TLSConfig`` from the endpoint's TLS extension, or None."""
    tls = endpoint.tls
    if tls is None:
        return None
    from docker.tls import TLSConfig

    at = f"airflow-butido.toml: endpoints.{endpoint.name}.tls"
    if bool(tls.client_cert) != bool(tls.client_key):
        raise ConfigError(f"{at}: client_cert and client_key go together")
    for key in ("ca_cert", "client_cert", "client_key"):
        path = getattr(tls, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"{at}.{key}: {path} does not exist")
    client_cert = None
    if tls.client_cert and tls.client_key:
        client_cert = (str(tls.client_cert), str(tls.client_key))
    return TLSConfig(
        client_cert=client_cert,
        ca_cert=str(tls.ca_cert) if tls.ca_cert else None,
        verify=tls.verify,
    )


@functools.cache
def _client_class() -> type[Any]:
    """``docker.APIClient`` whose endpoint TLS settings win over the environment.

    ``requests`` lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` replace a session's own
    ``verify`` on every request, so an endpoint's ``ca_cert`` (or ``verify = false``) would
    be ignored wherever those variables are set. Proxies from the environment still apply.
    """
    import docker

    class EndpointClient(docker.APIClient):  # type: ignore[misc]
        def merge_environment_settings(
            self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
        ) -> dict[str, Any]:
            settings: dict[str, Any] = super().merge_environment_settings(
                url, proxies, stream, verify, cert
            )
            if verify is None and self.verify is not True:
                settings["verify"] = self.verify  # the endpoint's CA file, or False
            return settings

    return EndpointClient


def connect(
    endpoint: EndpointConfig, *, timeout: float = DEFAULT_API_TIMEOUT, version: str | None = None
) -> Any:
    """A ``docker.APIClient`` for the endpoint; the engine answers its version query
    (unless ``version``, the API version it answered before, is given)."""
    import docker
    import requests

    tls = tls_config(endpoint)
    try:
        return _client_class()(
            base_url=base_url(endpoint), tls=tls or False, timeout=timeout, version=version
        )
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise InfrastructureError(unreachable_message(endpoint, exc)) from exc


def unreachable_message(endpoint: EndpointConfig, exc: BaseException) -> str:
    """Why ``endpoint`` cannot be used, naming the TLS file at fault when TLS is the cause."""
    where = f"endpoint {endpoint.name} ({endpoint.uri})"
    tls = endpoint.tls
    reason = _ssl_reason(exc)
    if tls is None or reason is None:
        return f"{where} does not answer: {exc}"
    at = f"airflow-butido.toml endpoints.{endpoint.name}.tls"
    if "KEY_VALUES_MISMATCH" in reason or "PEM lib" in reason:
        return (
            f"{where}: client certificate {tls.client_cert} and key {tls.client_key} "
            f"({at}) do not belong together or cannot be read: {reason}"
        )
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        ca = tls.ca_cert if tls.ca_cert is not None else "the system's CA certificates"
        return f"{where}: its server certificate is not trusted by {ca} ({at}.ca_cert): {reason}"
    if tls.client_cert is not None:
        return (
            f"{where} refused the client certificate {tls.client_cert} ({at}.client_cert): {reason}"
        )
    return f"{where} refused the TLS connection without a client certificate ({at}): {reason}"


def _ssl_reason(exc: BaseException) -> str | None:
    """The TLS error at the root of ``exc`` (docker and requests wrap it several times)."""
    import ssl

    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            return str(e)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(a for a in e.args if isinstance(a, BaseException))
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    text = str(exc)
    for marker in ("SSLError(", "CERTIFICATE_VERIFY_FAILED", "alert "):
        if marker in text:
            return text[text.index(marker) :].rstrip(")")
    return None


def ping(endpoint: EndpointConfig, api: Any | None = None) -> float:
    """Round-trip time of ``GET /_ping`` in seconds; InfrastructureError if no answer."""
    import docker
    import requests

    api = api or connect(endpoint, timeout=endpoint.timeout)
    start = time.monotonic()
    try:
        api.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise InfrastructureError(unreachable_message(endpoint, exc)) from exc
    return time.monotonic() - start


def version_allowed(found: str, allowed: Sequence[str]) -> bool:
    """``found`` is listed, or starts with a listed version up to a dot, dash or plus:
    ``20.10`` allows ``20.10.24+dfsg1``, ``1.4`` does not allow ``1.41``."""
    for wanted in allowed:
        if found == wanted:
            return True
        if found.startswith(wanted) and found[len(wanted)] in ".-+~":
            return True
    return False


def version_problem(config: Config, endpoint: EndpointConfig, api: Any) -> str | None:
    """Why ``docker.docker_versions`` / ``docker_api_versions`` exclude the endpoint, or
    None. The engine's own ``GET /version`` is asked; a failure raises InfrastructureError."""
    import docker
    import requests

    wanted = (
        ("Docker version", "Version", "docker_versions", config.docker.docker_versions),
        (
            "Docker API version",
            "ApiVersion",
            "docker_api_versions",
            config.docker.docker_api_versions,
        ),
    )
    if all(allowed is None for *_, allowed in wanted):
        return None
    try:
        info = api.version(api_version=False)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise InfrastructureError(unreachable_message(endpoint, exc)) from exc
    for label, field, key, allowed in wanted:
        if allowed is None:
            continue
        found = str(info.get(field, ""))
        if not version_allowed(found, allowed):
            return (
                f"endpoint {endpoint.name} runs {label} {found or 'unknown'}, "
                f"config.toml docker.{key} allows {', '.join(allowed) or 'none'}"
            )
    return None


def image_id(api: Any, image: str) -> str | None:
    """The ID (``sha256:...``) of ``image`` on the endpoint, None when it has no such image."""
    import docker

    try:
        return str(api.inspect_image(image)["Id"])
    except docker.errors.NotFound:  # ImageNotFound included
        return None


def image_present(api: Any, image: str) -> bool:
    return image_id(api, image) is not None


@dataclass(frozen=True)
class Candidate:
    endpoint: EndpointConfig
    api: Any  # docker.APIClient, connected and answering
    image_id: str | None = None  # the ID of the build image there, when already read


def usable_endpoints(
    config: Config,
    image: str,
    *,
    names: Sequence[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Candidate]:
    """Endpoints that answer and hold ``image``; ``image`` must be in docker.images.

    Raises InfrastructureError when none is usable (worth a retry: an endpoint may come
    back), ConfigError when the image is not configured at all.
    """
    import docker
    import requests

    full = config.resolve_image(image)
    warn = warn or log.warning
    endpoints = [e for e in config.endpoints if names is None or e.name in names]
    if not endpoints:
        raise ConfigError("no Docker endpoint configured (docker.endpoints)")
    usable: list[Candidate] = []
    problems: list[str] = []
    for endpoint in endpoints:
        try:
            api = connect(endpoint)  # the engine answers its API version query, or raises
            excluded = version_problem(config, endpoint, api)
            found = image_id(api, full) if excluded is None else None
        except (
            ConfigError,  # e.g. a missing TLS file: the other endpoints may still serve
            InfrastructureError,
            docker.errors.DockerException,
            requests.RequestException,
        ) as e:
            problems.append(f"endpoint {endpoint.name} skipped: {e}")
            warn(problems[-1])
            continue
        if excluded is not None:
            problems.append(f"{excluded}: skipped")
            warn(problems[-1])
            api.close()
            continue
        if found is None:
            problems.append(f"endpoint {endpoint.name} skipped: image {full} not present")
            warn(problems[-1])
            api.close()
            continue
        usable.append(Candidate(endpoint, api, found))
    if not usable:
        raise InfrastructureError(
            f"no usable Docker endpoint for image {full}: " + "; ".join(problems)
        )
    return usable


def check_endpoints(config: Config, image: str) -> list[str]:
    """Problems that stop a run before it starts: no endpoint answers with ``image``.

    Endpoints that are down while others work are only warned about (jobs skip them).
    """
    try:
        candidates = usable_endpoints(config, image)
    except (ConfigError, InfrastructureError) as exc:
        return [str(exc)]
    for candidate in candidates:
        candidate.api.close()
    return []


# -- slots ---------------------------------------------------------------------------------


class SlotLeaser(Protocol):
    """Where job slots are counted: ``acquire`` returns an endpoint name or None (all full)."""

    def acquire(self, job_uuid: str, candidates: Sequence[tuple[str, int]]) -> str | None: ...

    def release(self, job_uuid: str) -> None: ...

    def renew(self, job_uuid: str) -> None:
        """Heartbeat while the job runs (leases that are not renewed expire)."""
        ...


class DatabaseSlots:
    """Slot leases in the build database: ``maxjobs`` holds across processes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def acquire(self, job_uuid: str, candidates: Sequence[tuple[str, int]]) -> str | None:
        from airflow_butido.db.leases import acquire_slot
        from airflow_butido.db.records import repair_abandoned

        # the slots of dead jobs are free at once (the job's build claim has just repaired)
        repair_abandoned(self.engine, unless_within=REPAIRED_LATELY_SECONDS)
        return acquire_slot(self.engine, job_uuid, candidates)

    def holders(self, endpoints: Sequence[str]) -> list[str]:
        """What holds the slots of ``endpoints``: "job J (package) on E for N s"."""
        from airflow_butido.db.leases import slot_holders

        return [
            f"job {h.job_uuid}{f' ({h.package})' if h.package else ''} on {h.endpoint} "
            f"for {h.held_seconds:.0f} s"
            for h in slot_holders(self.engine, endpoints)
        ]

    def database_id(self) -> str:
        """A short, stable name of the database (its URL without the password), for the
        label that ties a build container to the slots of its job."""
        import hashlib

        url = self.engine.url.render_as_string(hide_password=True)
        return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]

    def live_jobs(self) -> set[str] | None:
        """The jobs holding a live slot on any endpoint."""
        from airflow_butido.db.leases import live_lease_jobs

        return live_lease_jobs(self.engine)

    def release(self, job_uuid: str) -> None:
        from airflow_butido.db.leases import release_slot

        release_slot(self.engine, job_uuid)

    def renew(self, job_uuid: str) -> None:
        from airflow_butido.db.leases import renew_slot

        renew_slot(self.engine, job_uuid)


class LocalSlots:
    """In-process slot counting (one process only): for a local runner without a database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}

    def acquire(self, job_uuid: str, candidates: Sequence[tuple[str, int]]) -> str | None:
        with self._lock:
            if job_uuid in self._held:
                return self._held[job_uuid]
            used = {name: 0 for name, _ in candidates}
            for name in self._held.values():
                if name in used:
                    used[name] += 1
            free = [(used[n] / m, i, n) for i, (n, m) in enumerate(candidates) if used[n] < m]
            if not free:
                return None
            name = min(free)[2]
            self._held[job_uuid] = name
            return name

    def release(self, job_uuid: str) -> None:
        with self._lock:
            self._held.pop(job_uuid, None)

    def renew(self, job_uuid: str) -> None:
        pass

    def in_use(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for name in self._held.values():
                counts[name] = counts.get(name, 0) + 1
            return counts


# A slot released in this process wakes the jobs of this process waiting for one at once
# (``butido build`` runs every job in one process); jobs elsewhere poll.
_slot_released = threading.Condition()


def _wait_for_a_release(seconds: float) -> None:
    with _slot_released:
        _slot_released.wait(timeout=seconds)


@contextlib.contextmanager
def lease_endpoint(
    slots: SlotLeaser,
    job_uuid: str,
    candidates: Sequence[Candidate],
    *,
    max_wait: float | None = None,
    on_wait: Callable[[float], None] | None = None,
    sleep: Callable[[float], None] = _wait_for_a_release,
    every: float = HEARTBEAT_SECONDS,
) -> Iterator[Candidate]:
    """Hold a slot on the least-utilised candidate for the duration of the block.

    Waits with jittered exponential backoff (0.25 s up to 10 s) while all are full, woken
    early when a job of this process releases its slot; InfrastructureError after
    ``max_wait`` seconds.
    """
    by_name = {c.endpoint.name: c for c in candidates}
    offer = [(c.endpoint.name, c.endpoint.maxjobs) for c in candidates if c.endpoint.maxjobs > 0]
    if not offer:
        raise InfrastructureError("no candidate endpoint has maxjobs > 0")
    start = time.monotonic()
    delay = 0.25
    reported = 0.0
    while True:
        name = slots.acquire(job_uuid, offer)
        if name is not None:
            break
        waited = time.monotonic() - start
        if max_wait is not None and waited >= max_wait:
            raise InfrastructureError(
                f"all endpoints full for {waited:.0f} s: "
                + ", ".join(f"{n} (maxjobs {m})" for n, m in offer)
            )
        if on_wait is not None:
            on_wait(waited)
        if waited >= reported:
            _report_wait(slots, job_uuid, offer, waited)
            reported = waited + WAIT_REPORT_SECONDS
        sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 10.0)
    try:
        with heartbeat(
            lambda: slots.renew(job_uuid), every, f"the endpoint slot of job {job_uuid}"
        ):
            yield by_name[name]
    finally:
        slots.release(job_uuid)
        with _slot_released:
            _slot_released.notify_all()


def _report_wait(
    slots: SlotLeaser, job_uuid: str, offer: Sequence[tuple[str, int]], waited: float
) -> None:
    """Say what a job waits for: every endpoint is full, held by which jobs since when."""
    describe = getattr(slots, "holders", None)
    try:
        held = describe([n for n, _ in offer]) if callable(describe) else []
    except Exception as exc:  # only a message: never fail the wait for it
        held = [f"(holders unknown: {exc})"]
    full = ", ".join(f"{n} (maxjobs {m})" for n, m in offer)
    log.log(
        logging.WARNING if waited >= WAIT_REPORT_SECONDS else logging.INFO,
        "job %s waiting %.0f s for a slot: every endpoint is full: %s%s",
        job_uuid,
        waited,
        full,
        "; held by " + "; ".join(held) if held else "",
    )


def same_image_endpoints(candidates: list[Candidate], image: str) -> tuple[list[Candidate], str]:
    """The image ID a build key names, and the endpoints holding exactly that image.

    Endpoints whose copy of the image differs from the first endpoint's are not used (their
    clients are closed): the key must name the image the job really runs in.
    """
    import docker.errors
    import requests

    from airflow_butido.container import endpoint_image_digest

    digests: list[tuple[Candidate, str]] = []
    for candidate in candidates:
        if candidate.image_id is not None:  # read when the endpoint was checked
            digests.append((candidate, candidate.image_id))
            continue
        try:
            digests.append((candidate, endpoint_image_digest(candidate.api, image)))
        except (docker.errors.DockerException, requests.RequestException) as exc:
            log.warning(
                "endpoint %s skipped: reading image %s: %s", candidate.endpoint.name, image, exc
            )
    if not digests:
        for candidate in candidates:
            candidate.api.close()
        raise InfrastructureError(f"no endpoint could report the ID of image {image}")
    digest = digests[0][1]
    kept = [c for c, d in digests if d == digest]
    for candidate, other in digests:
        if other != digest:
            log.warning(
                "endpoint %s skipped: its image %s is %s, not %s as on endpoint %s",
                candidate.endpoint.name,
                image,
                other[:19],
                digest[:19],
                kept[0].endpoint.name,
            )
    for candidate in candidates:
        if candidate not in kept:
            candidate.api.close()
    return kept, digest
