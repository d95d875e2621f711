"""Small package repositories written into a temporary directory for tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.support import config_toml, write_files

CONFIG = config_toml(
    images=[("debian:bookworm", "deb12"), ("fooimage", "foo"), ("barimage", "bar")]
)

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
    all_files = dict(files)
    if config is not None:
        all_files.setdefault("config.toml", config)
    if root_pkg is not None:
        all_files.setdefault("pkg.toml", root_pkg)
    return write_files(root, all_files)


def packages(*specs: tuple[str, str, list[str]]) -> dict[str, str]:
    """``(name, version, runtime deps)`` -> ``{"name/version/pkg.toml": leaf}``."""
    return {f"{n}/{v}/pkg.toml": leaf(n, v, deps) for n, v, deps in specs}
