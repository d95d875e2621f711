"""Writing the build record: submits, jobs (start, finish, reuse), logs, artifacts,
consumed inputs, and repair of jobs left running by a dead run.

Every writer is idempotent for a task retry: the same submit or job UUID recorded
twice updates the one row instead of adding another. A lost database connection
raises InfrastructureError (see engine.transaction).
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import io
import itertools
import json
import os
import time
import uuid as uuid_module
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_butido.db import rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction
from airflow_butido.errors import ButidoError

LOG_CHUNK_CHARS = 1 << 20  # one row of job_log_chunks
LOG_CHUNKS_PER_TRANSACTION = 4
LOG_TEXT_MAX_CHARS = 1 << 20  # jobs.log_text holds a longer log's end only
LOG_CUT_MARKER = (
    "#airflow-butido: the beginning of this log is cut here; 'butido db log-of' shows it whole"
)
HEARTBEAT_TTL_SECONDS = 20.0  # a running job not heard of for this long is dead
ABANDONED = "abandoned"  # failure class of a job whose process died
ARTIFACT_BATCH = 500  # artifact rows per transaction

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
    inputs: Iterable[InputRef] = (),
    missing_inputs: list[InputRef] | None = None,
) -> int:
    """Write (or, on a retry, reset) the job row as running; returns its id.

    ``build_key_inputs`` is a build_key.BuildKeyInputs, a mapping or a JSON string.
    ``inputs`` are linked to the job in the same transaction (see record_inputs); those
    without an artifact record are added to ``missing_inputs``.
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
        "heartbeat_at": started_at or rows.utcnow(),
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
        job_id = _upsert_job(
            conn, uuid, submit_uuid, package_name, package_version, image, env, values
        )
        missing = _link_inputs(conn, job_id, inputs) if inputs else []
    if missing_inputs is not None:
        missing_inputs.extend(missing)
    return job_id


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
    job_id = rows.upsert_id(conn, s.jobs, "uuid", {**values, "uuid": uuid})
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
    artifacts: Sequence[ArtifactRecord | _ArtifactLike] | None = None,
    finished_at: datetime | None = None,
    phase_seconds: Mapping[str, float] | Callable[[], Mapping[str, float]] | None = None,
) -> None:
    """Complete the job row: outcome, the full log (NUL bytes removed), its artifacts,
    the seconds of each phase (a callable is called in the last transaction, so the
    time spent recording counts too).

    ``log`` may be a str, bytes, a path or an open file (text or binary). It is stored in
    chunks of LOG_CHUNK_CHARS, committed a few at a time, so neither this process nor
    the database ever holds the whole log, and no transaction is long. A log longer
    than one chunk lives in ``job_log_chunks``; ``jobs.log_text`` then holds its end
    after a marker line (butido reads its outcome from there).

    ``artifacts`` are recorded in batches of ARTIFACT_BATCH rows, one transaction each;
    the last batch is written in the transaction that sets the state, so a job is
    ``success`` only with all its artifacts recorded.
    """
    if state not in (s.SUCCESS, s.FAILED):
        raise ValueError(f"a finished job is {s.SUCCESS!r} or {s.FAILED!r}, not {state!r}")
    chunks = iter_log_chunks(log, LOG_CHUNK_CHARS)
    first = next(chunks, "")
    second = next(chunks, None)
    if second is None and len(artifacts or ()) <= ARTIFACT_BATCH:
        # the common case, a log of one chunk: one transaction for all of it
        job_id = None
        log_text = first
        last = list(artifacts or ())
    else:
        with transaction(engine) as conn:
            job_id = _require_job_id(conn, uuid)
        rest = chunks if second is None else itertools.chain((second,), chunks)
        log_text = _store_log(engine, job_id, itertools.chain((first,), rest))
        last = _record_artifact_batches(engine, job_id, artifacts or ())
    with transaction(engine, immediate=True) as conn:
        if job_id is None:
            job_id = _require_job_id(conn, uuid)
            _delete_log_chunks(conn, job_id)  # a retry replaces the old log
        _insert_artifacts(conn, job_id, last)
        conn.execute(
            sa.update(s.jobs)
            .where(s.jobs.c.id == job_id)
            .values(
                state=state,
                exit_status=exit_status,
                failure_class=failure_class,
                finished_at=finished_at or rows.utcnow(),
                log_text=log_text,
                **_phases_value(phase_seconds),
            )
        )


