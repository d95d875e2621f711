"""Writing the build record: submits, jobs (start, finish, reuse), logs, artifacts,
consumed inputs, and repair of jobs left running by a dead run.

Every writer is idempotent for a task retry: the same submit or job UUID recorded
twice updates the one row instead of adding another. A lost database connection
raises InfrastructureError (see engine.transaction).
"""

from __future__ import annotations

import codecs
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_butido.db import rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction
from airflow_butido.errors import ButidoError

LOG_CHUNK_CHARS = 8 * 1024 * 1024

LogSource = str | bytes | os.PathLike[str] | IO[str] | IO[bytes] | None


class RecordError(ButidoError):
    """A record refers to a submit or job that was never written."""


@dataclass(frozen=True)
class ArtifactRecord:
    path: str  # relative to the submit's staging directory (butido's convention)
    sha256: str | None = None
    size: int | None = None


class _ArtifactLike(Protocol):
    path: str
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class InputRef:
    """An artifact a job consumed: its path and hash, and if known the producing job."""

    path: str
    sha256: str | None = None
    job_uuid: str | None = None


def _inputs_json(inputs: Any) -> str | None:
    if inputs is None:
        return None
    if isinstance(inputs, str):
        return inputs
    to_json = getattr(inputs, "to_json", None)
    data = to_json() if callable(to_json) else dict(inputs)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _submit_id(conn: Connection, submit_uuid: str) -> int:
    found = conn.execute(sa.select(s.submits.c.id).where(s.submits.c.uuid == submit_uuid)).scalar()
    if found is None:
        raise RecordError(f"submit {submit_uuid} is not recorded in the database")
    return int(found)


def _job_id(conn: Connection, job_uuid: str) -> int | None:
    found = conn.execute(sa.select(s.jobs.c.id).where(s.jobs.c.uuid == job_uuid)).scalar()
    return None if found is None else int(found)


def _require_job_id(conn: Connection, job_uuid: str) -> int:
    job_id = _job_id(conn, job_uuid)
    if job_id is None:
        raise RecordError(f"job {job_uuid} is not recorded in the database")
    return job_id


def record_submit(
    engine: Engine,
    *,
    uuid: str,
    package_name: str,
    package_version: str,
    image: str,
    repo_commit: str,
    repo_dirty: bool = False,
    env: Mapping[str, str] | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    submit_time: datetime | None = None,
) -> int:
    """Write the submit (once per UUID) and its environment; returns its id."""
    with transaction(engine, immediate=True) as conn:
        values = {
            "uuid": uuid,
            "submit_time": submit_time or rows.utcnow(),
            "requested_image_id": rows.image_id(conn, image),
            "requested_package_id": rows.package_id(conn, package_name, package_version),
            "repo_hash_id": rows.githash_id(conn, repo_commit),
            "repo_dirty": bool(repo_dirty),
            "dag_id": dag_id,
            "run_id": run_id,
        }
        rows.insert_ignore(conn, s.submits, values)
        submit_id = _submit_id(conn, uuid)
        env_ids = rows.envvar_ids(conn, env or {})
        rows.insert_ignore(
            conn, s.submit_envs, [{"submit_id": submit_id, "env_id": e} for e in env_ids]
        )
        return submit_id


def record_job_start(
    engine: Engine,
    *,
    uuid: str,
    submit_uuid: str,
    package_name: str,
    package_version: str,
    image: str,
    endpoint: str,
    container_id: str,
    script: str,
    env: Mapping[str, str] | None = None,
    build_key: str | None = None,
    build_key_inputs: Any = None,
    image_digest: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    try_number: int | None = None,
    started_at: datetime | None = None,
) -> int:
    """Write (or, on a retry, reset) the job row as running; returns its id.

    ``build_key_inputs`` is a build_key.BuildKeyInputs, a mapping or a JSON string.
    """
    values = {
        "endpoint_id": None,
        "container_hash": container_id or "",
        "script_text": script,
        "log_text": "",
        "state": s.RUNNING,
        "exit_status": None,
        "failure_class": None,
        "started_at": started_at or rows.utcnow(),
        "finished_at": None,
        "dag_id": dag_id,
        "run_id": run_id,
        "try_number": try_number,
        "image_digest": image_digest,
        "build_key": build_key,
        "build_key_inputs": _inputs_json(build_key_inputs),
        "reused_from_job_id": None,
        "reuse_reason": None,
    }
    with transaction(engine, immediate=True) as conn:
        values["endpoint_id"] = rows.endpoint_id(conn, endpoint)
        return _upsert_job(
            conn, uuid, submit_uuid, package_name, package_version, image, env, values
        )


