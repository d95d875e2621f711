"""The build-record web app: submits → jobs → artifacts, releases, scripts, logs, downloads.

Mounted by :class:`airflow_butido.web.plugin.ButidoPlugin` at ``/butido`` in Airflow's
api-server. Every route asks Airflow's auth manager who is calling (the UI's session cookie
or an ``Authorization: Bearer`` token, exactly as Airflow's own API does) and whether that
user may read the ``butido`` custom view: an anonymous request gets HTTP 401, a user without
the permission HTTP 403. Nothing here writes to the build database.

The database and stores are the ones the DAG file builds with: the repository in
``$BUTIDO_REPO`` and its configuration (``BUTIDO_CONFIG`` / ``BUTIDO_SETTINGS`` overlays),
read once on first use.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from airflow_butido.object_store import StorePath
from airflow_butido.web import pages, urls

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

RESOURCE_NAME = "butido"
PAGE_ROWS = 100


@dataclass(frozen=True)
class BuildRecord:
    """Where the view reads from: the build database and the artifact stores."""

    engine: Engine
    staging: StorePath
    release_stores: tuple[StorePath, ...]


def record_from_environment() -> BuildRecord:
    """The build record of the repository in ``$BUTIDO_REPO`` (as the DAG file reads it),
    its schema created or upgraded as the first plan task would."""
    from airflow_butido.db.migrate import open_database
    from airflow_butido.object_store import store_root
    from airflow_butido.recipes.config import load_config
    from airflow_butido.stores import release_dirs

    repo = os.environ.get("BUTIDO_REPO")
    if not repo:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "BUTIDO_REPO is not set in the api-server's environment",
        )
    root = Path(repo).resolve()
    config = load_config(root)
    return BuildRecord(
        engine=open_database(config, repo_root=root),
        staging=store_root(config, "staging"),
        release_stores=tuple(
            release_dirs(store_root(config, "releases_root"), config.release_stores)
        ),
    )


async def _airflow_user(request: Request) -> Any:
    """The logged-in Airflow user allowed to read the build record, or 401 / 403."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    token = (
        credentials if scheme.lower() == "bearer" else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    )
    user = await resolve_user_from_token(token)  # 401 without a valid token
    if not get_auth_manager().is_authorized_custom_view(
        method="GET", resource_name=RESOURCE_NAME, user=user
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed to read the build record")
    return user


def create_app(
    record: Callable[[], BuildRecord] | None = None,
    *,
    user_dependency: Callable[..., Any] | None = None,
) -> FastAPI:
    """The app; ``record`` and ``user_dependency`` are replaceable for tests."""
    get_record = functools.cache(record or record_from_environment)
    # a default, not an Annotated alias: annotations are strings here and this one is local
    logged_in = Depends(user_dependency or _airflow_user)
    app = FastAPI(
        title="butido build record",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def _error_page(request: Request, exc: HTTPException) -> HTMLResponse:
        login = f"{urls.base_path()}/auth/login?next={request.url}"
        return HTMLResponse(
            pages.error(exc.status_code, str(exc.detail), login_url=login),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.get("/", response_class=HTMLResponse)
    def submits(user: Any = logged_in) -> str:
        from airflow_butido.db.queries import list_submits

        return pages.submits(list_submits(get_record().engine, limit=PAGE_ROWS))

    @app.get("/submits/{submit_uuid}", response_class=HTMLResponse)
    def submit(submit_uuid: str, user: Any = logged_in) -> str:
        from airflow_butido.db.queries import submit_detail

        detail = submit_detail(get_record().engine, _uuid(submit_uuid))
        if detail is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no submit {submit_uuid}")
        return pages.submit(detail)

    @app.get("/jobs/{job_uuid}", response_class=HTMLResponse)
    def job(job_uuid: str, user: Any = logged_in) -> str:
        from airflow_butido.db.queries import list_releases

        detail = _job(get_record(), job_uuid)
        releases = list_releases(get_record().engine, job=detail.uuid)
        return pages.job(detail, releases)

    @app.get("/jobs/{job_uuid}/log", response_class=PlainTextResponse)
    def job_log(job_uuid: str, user: Any = logged_in) -> str:
        return _job(get_record(), job_uuid).log or ""

    @app.get("/jobs/{job_uuid}/script", response_class=PlainTextResponse)
    def job_script(job_uuid: str, user: Any = logged_in) -> str:
        return _job(get_record(), job_uuid, with_log=False).script or ""

    @app.get("/jobs/{job_uuid}/run")
    def job_run(job_uuid: str, user: Any = logged_in) -> RedirectResponse:
        detail = _job(get_record(), job_uuid, with_log=False)
        if not (detail.dag_id and detail.run_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_uuid} ran outside Airflow")
        from airflow_butido.plan import task_ids_for

        task_id = task_ids_for([(detail.package, detail.version)])[(detail.package, detail.version)]
        return RedirectResponse(urls.airflow_task(detail.dag_id, detail.run_id, task_id))

    @app.get("/jobs/{job_uuid}/artifacts/{path:path}")
    def artifact(job_uuid: str, path: str, user: Any = logged_in) -> Response:
        from airflow_butido.object_store import chunks_of, is_local
        from airflow_butido.stores import find_artifact, staging_dir

        rec = get_record()
        detail = _job(rec, job_uuid, with_log=False)
        owner = detail
        if not detail.artifacts and detail.reused_from:
            owner = _job(rec, detail.reused_from, with_log=False)
        recorded = {p: sha for p, sha, _ in owner.artifacts}
        if path not in recorded:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_uuid} has no artifact {path}")
        found = find_artifact(
            path, recorded[path], [staging_dir(rec.staging, owner.submit_uuid)], rec.release_stores
        )
        if found is None:
            raise HTTPException(
                status.HTTP_410_GONE, f"{path} is in no store any more (or was changed since)"
            )
        name = Path(path).name
        if not is_local(found):  # streamed from object storage, never whole in memory
            return StreamingResponse(
                chunks_of(found),
                media_type="application/octet-stream",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        return FileResponse(found, filename=name, media_type="application/octet-stream")

    @app.get("/tasks/{dag_id}/{run_id}/{task_id}")
    def task_record(
        dag_id: str, run_id: str, task_id: str, user: Any = logged_in
    ) -> RedirectResponse:
        job_uuid = _job_of_task(get_record().engine, dag_id, run_id, task_id)
        if job_uuid is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no build recorded for task {task_id} of run {run_id} ({dag_id})",
            )
        return RedirectResponse(urls.job(job_uuid))

    @app.get("/releases", response_class=HTMLResponse)
    def releases(user: Any = logged_in) -> str:
        from airflow_butido.db.queries import list_releases

        return pages.releases(list_releases(get_record().engine, limit=PAGE_ROWS))

    return app


def _uuid(value: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{value!r} is not a UUID") from None


def _job(record: BuildRecord, job_uuid: str, *, with_log: bool = True) -> Any:
    from airflow_butido.db.queries import job_detail

    detail = job_detail(record.engine, _uuid(job_uuid), with_log=with_log)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_uuid}")
    return detail


def _job_of_task(engine: Engine, dag_id: str, run_id: str, task_id: str) -> str | None:
    """The newest job a package task of this run recorded (task ids as the DAG names them)."""
    import sqlalchemy as sa

    from airflow_butido.db import schema as s
    from airflow_butido.db.engine import transaction
    from airflow_butido.plan import task_ids_for

    j, p = s.jobs, s.packages
    query = (
        sa.select(j.c.uuid, p.c.name, p.c.version)
        .join(p, p.c.id == j.c.package_id)
        .where(j.c.dag_id == dag_id, j.c.run_id == run_id)
        .order_by(j.c.id.desc())
    )
    with transaction(engine) as conn:
        found: Sequence[Any] = conn.execute(query).all()
    ids = task_ids_for({(r.name, r.version) for r in found})
    return next((str(r.uuid) for r in found if ids[(r.name, r.version)] == task_id), None)
