"""The Airflow plugin: the build-record view in the api-server and in Airflow's navigation.

Registered through the ``airflow.plugins`` entry point of this package. Every Airflow process
loads plugins, so this module imports nothing heavy: the FastAPI app is built the first time
the api-server asks for ``fastapi_apps``; the package tasks' modules only when
``[butido] preload_task_modules`` asks for them (see airflow_butido/preload.py).
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

    @classmethod
    def on_load(cls, *args: Any, **kwargs: Any) -> None:
        """With ``[butido] preload_task_modules``, import what package tasks need, so that
        the task processes this process forks inherit it (airflow_butido/preload.py)."""
        from airflow.configuration import conf

        if conf.getboolean("butido", "preload_task_modules", fallback=False):
            from airflow_butido.preload import preload_task_modules

            preload_task_modules()

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [{"app": _app(), "url_prefix": urls.URL_PREFIX, "name": "butido build records"}]