def record_phase_seconds(engine: Engine, uuid: str, phase_seconds: Mapping[str, float]) -> None:
    """Replace the seconds of each phase of a recorded job (its container's removal comes
    after the record); a job not recorded is left alone."""
    values = _phases_value(phase_seconds)
    if values:
        with transaction(engine) as conn:
            conn.execute(sa.update(s.jobs).where(s.jobs.c.uuid == uuid).values(**values))


def _phases_value(
    phase_seconds: Mapping[str, float] | Callable[[], Mapping[str, float]] | None,
) -> dict[str, str]:
    """``{"phase_seconds": JSON}``, or nothing when there are none (keeps an earlier value)."""
    found = phase_seconds() if callable(phase_seconds) else phase_seconds
    return {"phase_seconds": json.dumps(dict(found))} if found else {}


def _delete_log_chunks(conn: Connection, job_id: int) -> None:
    conn.execute(sa.delete(s.job_log_chunks).where(s.job_log_chunks.c.job_id == job_id))


def _store_log(engine: Engine, job_id: int, chunks: Iterator[str]) -> str:
    """Write the log's chunks (when more than one); return the text for jobs.log_text."""
    first = next(chunks, "")
    second = next(chunks, None)
    with transaction(engine, immediate=True) as conn:  # a retry replaces the old log
        _delete_log_chunks(conn, job_id)
    if second is None:
        return first
    tail: collections.deque[str] = collections.deque(maxlen=2)
    batch: list[dict[str, Any]] = []
    for seq, chunk in enumerate(itertools.chain((first, second), chunks)):
        tail.append(chunk)
        batch.append({"job_id": job_id, "seq": seq, "text": chunk})
        if len(batch) >= LOG_CHUNKS_PER_TRANSACTION:
            _insert_log_chunks(engine, batch)
            batch = []
    _insert_log_chunks(engine, batch)
    end = "".join(tail)[-LOG_TEXT_MAX_CHARS:]
    newline = end.find("\n")
    return LOG_CUT_MARKER + "\n" + (end[newline + 1 :] if newline >= 0 else end)


def _insert_log_chunks(engine: Engine, batch: list[dict[str, Any]]) -> None:
    if batch:
        with _short_write(engine) as conn:
            conn.execute(sa.insert(s.job_log_chunks), batch)


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
    """One row per output file of the job (path, sha256, size); repeatable.

    Written ARTIFACT_BATCH rows per transaction: SQLite's one write lock is never held
    for long, so concurrent builds can take their slots meanwhile."""
    with transaction(engine) as conn:
        job_id = _require_job_id(conn, job_uuid)
    last = _record_artifact_batches(engine, job_id, artifacts)
    with transaction(engine, immediate=True) as conn:
        _insert_artifacts(conn, job_id, last)


def _record_artifact_batches(
    engine: Engine, job_id: int, artifacts: Iterable[ArtifactRecord | _ArtifactLike]
) -> list[ArtifactRecord | _ArtifactLike]:
    """Record all but the last batch, each in its own transaction; return the last."""
    batch: list[ArtifactRecord | _ArtifactLike] = []
    for artifact in artifacts:
        if len(batch) >= ARTIFACT_BATCH:
            with _short_write(engine) as conn:
                _insert_artifacts(conn, job_id, batch)
            batch = []
        batch.append(artifact)
    return batch