def _upsert_job(
    conn: Connection,
    uuid: str,
    submit_uuid: str,
    package_name: str,
    package_version: str,
    image: str,
    env: Mapping[str, str] | None,
    values: dict[str, Any],
) -> int:
    values = {
        **values,
        "submit_id": _submit_id(conn, submit_uuid),
        "package_id": rows.package_id(conn, package_name, package_version),
        "image_id": rows.image_id(conn, image),
    }
    rows.insert_ignore(conn, s.jobs, {**values, "uuid": uuid})
    conn.execute(sa.update(s.jobs).where(s.jobs.c.uuid == uuid).values(**values))
    job_id = _require_job_id(conn, uuid)
    env_ids = rows.envvar_ids(conn, env or {})
    rows.insert_ignore(conn, s.job_envs, [{"job_id": job_id, "env_id": e} for e in env_ids])
    return job_id


def record_job_finish(
    engine: Engine,
    *,
    uuid: str,
    state: str,
    exit_status: int | None,
    failure_class: str | None = None,
    log: LogSource = None,
    finished_at: datetime | None = None,
) -> None:
    """Complete the job row: outcome and the full log (NUL bytes removed).

    ``log`` may be a str, bytes, a path or an open file (text or binary); it is
    written in chunks of LOG_CHUNK_CHARS, so a 100 MB log is never held whole.
    """
    if state not in (s.SUCCESS, s.FAILED):
        raise ValueError(f"a finished job is {s.SUCCESS!r} or {s.FAILED!r}, not {state!r}")
    with transaction(engine, immediate=True) as conn:
        job_id = _require_job_id(conn, uuid)
        conn.execute(
            sa.update(s.jobs)
            .where(s.jobs.c.id == job_id)
            .values(
                state=state,
                exit_status=exit_status,
                failure_class=failure_class,
                finished_at=finished_at or rows.utcnow(),
                log_text="",
            )
        )
        for chunk in iter_log_chunks(log):
            conn.execute(
                sa.update(s.jobs)
                .where(s.jobs.c.id == job_id)
                .values(log_text=s.jobs.c.log_text + sa.bindparam("chunk", type_=sa.Text)),
                {"chunk": chunk},
            )


def iter_log_chunks(log: LogSource, chunk_chars: int = LOG_CHUNK_CHARS) -> Iterator[str]:
    """The log as text chunks without NUL characters; invalid UTF-8 is replaced."""
    if log is None:
        return
    if isinstance(log, str):
        for start in range(0, len(log), chunk_chars):
            yield log[start : start + chunk_chars].replace("\x00", "")
        return
    if isinstance(log, bytes | bytearray | memoryview):
        yield from iter_log_chunks(io.BytesIO(bytes(log)), chunk_chars)
        return
    if isinstance(log, os.PathLike):
        with open(log, "rb") as fh:
            yield from iter_log_chunks(fh, chunk_chars)
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        data = log.read(chunk_chars)
        if not data:
            break
        text = data if isinstance(data, str) else decoder.decode(data)
        if text:
            yield text.replace("\x00", "")
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail.replace("\x00", "")


def record_artifacts(
    engine: Engine, job_uuid: str, artifacts: Iterable[ArtifactRecord | _ArtifactLike]
) -> None:
    """One row per output file of the job (path, sha256, size); repeatable."""
    with transaction(engine, immediate=True) as conn:
        job_id = _require_job_id(conn, job_uuid)
        for artifact in artifacts:
            rows.insert_ignore(
                conn,
                s.artifacts,
                {
                    "path": artifact.path,
                    "job_id": job_id,
                    "sha256": artifact.sha256,
                    "size": artifact.size,
                },
            )
            conn.execute(
                sa.update(s.artifacts)
                .where(s.artifacts.c.job_id == job_id, s.artifacts.c.path == artifact.path)
                .values(sha256=artifact.sha256, size=artifact.size)
            )


