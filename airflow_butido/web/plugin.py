"""The Airflow plugin: the build-record view in the api-server and in Airflow's navigation.

Registered through the ``airflow.plugins`` entry point of this package. Every Airflow process
loads plugins, so this module imports nothing heavy: the FastAPI app is built the first time
the api-server asks for ``fastapi_apps``.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_butido.web import urls


@functools.cache
def _app() -> Any:
    from airflow_butido.web.app import create_app

    return create_app()


class ButidoPlugin(AirflowPlugin):
    """Build records of the butido DAGs: submits, jobs, logs, scripts, artifacts, releases."""

    name = "butido"
    external_views = [
        {
            "name": "Build records",
            "href": urls.view("/"),
            "url_route": "butido",
            "destination": "nav",
            "category": "browse",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [{"app": _app(), "url_prefix": urls.URL_PREFIX, "name": "butido build records"}]
