"""Provider metadata, read by Airflow through the `apache_airflow_provider` entry point.

The build-record plugin is registered through the package's ``airflow.plugins`` entry point
rather than a ``plugins`` entry here: Airflow loads provider-declared plugins only when
``[core] lazy_discover_providers`` is off, entry-point plugins always.
"""

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
        "extra-links": [
            "airflow_butido.operators.links.BuildRecordLink",
            "airflow_butido.operators.links.ReusedFromLink",
            "airflow_butido.operators.links.ArtifactsLink",
        ],
    }