def record_inputs(engine: Engine, job_uuid: str, inputs: Iterable[InputRef]) -> list[InputRef]:
    """Link the job to the artifacts it consumed; returns the refs not found."""
    missing: list[InputRef] = []
    with transaction(engine, immediate=True) as conn:
        job_id = _require_job_id(conn, job_uuid)
        for ref in inputs:
            artifact_id = _find_artifact(conn, ref)
            if artifact_id is None:
                missing.append(ref)
                continue
            rows.insert_ignore(conn, s.job_inputs, {"job_id": job_id, "artifact_id": artifact_id})
    return missing


def _find_artifact(conn: Connection, ref: InputRef) -> int | None:
    a = s.artifacts
    query = sa.select(a.c.id).where(a.c.path == ref.path)
    if ref.job_uuid:
        query = query.join(s.jobs, s.jobs.c.id == a.c.job_id).where(s.jobs.c.uuid == ref.job_uuid)
    if ref.sha256:
        query = query.where(a.c.sha256 == ref.sha256)
    found = conn.execute(query.order_by(a.c.id.desc()).limit(1)).scalar()
    return None if found is None else int(found)


def record_reused_job(
    engine: Engine,
    *,
    uuid: str,
    submit_uuid: str,
    package_name: str,
    package_version: str,
    image: str,
    reused_job_uuid: str,
    reason: str,
    script: str = "",
    env: Mapping[str, str] | None = None,
    build_key: str | None = None,
    build_key_inputs: Any = None,
    image_digest: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    try_number: int | None = None,
) -> int:
    """A job that ran no container because an earlier job's artifacts were reused."""
    job = ReusedJob(
        uuid, submit_uuid, package_name, package_version, image, reused_job_uuid, reason,
        script, dict(env or {}), build_key, build_key_inputs, image_digest, dag_id, run_id,
        try_number,
    )  # fmt: skip
    return record_reused_jobs(engine, [job])[0]


@dataclass(frozen=True)
class ReusedJob:
    """The record of a job satisfied by an earlier job's artifacts (see record_reused_job)."""

    uuid: str
    submit_uuid: str
    package_name: str
    package_version: str
    image: str
    reused_job_uuid: str
    reason: str
    script: str = ""
    env: Mapping[str, str] | None = None
    build_key: str | None = None
    build_key_inputs: Any = None
    image_digest: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    try_number: int | None = None


def record_reused_jobs(engine: Engine, jobs: Iterable[ReusedJob]) -> list[int]:
    """Many reused jobs in one transaction (a plan reusing a whole repository up front)."""
    now = rows.utcnow()
    ids = []
    with transaction(engine, immediate=True) as conn:
        endpoint = rows.endpoint_id(conn, s.REUSED_ENDPOINT)
        for job in jobs:
            reused_id = _job_id(conn, job.reused_job_uuid)
            if reused_id is None:
                raise RecordError(
                    f"reused job {job.reused_job_uuid} is not recorded in the database"
                )
            values = {
                "container_hash": "",
                "script_text": job.script,
                "log_text": "",
                "state": s.REUSED,
                "exit_status": None,
                "failure_class": None,
                "started_at": now,
                "finished_at": now,
                "dag_id": job.dag_id,
                "run_id": job.run_id,
                "try_number": job.try_number,
                "image_digest": job.image_digest,
                "build_key": job.build_key,
                "build_key_inputs": _inputs_json(job.build_key_inputs),
                "reuse_reason": job.reason,
                "reused_from_job_id": reused_id,
                "endpoint_id": endpoint,
            }
            ids.append(
                _upsert_job(
                    conn,
                    job.uuid,
                    job.submit_uuid,
                    job.package_name,
                    job.package_version,
                    job.image,
                    job.env,
                    values,
                )  # fmt: skip
            )
    return ids


