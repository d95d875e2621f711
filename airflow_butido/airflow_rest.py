"""A small client of Airflow's REST API v2: what CI needs to run a build DAG and follow it.

Token auth as Airflow 3 does it: ``POST /auth/token`` with user and password (SimpleAuthManager
and FAB alike) gives a JWT sent as ``Authorization: Bearer``; a token can also be given
directly. List endpoints return at most 100 rows per page, so lists are paginated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

from airflow_butido.errors import ButidoError, InfrastructureError

PAGE_SIZE = 100
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class AirflowApiError(ButidoError):
    """Airflow answered with an error (bad credentials, unknown DAG, invalid conf...)."""

    def __init__(self, method: str, url: str, status: int, detail: str) -> None:
        self.status = status
        super().__init__(f"{method} {url}: HTTP {status}: {detail}")


class AirflowClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.session = session or requests.Session()
        self._username = username
        self._password = password
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # -- plumbing ------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        kwargs.setdefault("timeout", self.timeout)
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(method, url, **kwargs)
            except requests.RequestException as exc:
                if attempt < self.retries:
                    time.sleep(min(2**attempt, 10))
                    continue
                raise InfrastructureError(f"{method} {url}: {exc}") from exc
            # 5xx: the API server is restarting or hit a database conflict; try again.
            if response.status_code >= 500 and attempt < self.retries:
                time.sleep(min(2**attempt, 10))
                continue
            if response.status_code >= 400:
                raise AirflowApiError(method, url, response.status_code, _detail(response))
            if not response.content:
                return None
            return response.json()
        raise AssertionError("unreachable")

    def login(self) -> str:
        """Exchange user and password for a token; later calls send it."""
        if not self._username or self._password is None:
            raise ButidoError("Airflow credentials missing: give --user/--password or a token")
        data = self._request(
            "POST",
            "/auth/token",
            json={"username": self._username, "password": self._password},
        )
        token = (data or {}).get("access_token")
        if not token:
            raise ButidoError(f"{self.base_url}/auth/token returned no access_token")
        self.session.headers["Authorization"] = f"Bearer {token}"
        return str(token)

    # -- DAGs and runs -------------------------------------------------------------------

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}")

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self._request(
            "PATCH", f"/api/v2/dags/{quote(dag_id, safe='')}", json={"is_paused": paused}
        )

    def trigger(self, dag_id: str, conf: dict[str, Any], *, run_id: str | None = None) -> str:
        """Start a run; ``run_id`` names it (Airflow makes one up when it is None)."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        data = self._request("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", json=body)
        return str(data["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", self._run_path(dag_id, run_id))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self._paginate(f"{self._run_path(dag_id, run_id)}/taskInstances"))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = (
            f"{self._run_path(dag_id, run_id)}/taskInstances/{quote(task_id, safe='')}"
            f"/xcomEntries/{quote(key, safe='')}"
        )
        try:
            data = self._request("GET", path, params={"deserialize": "true"})
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise
        return (data or {}).get("value")

    def wait(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float | None = None,
        interval: float = 3.0,
        on_poll: Any = None,
    ) -> dict[str, Any]:
        """Poll the run until it ends (or ``timeout`` seconds pass: returns the last state)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if on_poll is not None:
                on_poll(run)
            if run.get("state") in TERMINAL_RUN_STATES:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                return run
            time.sleep(interval)

    # -- pools ---------------------------------------------------------------------------

    def set_pool(self, name: str, slots: int, description: str) -> dict[str, Any]:
        """Create the pool, or set the slots and description of an existing one."""
        path = f"/api/v2/pools/{quote(name, safe='')}"
        body = {"slots": slots, "description": description}
        try:
            # Airflow validates a whole pool even when the mask names the fields to change
            return self._request(
                "PATCH",
                path,
                params={"update_mask": ["slots", "description"]},
                json={"pool": name, "include_deferred": False, **body},
            )
        except AirflowApiError as exc:
            if exc.status != 404:
                raise
        return self._request("POST", "/api/v2/pools", json={"name": name, **body})

    # -- assets ----------------------------------------------------------------------------

    def asset_id(self, uri: str) -> int | None:
        """The id Airflow gave the asset ``uri`` (it exists once a DAG names it), or None."""
        data = self._request("GET", "/api/v2/assets", params={"uri_pattern": uri, "limit": 100})
        return next((int(a["id"]) for a in data.get("assets", []) if a.get("uri") == uri), None)

    def add_asset_event(self, asset_id: int, extra: dict[str, Any]) -> dict[str, Any]:
        """Record that the asset was updated; DAGs scheduled on it are queued."""
        return self._request(
            "POST", "/api/v2/assets/events", json={"asset_id": asset_id, "extra": extra}
        )

    def _run_path(self, dag_id: str, run_id: str) -> str:
        return f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"

    def _paginate(self, path: str) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            data = self._request("GET", path, params={"limit": PAGE_SIZE, "offset": offset})
            rows = next((v for k, v in data.items() if isinstance(v, list)), [])
            yield from rows
            offset += len(rows)
            total = data.get("total_entries")
            if not rows or (total is not None and offset >= total):
                return


def _detail(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    detail = data.get("detail", data) if isinstance(data, dict) else data
    return str(detail)[:1000]