@contextlib.contextmanager
def _short_write(engine: Engine) -> Iterator[Connection]:
    """One of many write transactions in a row. On SQLite, whose single write lock a
    waiting writer only retries now and then, pause afterwards as long as the lock was
    held, so a concurrent build's slot or claim gets through instead of starving."""
    started = time.monotonic()
    with transaction(engine, immediate=True) as conn:
        yield conn
    if engine.dialect.name == "sqlite":
        time.sleep(max(time.monotonic() - started, 0.002))


def _insert_artifacts(
    conn: Connection, job_id: int, batch: Sequence[ArtifactRecord | _ArtifactLike]
) -> None:
    if not batch:
        return
    a = s.artifacts
    paths = [artifact.path for artifact in batch]
    known = dict(
        conn.execute(
            sa.select(a.c.path, a.c.id).where(a.c.job_id == job_id, a.c.path.in_(paths))
        ).all()
    )
    fresh = [
        {"path": x.path, "job_id": job_id, "sha256": x.sha256, "size": x.size}
        for x in batch
        if x.path not in known
    ]
    if fresh:
        conn.execute(sa.insert(a), fresh)
    for x in batch:
        if x.path in known:
            conn.execute(
                sa.update(a).where(a.c.id == known[x.path]).values(sha256=x.sha256, size=x.size)
            )


def record_inputs(engine: Engine, job_uuid: str, inputs: Iterable[InputRef]) -> list[InputRef]:
    """Link the job to the artifacts it consumed; returns the refs not found.

    A package receives the artifacts of all its transitive dependencies, hundreds in a big
    repository: they are looked up a few hundred producing jobs per query and linked with
    one statement per JOB_BATCH rows, not two round trips each.
    """
    with transaction(engine, immediate=True) as conn:
        return _link_inputs(conn, _require_job_id(conn, job_uuid), inputs)


def _link_inputs(conn: Connection, job_id: int, inputs: Iterable[InputRef]) -> list[InputRef]:
    refs = list(dict.fromkeys(inputs))
    missing: list[InputRef] = []
    found = _find_artifacts(conn, [r for r in refs if r.job_uuid])
    artifact_ids: dict[int, None] = {}
    for ref in refs:
        artifact_id = found.get(ref) if ref.job_uuid else _find_artifact(conn, ref)
        if artifact_id is None:
            missing.append(ref)
        else:
            artifact_ids[artifact_id] = None
    links = [{"job_id": job_id, "artifact_id": a} for a in artifact_ids]
    for start in range(0, len(links), JOB_BATCH):
        rows.insert_ignore(conn, s.job_inputs, links[start : start + JOB_BATCH])
    return missing


def _find_artifacts(conn: Connection, refs: Sequence[InputRef]) -> dict[InputRef, int]:
    """The newest artifact row of each ref's producing job, path and (when given) sha256."""
    a = s.artifacts
    job_ids = _job_ids(conn, [str(r.job_uuid) for r in refs])
    rows_of: dict[tuple[int, str], list[tuple[int, str]]] = collections.defaultdict(list)
    wanted = sorted(set(job_ids.values()))
    for start in range(0, len(wanted), JOB_BATCH):
        query = sa.select(a.c.id, a.c.job_id, a.c.path, a.c.sha256).where(
            a.c.job_id.in_(wanted[start : start + JOB_BATCH])
        )
        for row in conn.execute(query):
            rows_of[(int(row.job_id), str(row.path))].append((int(row.id), str(row.sha256)))
    found: dict[InputRef, int] = {}
    for ref in refs:
        job_id = job_ids.get(str(ref.job_uuid))
        if job_id is None:
            continue
        ids = [
            artifact_id
            for artifact_id, sha256 in rows_of.get((job_id, ref.path), ())
            if not ref.sha256 or sha256 == ref.sha256
        ]
        if ids:
            found[ref] = max(ids)
    return found


