"""``config.toml`` (butido's keys, butido's rules) and ``airflow-butido.toml`` (ours).

Load order, later wins: ``<repo>/config.toml`` -> ``$XDG_CONFIG_HOME/butido/config.toml``
-> the file named by ``$BUTIDO_CONFIG`` -> ``BUTIDO_<KEY>`` variables for top-level
scalar keys. Layers merge like pkg.toml layers (tables by key, arrays replaced).
Settings butido does not know live in ``<repo>/airflow-butido.toml`` (overlay:
``$BUTIDO_SETTINGS``) so that butido itself can still read the same config.toml.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_butido.errors import ConfigError
from airflow_butido.recipes.errors import STRICT_KEYS_HINT, InvalidValue, RecipeError
from airflow_butido.recipes.layers import (
    find_key_line,
    has_key_path,
    merge,
    read_toml,
)
from airflow_butido.recipes.names import name_problem
from airflow_butido.recipes.paths import OutsideRoot, confine

log = logging.getLogger(__name__)

CONFIGURATION_VERSION = 1
# Changes a configuration has to make to reach each compatibility level.
CHANGELOG: dict[int, str] = {
    0: "never used",
    1: "compatibility changed from semver string to u16",
}
HIGHLIGHT_THEMES = (
    "base16-ocean.dark",
    "base16-eighties.dark",
    "base16-mocha.dark",
    "base16-ocean.light",
    "InspiredGitHub",
    "Solarized (dark)",
    "Solarized (light)",
)
DEFAULT_PROGRESS_FORMAT = "{elapsed_precise} {percent:>3}% {bar:5.cyan/blue} | {msg}"
DEFAULT_PACKAGE_PRINT_FORMAT = """\
{{i}} - {{p.name}} {{p.version}}
{{#if print_sources}}
    Sources:
    {{#each p.sources}}
        {{@key}} = {{this.url}} ({{this.hash.type}}: {{this.hash.hash}})
    {{/each}}
{{/if}}
{{#if print_build_deps}}
    Build dependencies:
    {{#each p.dependencies.build}}
        {{this}}
    {{/each}}
{{/if}}
{{#if print_runtime_deps}}
    Runtime dependencies:
    {{#each p.dependencies.runtime}}
        {{this}}
    {{/each}}
{{/if}}
{{#if print_patches}}
    Patches:
    {{#each p.patches}}
        {{this}}
    {{/each}}
{{/if}}
{{#if print_env}}
    Environment:
    {{#each p.environment}}
        {{@key}} = {{this}}
    {{/each}}
{{/if}}
{{#if print_flags}}
    Flags:
    {{#each p.flags}}
        {{this}}
    {{/each}}
{{/if}}
{{#if print_allowed_images}}
    Allowed images:
    {{#each p.allowed_images}}
        {{this}}
    {{/each}}
{{/if}}
{{#if print_denied_images}}
    Denied images:
    {{#each p.denied_images}}
        {{this}}
    {{/each}}
{{/if}}
{{#if print_phases}}
    Phases:
    {{#each p.phases}}
        {{@key}}
    {{/each}}
{{/if}}
{{#if print_script}}
{{script}}
{{/if}}
"""
SCRIPT_DIALECTS = ("handlebars", "jinja2")
CONFIG_FILE = "config.toml"
SETTINGS_FILE = "airflow-butido.toml"


# Object-storage URL schemes a store key accepts (``file://`` becomes a local path).
STORE_SCHEMES = ("s3", "gs", "gcs")
STORE_KEYS = ("staging", "releases_root", "source_cache")
DEFAULT_STORES_CONN_ID = "butido_stores"


@dataclass(frozen=True)
class StoreUrl:
    """A store on object storage: ``scheme://bucket/prefix`` (no trailing slash).

    Only the location: the client, its credentials and every access live outside the
    pure core (``airflow_butido.object_store``)."""

    url: str

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    def __str__(self) -> str:
        return self.url


Store = Path | StoreUrl  # where staging, releases_root or source_cache lies


@dataclass(frozen=True)
class ImageSpec:
    name: str
    short_name: str


@dataclass(frozen=True)
class TlsConfig:
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    verify: bool = True


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    uri: str
    endpoint_type: str  # "http" | "socket"
    maxjobs: int
    network_mode: str | None = None
    timeout: int = 10
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class DockerConfig:
    images: tuple[ImageSpec, ...] = ()
    endpoints: tuple[EndpointConfig, ...] = ()  # sorted by name
    docker_versions: tuple[str, ...] | None = None
    docker_api_versions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ContainerConfig:
    check_env_names: bool = False
    allowed_env: tuple[str, ...] = ()
    git_author: str | None = None
    git_commit_hash: str | None = None


@dataclass(frozen=True)
class QueueRoute:
    """``[airflow.queues]``: the Celery queue of one package's tasks, and where it was set
    (so that a name the repository does not have can be reported against that file)."""

    package: str
    queue: str
    file: str  # as shown in messages
    line: int | None


@dataclass(frozen=True)
class AirflowSettings:
    dag_id_prefix: str = "butido_"
    schedule: str | None = None
    tags: tuple[str, ...] = ()
    default_packages: tuple[str, ...] = ()  # "NAME" or "NAME VERSION"
    max_active_runs: int | None = None
    retries: int = 2  # of a package task, after an infrastructure failure
    retry_delay: int = 30  # seconds before such a retry
    # Airflow pool of the package tasks, sized to the endpoints' total maxjobs
    # (`butido airflow pool`); None: the default pool
    pool: str | None = None
    # package name -> Celery queue of its tasks; others: the executor's default queue
    queues: tuple[QueueRoute, ...] = ()

    def queue_of(self, package: str) -> str | None:
        return self._queue_by_package.get(package)

    @cached_property
    def _queue_by_package(self) -> dict[str, str]:  # asked once per package task
        return {route.package: route.queue for route in self.queues}


@dataclass(frozen=True)
class Config:
    """The validated configuration. Paths are absolute; lists are tuples.

    Every field has a default so code and tests can build a Config directly; the
    loader enforces what config.toml requires.
    """

    repo_root: Path = Path(".")
    compatibility: int = CONFIGURATION_VERSION
    log_dir: Path = Path("log")
    strict_script_interpolation: bool = True
    progress_format: str = DEFAULT_PROGRESS_FORMAT
    package_print_format: str = DEFAULT_PACKAGE_PRINT_FORMAT
    build_error_lines: int = 10
    script_highlight_theme: str | None = None
    script_linter: Path | None = None
    shebang: str = "#!/bin/bash"
    releases_root: Store = Path("releases")
    release_stores: tuple[str, ...] = ("default",)
    staging: Store = Path("staging")
    source_cache: Store = Path("sources")
    database_host: str | None = None
    database_port: int | None = None
    database_user: str | None = None
    database_password: str | None = field(default=None, repr=False)
    database_name: str | None = None
    database_connection_timeout: int = 30
    database_default_query_limit: int = 10
    docker: DockerConfig = field(default_factory=DockerConfig)
    containers: ContainerConfig = field(default_factory=ContainerConfig)
    available_phases: tuple[str, ...] = ()
    strict_keys: bool = True  # unknown keys (config and recipes) are errors, else warnings
    # Extension settings (airflow-butido.toml).
    script_dialect: str = "handlebars"
    database_url: str | None = None
    source_download_deadline: int = 3600  # seconds for one whole download
    source_download_max_mb: int = 4096  # the largest body without a Content-Length
    secret_env: tuple[str, ...] = ()  # variable names whose values are never stored
    airflow: AirflowSettings = field(default_factory=AirflowSettings)
    # The Airflow connection of the object-storage stores ([stores] conn_id); None: the
    # default (DEFAULT_STORES_CONN_ID) where a store URL needs one
    stores_conn_id: str | None = None
    files: tuple[Path, ...] = ()  # the files read, in load order
    warnings: tuple[RecipeError, ...] = ()  # unknown keys accepted with strict_keys = false

    @property
    def images(self) -> tuple[ImageSpec, ...]:
        return self.docker.images

    @property
    def endpoints(self) -> tuple[EndpointConfig, ...]:
        return self.docker.endpoints

    def endpoint(self, name: str) -> EndpointConfig:
        for ep in self.docker.endpoints:
            if ep.name == name:
                return ep
        known = ", ".join(ep.name for ep in self.docker.endpoints) or "none"
        raise ConfigError(f"unknown endpoint {name!r} (configured: {known})")

    def resolve_image(self, name_or_short: str) -> str:
        """Full image name for a full or short name; anything not configured is refused."""
        for image in self.docker.images:
            if name_or_short in (image.name, image.short_name):
                return image.name
        known = ", ".join(f"{i.name} ({i.short_name})" for i in self.docker.images) or "none"
        raise ConfigError(
            f"image {name_or_short!r} is not configured in docker.images (known: {known})"
        )

    def short_image_name(self, full_name: str) -> str:
        for image in self.docker.images:
            if image.name == full_name:
                return image.short_name
        return full_name


# --------------------------------------------------------------------------- loading

_INDEX_RE = re.compile(r"\[\d+\]")


def _typed(kind: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if kind == "str" and isinstance(value, str):
            return value
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            if value < 0 or value > 2**32:
                raise InvalidValue(f"expected a non-negative integer, got {value}")
            return value
        if kind == "str_list" and isinstance(value, list):
            if all(isinstance(v, str) for v in value):
                return tuple(value)
            raise InvalidValue("expected an array of strings")
        names = {
            "str": "a string",
            "bool": "a boolean",
            "int": "an integer",
            "str_list": "an array of strings",
        }
        raise InvalidValue(f"expected {names[kind]}, got {type(value).__name__}")

    return check


# Top-level keys of config.toml: type, required. "path" is a string made absolute, "store"
# a path or an object-storage URL (see _store).
_TOP_LEVEL: dict[str, tuple[str, bool]] = {
    "compatibility": ("int", True),
    "log_dir": ("path", True),
    "strict_script_interpolation": ("bool", False),
    "progress_format": ("str", False),
    "package_print_format": ("str", False),
    "build_error_lines": ("int", False),
    "script_highlight_theme": ("str", False),
    "script_linter": ("path", False),
    "shebang": ("str", False),
    "releases_root": ("store", True),
    "release_stores": ("str_list", True),
    "staging": ("store", True),
    "source_cache": ("store", True),
    "database_host": ("str", False),
    "database_port": ("int", False),
    "database_user": ("str", False),
    "database_password": ("str", False),
    "database_name": ("str", False),
    "database_connection_timeout": ("int", False),
    "database_default_query_limit": ("int", False),
    "docker": ("table", True),
    "containers": ("table", True),
    "available_phases": ("str_list", True),
    "strict_keys": ("bool", False),
}
_DOCKER_KEYS = ("docker_versions", "docker_api_versions", "images", "endpoints")
_ENDPOINT_KEYS = ("uri", "endpoint_type", "maxjobs", "network_mode", "timeout")
_CONTAINER_KEYS = ("check_env_names", "allowed_env", "git_author", "git_commit_hash")
_SETTINGS_KEYS = (
    "script_dialect",
    "database_url",
    "secret_env",
    "source_download_deadline",
    "source_download_max_mb",
    "endpoints",
    "airflow",
    "stores",
)
_AIRFLOW_KEYS = (
    "dag_id_prefix",
    "schedule",
    "tags",
    "default_packages",
    "max_active_runs",
    "retries",
    "retry_delay",
    "pool",
    "queues",
)
# What Airflow's pool names may be (up to 256 characters).
_POOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
# A Celery queue name a worker can list in `--queues a,b` (Airflow stores up to 256).
_QUEUE_NAME = re.compile(r"[^\s,]{1,256}")
_CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
_TLS_KEYS = ("ca_cert", "client_cert", "client_key", "verify")


@dataclass
class _Layer:
    label: str  # path as shown in messages, or "environment variable BUTIDO_X"
    data: dict[str, Any]
    text: str | None = None


class InvalidConfiguration(ConfigError):
    """The configuration files were read but hold errors; ``errors`` lists each one."""

    def __init__(self, errors: list[RecipeError] | tuple[RecipeError, ...]) -> None:
        self.errors = tuple(errors)
        super().__init__("invalid configuration:\n" + "\n".join(map(str, self.errors)))

    def __reduce__(self):  # keep picklable despite the custom __init__
        return (type(self), (self.errors,))


class _Loader:
    """Holds the layers so each error can name the file (and line) that set the key."""

    def __init__(self, repo_root: Path, env: Mapping[str, str]) -> None:
        self.root = repo_root
        self.env = env
        self.layers: list[_Layer] = []
        self.errors: list[RecipeError] = []
        self.warnings: list[RecipeError] = []
        self.strict_keys = True

    def label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def read(self, path: Path) -> None:
        label = self.label(path)
        try:
            data = read_toml(path)
        except InvalidValue as exc:
            self.errors.append(RecipeError(label, None, exc.line, exc.message))
            return
        self.layers.append(_Layer(label, data, path.read_text(encoding="utf-8")))

    def unknown(self, key: str, allowed: tuple[str, ...]) -> None:
        """An unknown key: an error, or a warning with ``strict_keys = false``."""
        message = f"unknown key (allowed: {', '.join(allowed)})"
        if self.strict_keys:
            self.error(key, f"{message}; {STRICT_KEYS_HINT}")
            return
        before = len(self.errors)
        self.error(key, f"{message}; ignored (strict_keys = false)")
        self.warnings.extend(self.errors[before:])
        del self.errors[before:]

    def error(self, key: str, message: str) -> None:
        """Record an error against the deepest layer that set ``key`` (or its parent)."""
        label, line = self.origin(key)
        self.errors.append(RecipeError(label, key, line, message))

    def origin(self, key: str) -> tuple[str, int | None]:
        """The file (as shown in messages) and line of the deepest layer that set ``key``."""
        parts = tuple(_INDEX_RE.sub("", key).split("."))
        for depth in (len(parts), len(parts) - 1):
            for layer in reversed(self.layers):
                if depth > 0 and has_key_path(layer.data, parts[:depth]):
                    return layer.label, find_key_line(layer.text, key) if layer.text else None
        return (self.layers[0].label if self.layers else CONFIG_FILE), None

    def merged(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for layer in self.layers:
            out = merge(out, layer.data)
        return out

    def fail_if_errors(self) -> None:
        if self.errors:
            raise InvalidConfiguration(self.errors)


def _env_override(raw: str, kind: str) -> Any:
    if kind in ("str", "path", "store"):
        return raw
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise InvalidValue(f"expected an integer, got {raw!r}") from None
    if kind == "bool":
        low = raw.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise InvalidValue(f"expected true or false, got {raw!r}")
    raise InvalidValue("only top-level scalar keys can be set from the environment")


def _check_compatibility(loader: _Loader, data: Mapping[str, Any]) -> int:
    """``compatibility`` must be 1 (written as integer or string); otherwise abort."""
    if "compatibility" not in data:
        loader.error("compatibility", f"missing; set compatibility = {CONFIGURATION_VERSION}")
        loader.fail_if_errors()
    raw = data["compatibility"]
    try:
        if isinstance(raw, bool):
            raise ValueError
        level = int(str(raw))
        if not 0 <= level < 2**16:
            raise ValueError
    except ValueError:
        loader.error(
            "compatibility",
            f"must be an integer (this version needs {CONFIGURATION_VERSION}); got {raw!r}. "
            f"Required changes: {CONFIGURATION_VERSION}: {CHANGELOG[CONFIGURATION_VERSION]}",
        )
        loader.fail_if_errors()
    if level < CONFIGURATION_VERSION:
        changes = "; ".join(
            f"{n}: {CHANGELOG[n]}" for n in range(level + 1, CONFIGURATION_VERSION + 1)
        )
        loader.error(
            "compatibility",
            f"configuration is outdated ({level} < {CONFIGURATION_VERSION}); "
            f"required changes: {changes}",
        )
    elif level > CONFIGURATION_VERSION:
        loader.error(
            "compatibility",
            f"configuration needs compatibility {level}, this version supports "
            f"{CONFIGURATION_VERSION}: butido too old",
        )
    loader.fail_if_errors()
    return level


def _unknown(loader: _Loader, table: Mapping[str, Any], allowed: tuple[str, ...], at: str) -> None:
    for key in table:
        if key not in allowed:
            loader.unknown(f"{at}{key}", allowed)


def _get(loader: _Loader, table: Mapping[str, Any], key: str, kind: str, at: str = "") -> Any:
    if key not in table:
        return None
    try:
        return _typed(kind)(table[key])
    except InvalidValue as exc:
        loader.error(f"{at}{key}", exc.message)
        return None


def _required(loader: _Loader, table: Mapping[str, Any], key: str, kind: str, at: str) -> Any:
    if key not in table:
        loader.error(f"{at}{key}", "missing required key")
        return None
    return _get(loader, table, key, kind, at)


def _in_repository(loader: _Loader, key: str, value: Any) -> None:
    """A relative file path (script_linter, TLS files) names a repository file: it must
    stay in the repository once links are resolved. Absolute paths are the admin's choice."""
    if isinstance(value, str) and not Path(value).is_absolute():
        try:
            confine(loader.root, value, what=key)
        except OutsideRoot as exc:
            loader.error(key, str(exc))


def _path(root: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else root / p


def _store(loader: _Loader, key: str, value: str) -> Store | None:
    """A store key's value: a path (relative to the repository), ``file:///abs/path`` (a
    local path too) or ``s3://bucket/prefix`` / ``gs://bucket/prefix``."""
    if "://" not in value:
        return _path(loader.root, value)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    expected = "a path, file:///abs/path, s3://bucket/prefix or gs://bucket/prefix"
    if parts.query or parts.fragment:
        loader.error(key, f"{value!r}: a store URL takes no query or fragment")
        return None
    if scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            loader.error(key, f"{value!r}: a file URL is file:///absolute/path")
            return None
        return Path(path)
    if scheme not in STORE_SCHEMES:
        loader.error(key, f"{value!r}: unsupported URL scheme {scheme!r}; expected {expected}")
        return None
    bucket = parts.netloc
    segments = [p for p in parts.path.split("/") if p]
    if not bucket or "@" in bucket or ":" in bucket:
        loader.error(key, f"{value!r}: expected {scheme}://bucket/prefix (a bucket name)")
        return None
    if any(p in (".", "..") for p in segments):
        loader.error(key, f"{value!r}: '.' and '..' are not allowed in a store URL")
        return None
    return StoreUrl("/".join([f"{scheme}://{bucket}", *segments]))


def _parse_images(loader: _Loader, value: Any) -> tuple[ImageSpec, ...]:
    if not isinstance(value, list):
        loader.error("docker.images", "expected an array of { name, short_name } tables")
        return ()
    images: list[ImageSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        at = f"docker.images[{i}]"
        if not isinstance(item, dict):
            loader.error(at, "expected a table { name = ..., short_name = ... }")
            continue
        _unknown(loader, item, ("name", "short_name"), f"{at}.")
        name = _required(loader, item, "name", "str", f"{at}.")
        short = _required(loader, item, "short_name", "str", f"{at}.")
        if name is None or short is None:
            continue
        for n in (name, short) if name != short else (name,):
            if n in seen:
                loader.error(at, f"image name {n!r} is used more than once")
            seen.add(n)
        images.append(ImageSpec(name, short))
    return tuple(images)


def _parse_endpoints(loader: _Loader, value: Any) -> tuple[EndpointConfig, ...]:
    if not isinstance(value, dict):
        loader.error("docker.endpoints", "expected a table of endpoint tables")
        return ()
    endpoints = []
    for name in sorted(value):
        ep = value[name]
        at = f"docker.endpoints.{name}."
        if not isinstance(ep, dict):
            loader.error(at[:-1], "expected a table")
            continue
        _unknown(loader, ep, _ENDPOINT_KEYS, at)
        uri = _required(loader, ep, "uri", "str", at)
        etype = _required(loader, ep, "endpoint_type", "str", at)
        maxjobs = _required(loader, ep, "maxjobs", "int", at)
        network_mode = _get(loader, ep, "network_mode", "str", at)
        timeout = _get(loader, ep, "timeout", "int", at)
        if etype is not None and etype not in ("http", "socket"):
            loader.error(f"{at}endpoint_type", f'must be "http" or "socket", got {etype!r}')
            etype = None
        if maxjobs == 0:
            loader.error(f"{at}maxjobs", "must be at least 1")
            maxjobs = None
        if uri is not None and etype == "http" and "://" not in uri:
            loader.error(f"{at}uri", f"expected a URL such as http://host:2375, got {uri!r}")
            uri = None
        if (
            uri is not None
            and etype == "socket"
            and not (uri.startswith("unix://") or uri.startswith("/"))
        ):
            loader.error(f"{at}uri", f"expected a socket path or unix:// URL, got {uri!r}")
            uri = None
        if None in (uri, etype, maxjobs):
            continue
        endpoints.append(
            EndpointConfig(
                name, uri, etype, maxjobs, network_mode, 10 if timeout is None else timeout
            )
        )
    return tuple(endpoints)


def _parse_docker(loader: _Loader, value: Any) -> DockerConfig:
    if not isinstance(value, dict):
        loader.error("docker", "expected a table")
        return DockerConfig()
    _unknown(loader, value, _DOCKER_KEYS, "docker.")
    images: tuple[ImageSpec, ...] = ()
    if "images" not in value:
        loader.error("docker.images", "missing required key")
    else:
        images = _parse_images(loader, value["images"])
    endpoints: tuple[EndpointConfig, ...] = ()
    if "endpoints" not in value:
        loader.error("docker.endpoints", "missing required key")
    else:
        endpoints = _parse_endpoints(loader, value["endpoints"])
    return DockerConfig(
        images=images,
        endpoints=endpoints,
        docker_versions=_get(loader, value, "docker_versions", "str_list", "docker."),
        docker_api_versions=_get(loader, value, "docker_api_versions", "str_list", "docker."),
    )


def _parse_containers(loader: _Loader, value: Any) -> ContainerConfig:
    if not isinstance(value, dict):
        loader.error("containers", "expected a table")
        return ContainerConfig()
    _unknown(loader, value, _CONTAINER_KEYS, "containers.")
    check = _required(loader, value, "check_env_names", "bool", "containers.")
    allowed = _required(loader, value, "allowed_env", "str_list", "containers.")
    return ContainerConfig(
        check_env_names=bool(check),
        allowed_env=allowed or (),
        git_author=_get(loader, value, "git_author", "str", "containers."),
        git_commit_hash=_get(loader, value, "git_commit_hash", "str", "containers."),
    )


def _build_config(loader: _Loader, data: Mapping[str, Any]) -> dict[str, Any]:
    _unknown(loader, data, tuple(_TOP_LEVEL), "")
    values: dict[str, Any] = {}
    for key, (kind, required) in _TOP_LEVEL.items():
        if kind == "table" or key == "compatibility":
            continue
        if required and key not in data:
            loader.error(key, "missing required key")
            continue
        value = _get(loader, data, key, "str" if kind in ("path", "store") else kind)
        if value is None:
            continue
        if kind == "path":
            value = _path(loader.root, value)
        elif kind == "store":
            value = _store(loader, key, value)
            if value is None:
                continue
        values[key] = value
    _in_repository(loader, "script_linter", data.get("script_linter"))
    for i, store in enumerate(values.get("release_stores", ())):
        problem = name_problem(store)
        if problem is not None:
            loader.error(f"release_stores[{i}]", f"release store name {problem}")
    for key in ("release_stores", "available_phases"):
        if key in values and not values[key]:
            loader.error(key, "must not be empty")
    theme = values.get("script_highlight_theme")
    if theme is not None and theme not in HIGHLIGHT_THEMES:
        loader.error(
            "script_highlight_theme",
            f"unknown theme {theme!r} (known: {', '.join(HIGHLIGHT_THEMES)})",
        )
    if "docker" in data:
        values["docker"] = _parse_docker(loader, data["docker"])
    else:
        loader.error("docker", "missing required table")
    if "containers" in data:
        values["containers"] = _parse_containers(loader, data["containers"])
    else:
        loader.error("containers", "missing required table")
    return values


def _apply_settings(loader: _Loader, data: Mapping[str, Any], values: dict[str, Any]) -> None:
    _unknown(loader, data, _SETTINGS_KEYS, "")
    dialect = _get(loader, data, "script_dialect", "str")
    if dialect is not None:
        if dialect not in SCRIPT_DIALECTS:
            loader.error("script_dialect", f"must be one of {', '.join(SCRIPT_DIALECTS)}")
        else:
            values["script_dialect"] = dialect
    url = _get(loader, data, "database_url", "str")
    if url is not None:
        values["database_url"] = url
    for key in ("source_download_deadline", "source_download_max_mb"):
        limit = _get(loader, data, key, "int")
        if limit is not None:
            if limit < 1:
                loader.error(key, "must be at least 1")
            else:
                values[key] = limit
    secret_env = _get(loader, data, "secret_env", "str_list")
    if secret_env is not None:
        values["secret_env"] = tuple(secret_env)
    if "airflow" in data:
        table = data["airflow"]
        if not isinstance(table, dict):
            loader.error("airflow", "expected a table")
        else:
            _unknown(loader, table, _AIRFLOW_KEYS, "airflow.")
            kw: dict[str, Any] = {}
            for key, kind in (
                ("dag_id_prefix", "str"),
                ("schedule", "str"),
                ("tags", "str_list"),
                ("default_packages", "str_list"),
                ("max_active_runs", "int"),
                ("retries", "int"),
                ("retry_delay", "int"),
                ("pool", "str"),
            ):
                value = _get(loader, table, key, kind, "airflow.")
                if value is not None:
                    kw[key] = value
            if "pool" in kw and not _POOL_NAME.fullmatch(kw["pool"]):
                loader.error(
                    "airflow.pool",
                    f"{kw['pool']!r} is not a pool name (letters, digits, '_', '-', '.')",
                )
                del kw["pool"]
            if "queues" in table:
                kw["queues"] = _parse_queues(loader, table["queues"])
            for i, spec in enumerate(kw.get("default_packages", ())):
                if len(spec.split()) not in (1, 2):
                    loader.error(
                        f"airflow.default_packages[{i}]",
                        f'expected "NAME" or "NAME VERSION", got {spec!r}',
                    )
            values["airflow"] = AirflowSettings(**kw)
    if "endpoints" in data:
        _apply_tls(loader, data["endpoints"], values)
    if "stores" in data:
        table = data["stores"]
        if not isinstance(table, dict):
            loader.error("stores", "expected a table")
        else:
            _unknown(loader, table, ("conn_id",), "stores.")
            conn_id = _get(loader, table, "conn_id", "str", "stores.")
            if conn_id is not None:
                if not _CONN_ID.fullmatch(conn_id):
                    loader.error(
                        "stores.conn_id",
                        f"{conn_id!r} is not an Airflow connection id "
                        "(letters, digits, '_', '-', '.')",
                    )
                else:
                    values["stores_conn_id"] = conn_id


def _parse_queues(loader: _Loader, table: Any) -> tuple[QueueRoute, ...]:
    """``[airflow.queues]``: package name = queue name. Whether the repository has each
    package is checked once it is loaded (``Repository`` reports the file and line)."""
    if not isinstance(table, dict):
        loader.error("airflow.queues", "expected a table of package name = queue name")
        return ()
    routes = []
    for name, queue in table.items():
        key = f"airflow.queues.{name}"
        if not isinstance(queue, str):
            loader.error(key, f"expected a queue name (a string), got {type(queue).__name__}")
        elif not _QUEUE_NAME.fullmatch(queue):
            loader.error(key, f"{queue!r} is not a queue name (no spaces or commas)")
        else:
            routes.append(QueueRoute(name, queue, *loader.origin(key)))
    return tuple(routes)


def _apply_tls(loader: _Loader, table: Any, values: dict[str, Any]) -> None:
    if not isinstance(table, dict):
        loader.error("endpoints", "expected a table of endpoint tables")
        return
    docker: DockerConfig = values.get("docker", DockerConfig())
    by_name = {ep.name: ep for ep in docker.endpoints}
    for name, ep_table in table.items():
        at = f"endpoints.{name}"
        if not isinstance(ep_table, dict):
            loader.error(at, "expected a table")
            continue
        _unknown(loader, ep_table, ("tls",), f"{at}.")
        if name not in by_name:
            loader.error(at, "no such endpoint in config.toml docker.endpoints")
            continue
        tls = ep_table.get("tls")
        if tls is None:
            continue
        if not isinstance(tls, dict):
            loader.error(f"{at}.tls", "expected a table")
            continue
        _unknown(loader, tls, _TLS_KEYS, f"{at}.tls.")
        for k in ("ca_cert", "client_cert", "client_key"):
            _in_repository(loader, f"{at}.tls.{k}", tls.get(k))
        paths = {
            k: _path(loader.root, _get(loader, tls, k, "str", f"{at}.tls."))
            for k in ("ca_cert", "client_cert", "client_key")
        }
        verify = _get(loader, tls, "verify", "bool", f"{at}.tls.")
        by_name[name] = EndpointConfig(
            **{**by_name[name].__dict__, "tls": TlsConfig(**paths, verify=verify is not False)}
        )
    values["docker"] = DockerConfig(
        images=docker.images,
        endpoints=tuple(by_name[n] for n in sorted(by_name)),
        docker_versions=docker.docker_versions,
        docker_api_versions=docker.docker_api_versions,
    )


def load_config(repo_root: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration of the repository at ``repo_root``.

    Raises ``ConfigError`` listing every problem (file, key, line where known).
    """
    env = os.environ if environ is None else environ
    root = Path(repo_root).absolute()
    loader = _Loader(root, env)
    files: list[Path] = []
    repo_file = root / CONFIG_FILE
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME", "~")).expanduser() / ".config")
    candidates = [(repo_file, False), (xdg / "butido" / CONFIG_FILE, False)]
    if env.get("BUTIDO_CONFIG"):
        candidates.append((Path(env["BUTIDO_CONFIG"]), True))
    for path, must_exist in candidates:
        if path.is_file():
            files.append(path)
            loader.read(path)
        elif must_exist:
            raise ConfigError(f"BUTIDO_CONFIG names {path}, which is not a file")
    if not files:
        raise ConfigError(f"no configuration: {repo_file} does not exist")
    loader.fail_if_errors()
    for key, (kind, _) in _TOP_LEVEL.items():
        var = f"BUTIDO_{key.upper()}"
        if var in env and kind != "table":
            label = f"environment variable {var}"
            try:
                value = _env_override(env[var], kind)
            except InvalidValue as exc:
                loader.errors.append(RecipeError(label, key, None, exc.message))
                continue
            loader.layers.append(_Layer(label, {key: value}))
    data = loader.merged()
    strict = data.get("strict_keys", True)
    loader.strict_keys = strict if isinstance(strict, bool) else True  # else: a type error below
    level = _check_compatibility(loader, data)
    values = _build_config(loader, data)
    values["compatibility"] = level

    settings = _Loader(root, env)
    settings.strict_keys = loader.strict_keys
    settings_files = [(root / SETTINGS_FILE, False)]
    if env.get("BUTIDO_SETTINGS"):
        settings_files.append((Path(env["BUTIDO_SETTINGS"]), True))
    for path, must_exist in settings_files:
        if path.is_file():
            files.append(path)
            settings.read(path)
        elif must_exist:
            raise ConfigError(f"BUTIDO_SETTINGS names {path}, which is not a file")
    if not settings.errors:
        _apply_settings(settings, settings.merged(), values)
    errors = loader.errors + settings.errors
    if errors:
        raise InvalidConfiguration(errors)
    warnings = tuple(loader.warnings + settings.warnings)
    for warning in warnings:
        log.warning("%s", warning)
    return Config(repo_root=root, files=tuple(files), warnings=warnings, **values)
