"""Small package repositories written into a temporary directory for tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

CONFIG = """\
compatibility = 1
log_dir = "logs"
releases_root = "releases"
release_stores = ["default"]
staging = "staging"
source_cache = "sources"
available_phases = ["build"]

[docker]
images = [
    { name = "debian:bookworm", short_name = "deb12" },
    { name = "fooimage", short_name = "foo" },
    { name = "barimage", short_name = "bar" },
]

[docker.endpoints.local]
uri = "/var/run/docker.sock"
endpoint_type = "socket"
maxjobs = 2

[containers]
check_env_names = false
allowed_env = []
"""

ROOT_PKG = """\
version_is_semver = false
patches = []

[dependencies]
build = []
runtime = []

[sources]

[phases]
build.script = "echo build"
"""


def leaf(
    name: str,
    version: str,
    runtime: Iterable[str] = (),
    build: Iterable[str] = (),
    extra: str = "",
) -> str:
    """A leaf pkg.toml; dependencies are written as TOML values (strings quoted)."""
    rt = ", ".join(_value(d) for d in runtime)
    bd = ", ".join(_value(d) for d in build)
    return (
        f'name = "{name}"\nversion = "{version}"\n{extra}\n'
        f"[dependencies]\nbuild = [{bd}]\nruntime = [{rt}]\n"
    )


def _value(dep: str) -> str:
    return dep if dep.startswith("{") else f'"{dep}"'


def write_repo(
    root: Path,
    files: Mapping[str, str],
    *,
    config: str | None = CONFIG,
    root_pkg: str | None = ROOT_PKG,
) -> Path:
    """Write ``files`` (repo-relative path -> text) plus config.toml and a root pkg.toml."""
    root.mkdir(parents=True, exist_ok=True)
    all_files = dict(files)
    if config is not None:
        all_files.setdefault("config.toml", config)
    if root_pkg is not None:
        all_files.setdefault("pkg.toml", root_pkg)
    for rel, text in all_files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def packages(*specs: tuple[str, str, list[str]]) -> dict[str, str]:
    """``(name, version, runtime deps)`` -> ``{"name/version/pkg.toml": leaf}``."""
    return {f"{n}/{v}/pkg.toml": leaf(n, v, deps) for n, v, deps in specs}