def _find_artifact(conn: Connection, ref: InputRef) -> int | None:
    """The newest artifact row with the ref's path (and sha256): a ref without its job."""
    a = s.artifacts
    query = sa.select(a.c.id).where(a.c.path == ref.path)
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
    phase_seconds: Mapping[str, float] | None = None,
) -> int:
    """A job that ran no container because an earlier job's artifacts were reused."""
    job = ReusedJob(
        uuid, submit_uuid, package_name, package_version, image, reused_job_uuid, reason,
        script, dict(env or {}), build_key, build_key_inputs, image_digest, dag_id, run_id,
        try_number, phase_seconds,
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
    phase_seconds: Mapping[str, float] | None = None


def record_reused_jobs(engine: Engine, jobs: Iterable[ReusedJob]) -> list[int]:
    """Many reused jobs in one transaction (a plan reusing a whole repository up front),
    with a few statements per few hundred jobs rather than several per job."""
    jobs = list(jobs)
    if not jobs:
        return []
    now = rows.utcnow()
    with transaction(engine, immediate=True) as conn:
        endpoint = rows.endpoint_id(conn, s.REUSED_ENDPOINT)
        submits = {u: _submit_id(conn, u) for u in sorted({j.submit_uuid for j in jobs})}
        images = {name: rows.image_id(conn, name) for name in sorted({j.image for j in jobs})}
        packages = rows.package_ids(conn, [(j.package_name, j.package_version) for j in jobs])
        reused_ids = _job_ids(conn, [j.reused_job_uuid for j in jobs])
        missing = next(
            (j.reused_job_uuid for j in jobs if j.reused_job_uuid not in reused_ids), None
        )
        if missing is not None:
            raise RecordError(f"reused job {missing} is not recorded in the database")
        env_ids: dict[tuple[str, str], int] = {}
        values: dict[str, dict[str, Any]] = {}
        for job in jobs:
            for pair in (job.env or {}).items():
                if pair not in env_ids:
                    env_ids[pair] = rows.envvar_ids(conn, dict([pair]))[0]
            values[job.uuid] = {
                "uuid": job.uuid,
                "submit_id": submits[job.submit_uuid],
                "package_id": packages[(job.package_name, job.package_version)],
                "image_id": images[job.image],
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
                "reused_from_job_id": reused_ids[job.reused_job_uuid],
                "endpoint_id": endpoint,
                "phase_seconds": _phases_value(job.phase_seconds).get("phase_seconds"),
            }
        existing = _job_ids(conn, list(values))
        fresh = [v for u, v in values.items() if u not in existing]
        for start in range(0, len(fresh), JOB_BATCH):
            rows.insert_ignore(conn, s.jobs, fresh[start : start + JOB_BATCH])
        for job_uuid in existing:  # recorded again (a retried plan): the row is reset
            update = dict(values[job_uuid])
            if update["phase_seconds"] is None:
                del update["phase_seconds"]  # keeps an earlier value
            conn.execute(sa.update(s.jobs).where(s.jobs.c.uuid == job_uuid).values(**update))
        ids = _job_ids(conn, list(values))
        links = [
            {"job_id": ids[job.uuid], "env_id": env_ids[pair]}
            for job in jobs
            for pair in sorted((job.env or {}).items())
        ]
        for start in range(0, len(links), JOB_BATCH):
            rows.insert_ignore(conn, s.job_envs, links[start : start + JOB_BATCH])
    return [ids[job.uuid] for job in jobs]


JOB_BATCH = 500  # rows per statement: well below SQLite's and PostgreSQL's parameter limits


def _job_ids(conn: Connection, uuids: Sequence[str]) -> dict[str, int]:
    """The ids of the recorded jobs among ``uuids``, by the uuids as given."""
    found: dict[str, int] = {}
    wanted = sorted(set(uuids))
    for start in range(0, len(wanted), JOB_BATCH):
        chunk = wanted[start : start + JOB_BATCH]
        query = sa.select(s.jobs.c.uuid, s.jobs.c.id).where(s.jobs.c.uuid.in_(chunk))
        found.update((str(row.uuid), int(row.id)) for row in conn.execute(query))
    ids = {u: found[u] for u in wanted if u in found}  # as the database writes them
    for u in set(wanted) - set(ids):  # written another way (upper case, no dashes)
        if _canonical(u) in found:
            ids[u] = found[_canonical(u)]
    return ids


def _canonical(text: str) -> str:
    try:
        return str(uuid_module.UUID(str(text)))
    except ValueError:
        return str(text)


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


def job_uuids(values: Iterable[str]) -> list[str]:
    """The values that are UUIDs: slot leases and claims take any job name, job rows
    only UUIDs (PostgreSQL refuses to compare its uuid column with anything else)."""
    found = []
    for value in values:
        try:
            found.append(str(uuid_module.UUID(str(value))))
        except ValueError:
            continue
    return found


def record_heartbeat(conn: Connection, job_uuid: str) -> None:
    """The job's process is alive (see repair_abandoned); part of its slot's renewal."""
    if not job_uuids([job_uuid]):
        return
    conn.execute(
        sa.update(s.jobs)
        .where(s.jobs.c.uuid == job_uuid, s.jobs.c.state == s.RUNNING)
        .values(heartbeat_at=rows.utcnow())
    )


# when this process last repaired through each engine (repair_abandoned's unless_within)
_repaired_at: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Repaired:
    """What ``repair_abandoned`` freed: jobs marked failed, leases and claims deleted."""

    jobs: tuple[str, ...]
    leases: int
    claims: int


def repair_abandoned(
    engine: Engine,
    *,
    ttl_seconds: float = HEARTBEAT_TTL_SECONDS,
    now: datetime | None = None,
    unless_within: float = 0.0,
) -> Repaired:
    """A job whose process died (``kill -9``, a lost host, a lost database connection)
    stops beating. Once its heartbeat is ``ttl_seconds`` old, or its slot lease has
    expired, its ``running`` row becomes failed ("abandoned"), and its slot lease and
    build claim are deleted, as are all expired leases and claims. Called at the start
    of every build, and by ``butido db repair``.

    With ``unless_within``, nothing is done (and nothing reported) when this process
    repaired through ``engine`` less than that many seconds ago: a job's slot lease
    follows its build claim by a moment, and a heartbeat is seconds old before it counts.
    """
    started = time.monotonic()
    if unless_within > 0 and started - _repaired_at.get(engine, -1e9) < unless_within:
        return Repaired((), 0, 0)
    now = now or rows.utcnow()
    cutoff = now - timedelta(seconds=ttl_seconds)
    j, lease = s.jobs, s.endpoint_leases
    last_beat = sa.func.coalesce(j.c.heartbeat_at, j.c.started_at)
    with transaction(engine, immediate=True) as conn:
        # A job holds its slot from before its row is written until after it is finished:
        # a running job without a live slot is dead as surely as one that stopped beating.
        leased = {
            str(u)
            for u in conn.execute(
                sa.select(lease.c.job_uuid).where(lease.c.expires_at > now)
            ).scalars()
        }
        uuids = [
            str(row.uuid)
            for row in conn.execute(
                sa.select(j.c.uuid, last_beat.label("beat")).where(j.c.state == s.RUNNING)
            )
            if str(row.uuid) not in leased or rows.as_utc(row.beat) < cutoff
        ]
        if uuids:
            conn.execute(
                sa.update(j)
                .where(j.c.uuid.in_(uuids), j.c.state == s.RUNNING)
                .values(state=s.FAILED, failure_class=ABANDONED, finished_at=now)
            )
        claim = s.build_claims
        leases = conn.execute(
            sa.delete(lease).where(sa.or_(lease.c.expires_at <= now, lease.c.job_uuid.in_(uuids)))
        ).rowcount
        claims = conn.execute(
            sa.delete(claim).where(sa.or_(claim.c.expires_at <= now, claim.c.job_uuid.in_(uuids)))
        ).rowcount
    _repaired_at[engine] = started
    return Repaired(tuple(uuids), int(leases or 0), int(claims or 0))


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
