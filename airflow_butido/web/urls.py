"""Paths of the build-record view and of Airflow's own UI, for links in both directions.

Relative to the api-server's root: ``[api] base_url`` (when it has a path, e.g. behind a
proxy at ``/airflow``) is prepended, so a link works from the browser wherever Airflow is
served.
"""

from __future__ import annotations

import functools
from urllib.parse import quote, urlparse

URL_PREFIX = "/butido"


@functools.cache
def base_path() -> str:
    """The path part of ``[api] base_url`` ("" when Airflow is served at the root)."""
    try:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # outside an Airflow installation (the CLI, unit tests)
        return ""
    return urlparse(base_url).path.rstrip("/")


def _q(value: str) -> str:
    return quote(str(value), safe="")


def view(path: str = "/") -> str:
    """A page of the build-record view, e.g. ``view("/jobs/<uuid>")``."""
    return f"{base_path()}{URL_PREFIX}{path}"


def submit(submit_uuid: str) -> str:
    return view(f"/submits/{_q(submit_uuid)}")


def job(job_uuid: str) -> str:
    return view(f"/jobs/{_q(job_uuid)}")


def job_artifacts(job_uuid: str) -> str:
    return view(f"/jobs/{_q(job_uuid)}#artifacts")


def job_run(job_uuid: str) -> str:
    """Redirects to the Airflow task instance that ran (or reused) the job."""
    return view(f"/jobs/{_q(job_uuid)}/run")


def task_record(dag_id: str, run_id: str, task_id: str) -> str:
    """Redirects to the job a package task recorded in a run (its newest try)."""
    return view(f"/tasks/{_q(dag_id)}/{_q(run_id)}/{_q(task_id)}")


def airflow_run(dag_id: str, run_id: str) -> str:
    return f"{base_path()}/dags/{_q(dag_id)}/runs/{_q(run_id)}"


def airflow_task(dag_id: str, run_id: str, task_id: str) -> str:
    return f"{airflow_run(dag_id, run_id)}/tasks/{_q(task_id)}"
