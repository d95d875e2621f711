"""Provider metadata, read by Airflow through the `apache_airflow_provider` entry point."""

from __future__ import annotations

from typing import Any

from airflow_butido import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-butido",
        "name": "butido",
        "description": "Build Linux packages from butido repositories in Docker containers.",
        "versions": [__version__],
        "connection-types": [],
        "extra-links": [],
    }