def mark_orphaned_jobs(
    engine: Engine, dag_id: str, run_id: str, *, keep: Iterable[tuple[str, str]] = ()
) -> int:
    """Mark the still-running jobs of an ended DAG run failed ("orphaned") and free
    their endpoint slots and build-key claims; returns how many were marked.

    ``keep`` names packages (name, version) whose tasks are still in progress: a final
    task may start while another branch of the run still builds, and those jobs are
    alive."""
    kept = {(str(n), str(v)) for n, v in keep}
    with transaction(engine, immediate=True) as conn:
        uuids = [
            str(row.uuid)
            for row in conn.execute(
                sa.select(s.jobs.c.uuid, s.packages.c.name, s.packages.c.version)
                .join(s.packages, s.packages.c.id == s.jobs.c.package_id)
                .where(
                    s.jobs.c.dag_id == dag_id,
                    s.jobs.c.run_id == run_id,
                    s.jobs.c.state == s.RUNNING,
                )
            )
            if (row.name, row.version) not in kept
        ]
        return _orphan(conn, uuids)


def mark_earlier_tries_failed(
    engine: Engine,
    *,
    dag_id: str,
    run_id: str,
    package_name: str,
    package_version: str,
    try_number: int,
) -> int:
    """A task retry starts: the jobs its earlier tries left running died with them. They
    become failed ("orphaned"), and their slot and build-key claim are freed at once, so
    the retry does not wait for its own dead claim to expire."""
    with transaction(engine, immediate=True) as conn:
        uuids = [
            str(u)
            for u in conn.execute(
                sa.select(s.jobs.c.uuid)
                .join(s.packages, s.packages.c.id == s.jobs.c.package_id)
                .where(
                    s.jobs.c.dag_id == dag_id,
                    s.jobs.c.run_id == run_id,
                    s.jobs.c.state == s.RUNNING,
                    s.jobs.c.try_number < try_number,
                    s.packages.c.name == package_name,
                    s.packages.c.version == package_version,
                )
            ).scalars()
        ]
        return _orphan(conn, uuids)


def _orphan(conn: Connection, uuids: list[str]) -> int:
    if not uuids:
        return 0
    conn.execute(
        sa.update(s.jobs)
        .where(s.jobs.c.uuid.in_(uuids), s.jobs.c.state == s.RUNNING)
        .values(state=s.FAILED, failure_class="orphaned", finished_at=rows.utcnow())
    )
    conn.execute(sa.delete(s.endpoint_leases).where(s.endpoint_leases.c.job_uuid.in_(uuids)))
    conn.execute(sa.delete(s.build_claims).where(s.build_claims.c.job_uuid.in_(uuids)))
    return len(uuids)


@dataclass(frozen=True)
class PackageOutcomeRecord:
    """How one package of a submit ended (one of ``schema.SUBMIT_OUTCOMES``)."""

    name: str
    version: str
    outcome: str
    message: str | None = None


def record_outcomes(
    engine: Engine, submit_uuid: str, outcomes: Iterable[PackageOutcomeRecord]
) -> int:
    """Every package of a submit with how it ended, in one transaction; recording again
    (a retried report) replaces the earlier rows. Returns the number of rows."""
    rows_ = list(outcomes)
    for row in rows_:
        if row.outcome not in s.SUBMIT_OUTCOMES:
            raise ValueError(f"unknown outcome {row.outcome!r}")
    with transaction(engine, immediate=True) as conn:
        submit_id = _submit_id(conn, submit_uuid)
        ids = rows.package_ids(conn, [(r.name, r.version) for r in rows_])
        table = s.submit_packages
        conn.execute(sa.delete(table).where(table.c.submit_id == submit_id))
        values = [
            {
                "submit_id": submit_id,
                "package_id": ids[(r.name, r.version)],
                "outcome": r.outcome,
                "message": r.message,
            }
            for r in rows_
        ]
        for start in range(0, len(values), 1000):
            conn.execute(sa.insert(table), values[start : start + 1000])
    return len(rows_)
