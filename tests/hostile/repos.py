"""Hostile repositories for the hardening tests: one small package, its stores under tmp."""

from __future__ import annotations

from pathlib import Path

from tests.support import config_toml, make_dirs, write_files
from tests.unit._repos import ROOT_LAYER


def hostile_repo(
    root: Path,
    leaf: str,
    *,
    at: str = "p/1",
    extra_config: str = "",
    settings: str = "",
    files: dict[str, str] | None = None,
) -> Path:
    """A repository with one package at ``at``: ``leaf`` is its whole pkg.toml after
    the root layer (name, version, phases...). The stores live under ``root/stores``."""
    stores = make_dirs(root / "stores")
    written = {
        "config.toml": config_toml(images=[("img:1", "img")], stores=stores, extra=extra_config),
        "pkg.toml": ROOT_LAYER,
        f"{at}/pkg.toml": leaf,
        **(files or {}),
    }
    if settings:
        written["airflow-butido.toml"] = settings
    return write_files(root / "repo", written)
