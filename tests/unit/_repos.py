"""Small package repositories written to a temporary directory, for DAG and plan tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.support import config_toml, write_files

IMAGE_ONE = "registry.local/one:1"
IMAGE_TWO = "registry.local/two:2"

# The root layer without phases, for repositories whose packages bring their own.
ROOT_LAYER = """version_is_semver = false
patches = []

[sources]

[dependencies]
build = []
runtime = []
"""
ROOT_PKG = (
    ROOT_LAYER
    + """
[phases]
build.script = "mkdir -p /outputs && echo {{this.version}} > /outputs/{{this.name}}.pkg"
"""
)


def write_repo(
    root: Path,
    packages: dict[str, str],
    *,
    images: tuple[tuple[str, str], ...] = ((IMAGE_ONE, "one"), (IMAGE_TWO, "two")),
    check_env_names: bool = False,
    allowed_env: Sequence[str] = (),
    source_cache: Path | None = None,
) -> Path:
    """``packages`` maps "NAME/VERSION" to the extra TOML of that leaf (dependencies...);
    the stores live under ``root``."""
    files = {
        "config.toml": config_toml(
            images=images,
            stores=root,
            source_cache=source_cache,
            check_env_names=check_env_names,
            allowed_env=allowed_env,
        ),
        "pkg.toml": ROOT_PKG,
    }
    for spec, extra in packages.items():
        name, version = spec.split("/")
        files[f"{name}/{version}/pkg.toml"] = f'name = "{name}"\nversion = "{version}"\n{extra}\n'
    return write_files(root, files)


def isolate_dag_parsing(monkeypatch) -> None:
    """No overlay, parse cache or parsing context of this machine's environment: a DAG built
    in a test comes from the test's repository alone, whole."""
    for var in ("BUTIDO_CONFIG", "BUTIDO_SETTINGS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", raising=False)
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", raising=False)
