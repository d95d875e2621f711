"""Package repositories, config files and a package stand-in for tests.

Every test that needs a config.toml or a config overlay builds its text here, so the
shape of a minimal valid configuration lives in one place.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STORE_DIRS = ("logs", "staging", "sources", "releases")
DEFAULT_SOCKET = "/var/run/docker.sock"
# The engine the integration tests build on, as the Docker SDK is told to reach it.
DOCKER_SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def store_paths(base: Path | None = None, source_cache: Path | None = None) -> dict[str, str]:
    """log_dir, releases_root, staging and source_cache: directories under ``base``, or
    names relative to the repository without it."""

    def where(name: str) -> str:
        return name if base is None else str(base / name)

    return {
        "log_dir": where("logs"),
        "releases_root": where("releases"),
        "staging": where("staging"),
        "source_cache": str(source_cache) if source_cache is not None else where("sources"),
    }


def docker_toml(
    images: Iterable[tuple[str, str]],
    endpoints: Mapping[str, int] | None = None,
    uri: str = DEFAULT_SOCKET,
) -> str:
    """The ``[docker]`` table: ``images`` as (name, short name), ``endpoints`` as name ->
    maxjobs (default one ``local`` endpoint with 2), every endpoint a socket at ``uri``."""
    text = "[docker]\nimages = [\n"
    text += "".join(f'    {{ name = "{n}", short_name = "{s}" }},\n' for n, s in images)
    text += "]\n"
    for name, maxjobs in (endpoints or {"local": 2}).items():
        text += (
            f'\n[docker.endpoints.{name}]\nuri = "{uri}"\nendpoint_type = "socket"\n'
            f"maxjobs = {maxjobs}\n"
        )
    return text


def containers_toml(*, check_env_names: bool = False, allowed_env: Sequence[str] = ()) -> str:
    return (
        f"[containers]\ncheck_env_names = {str(check_env_names).lower()}\n"
        f"allowed_env = {json.dumps(list(allowed_env))}\n"
    )


def config_toml(
    *,
    images: Iterable[tuple[str, str]],
    endpoints: Mapping[str, int] | None = None,
    uri: str = DEFAULT_SOCKET,
    stores: Path | None = None,
    source_cache: Path | None = None,
    phases: Sequence[str] = ("build",),
    check_env_names: bool = False,
    allowed_env: Sequence[str] = (),
    extra: str = "",
) -> str:
    """A complete config.toml; ``extra`` holds further top-level keys. The endpoint
    tables come last, so a test may cut them off and append its own."""
    paths = store_paths(stores, source_cache)
    lines = [
        "compatibility = 1",
        f'log_dir = "{paths["log_dir"]}"',
        f'releases_root = "{paths["releases_root"]}"',
        'release_stores = ["default"]',
        f'staging = "{paths["staging"]}"',
        f'source_cache = "{paths["source_cache"]}"',
        f"available_phases = {json.dumps(list(phases))}",
    ]
    if extra:
        lines.append(extra.rstrip("\n"))
    return (
        "\n".join(lines)
        + "\n\n"
        + containers_toml(check_env_names=check_env_names, allowed_env=allowed_env)
        + "\n"
        + docker_toml(images, endpoints, uri)
    )


def overlay_toml(
    stores: Path,
    *,
    source_cache: Path,
    images: Iterable[tuple[str, str]],
    endpoints: Mapping[str, int] | None = None,
    uri: str = DEFAULT_SOCKET,
    allowed_env: Sequence[str] | None = None,
) -> str:
    """A config overlay (``BUTIDO_CONFIG``) moving the stores under ``stores`` and
    building on ``images``; with ``allowed_env`` it also checks environment names."""
    paths = store_paths(stores, source_cache)
    text = "".join(f'{key} = "{value}"\n' for key, value in paths.items())
    text += "\n" + docker_toml(images, endpoints, uri)
    if allowed_env is not None:
        text += "\n" + containers_toml(check_env_names=True, allowed_env=allowed_env)
    return text


def make_dirs(root: Path, names: Iterable[str] = STORE_DIRS) -> Path:
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


def write_files(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``files`` (path relative to ``root`` -> text), creating directories."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@dataclass(frozen=True)
class Pkg:
    """What the source functions read of a package (a real Package has a dozen more fields)."""

    name: str
    version: str


# The -E cases every command that takes -E is tested with: (case, argument, the error it
# gives or None when it is accepted). "FLAVOR=a=b" sets FLAVOR to "a=b".
ENV_ARG_CASES = (
    ("empty value", "FLAVOR=", "-E 'FLAVOR=': FLAVOR: empty value"),
    ("'=' in the value", "FLAVOR=a=b", None),
    ("bad name", "1BAD=x", "-E '1BAD=x': invalid variable name '1BAD'"),
)
# ... and where the command checks containers.allowed_env (FLAVOR allowed, NOPE not):
ENV_NOT_ALLOWED_CASE = ("name not allowed", "NOPE=x", "NOPE")


def run_butido(repo: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real ``butido`` command on ``repo``, with no parse cache, its caches inside the
    repository and no configuration overlay inherited from the caller's environment."""
    env = {**os.environ, "BUTIDO_PARSE_CACHE": "off", "XDG_CACHE_HOME": str(repo / "cache")}
    for var in ("AIRFLOW_HOME", "BUTIDO_CONFIG", "BUTIDO_SETTINGS"):
        env.pop(var, None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "butido"), "--repo", str(repo), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
