"""Reading the build record for the ``db`` and ``release`` commands.

Listings return plain frozen rows, newest first, limited by ``limit`` (0 or None =
unlimited). Jobs written by butido 0.5 have no ``state``; theirs is read from the
end of their log (the last ``#BUTIDO:STATE`` line wins).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_butido.db import rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction

if TYPE_CHECKING:
    from airflow_butido.manifest import ArtifactRef
    from airflow_butido.report import Finished

LOG_TAIL_CHARS = 4096
LOG_CHUNKS_PER_READ = 4


def posthoc_state(log_text: str) -> str:
    """ "ok" | "err" | "unknown" from a butido log (the last state line wins)."""
    try:
        from airflow_butido.scripts.logproto import posthoc_state as parsed
    except ImportError:
        return _posthoc_state_fallback(log_text)
    return str(parsed(log_text))


def _posthoc_state_fallback(log_text: str) -> str:
    state = "unknown"
    for line in log_text.splitlines():
        line = line.strip()
        if line.startswith("#BUTIDO:STATE:OK"):
            state = "ok"
        elif line.startswith("#BUTIDO:STATE:ERR"):
            state = "err"
    return state


def display_state(state: str | None, log_tail: str | None) -> str:
    """The state column: ours when recorded, else derived from butido's log."""
    if state:
        return state
    return {"ok": s.SUCCESS, "err": s.FAILED}.get(posthoc_state(log_tail or ""), "unknown")


def _log_tail(conn: Connection) -> Any:
    col = s.jobs.c.log_text
    if conn.dialect.name == "postgresql":
        return sa.func.right(col, LOG_TAIL_CHARS)
    return sa.func.substr(col, -LOG_TAIL_CHARS)


def _limited(query: Any, limit: int | None) -> Any:
    return query.limit(limit) if limit else query


def artifact_type(path: str | None) -> str:
    if not path or "." not in path.rsplit("/", 1)[-1]:
        return ""
    return path.rsplit(".", 1)[-1].upper()


# --- submits ----------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitRow:
    time: datetime
    uuid: str
    package: str
    version: str
    image: str
    commit: str
    dirty: bool


def _submit_query() -> Any:
    sub, p, i, g = s.submits, s.packages, s.images, s.githashes
    return (
        sa.select(
            sub.c.submit_time,
            sub.c.uuid,
            p.c.name,
            p.c.version,
            i.c.name.label("image"),
            g.c.hash,
            sub.c.repo_dirty,
            sub.c.id,
            sub.c.dag_id,
            sub.c.run_id,
        )
        .join(p, p.c.id == sub.c.requested_package_id)
        .join(i, i.c.id == sub.c.requested_image_id)
        .join(g, g.c.id == sub.c.repo_hash_id)
    )


def _submit_row(r: Any) -> SubmitRow:
    return SubmitRow(
        rows.as_utc(r.submit_time), str(r.uuid), r.name, r.version, r.image, r.hash, r.repo_dirty
    )


def list_submits(
    engine: Engine,
    *,
    with_pkg: str | None = None,
    for_pkg: str | None = None,
    commit: str | None = None,
    image: str | None = None,
    limit: int | None = None,
) -> list[SubmitRow]:
    sub, p = s.submits, s.packages
    query = _submit_query()
    if for_pkg:
        query = query.where(p.c.name == for_pkg)
    if with_pkg:
        jp = p.alias("jp")
        query = query.where(
            sa.exists()
            .where(s.jobs.c.submit_id == sub.c.id)
            .where(jp.c.id == s.jobs.c.package_id)
            .where(jp.c.name == with_pkg)
        )
    if commit:
        query = query.where(s.githashes.c.hash.startswith(commit))
    if image:
        query = query.where(s.images.c.name == image)
    query = _limited(query.order_by(sub.c.submit_time.desc(), sub.c.id.desc()), limit)
    with transaction(engine) as conn:
        return [_submit_row(r) for r in conn.execute(query)]


# --- jobs -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    submit_uuid: str
    job_uuid: str
    time: datetime | None
    endpoint: str
    state: str
    package: str
    version: str
    image: str
    artifact: str | None
    exit_status: int | None


def list_jobs(
    engine: Engine,
    *,
    submit: str | None = None,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    endpoint: str | None = None,
    package: str | None = None,
    older_than: datetime | None = None,
    newer_than: datetime | None = None,
    limit: int | None = None,
) -> list[JobRow]:
    """Jobs newest first, one row per artifact (a job without artifacts: one row);
    ``limit`` counts jobs."""
    j, sub, p, i, e, a = s.jobs, s.submits, s.packages, s.images, s.endpoints, s.artifacts
    time_col = sa.func.coalesce(j.c.started_at, sub.c.submit_time)
    with transaction(engine) as conn:
        inner = sa.select(
            j.c.id,
            j.c.uuid,
            j.c.state,
            j.c.exit_status,
            j.c.package_id,
            j.c.image_id,
            j.c.endpoint_id,
            time_col.label("time"),
            sub.c.uuid.label("submit_uuid"),
            sa.case((j.c.state.is_(None), _log_tail(conn)), else_=None).label("log_tail"),
        ).join(sub, sub.c.id == j.c.submit_id)
        if submit:
            inner = inner.where(sub.c.uuid == submit)
        if image:
            inner = inner.where(j.c.image_id.in_(sa.select(i.c.id).where(i.c.name == image)))
        if endpoint:
            inner = inner.where(j.c.endpoint_id.in_(sa.select(e.c.id).where(e.c.name == endpoint)))
        if package:
            inner = inner.where(j.c.package_id.in_(sa.select(p.c.id).where(p.c.name == package)))
        for name, value in (env or {}).items():
            inner = inner.where(
                sa.exists()
                .where(s.job_envs.c.job_id == j.c.id)
                .where(s.envvars.c.id == s.job_envs.c.env_id)
                .where(s.envvars.c.name == name, s.envvars.c.value == value)
            )
        if older_than:
            inner = inner.where(time_col < older_than)
        if newer_than:
            inner = inner.where(time_col > newer_than)
        inner = _limited(inner.order_by(j.c.id.desc()), limit).subquery("j")
        query = (
            sa.select(
                inner,
                p.c.name,
                p.c.version,
                i.c.name.label("image"),
                e.c.name.label("endpoint"),
                a.c.path,
            )
            .join(p, p.c.id == inner.c.package_id)
            .join(i, i.c.id == inner.c.image_id)
            .join(e, e.c.id == inner.c.endpoint_id)
            .outerjoin(a, a.c.job_id == inner.c.id)
            .order_by(inner.c.id.desc(), a.c.path)
        )
        return [
            JobRow(
                str(r.submit_uuid),
                str(r.uuid),
                rows.as_utc(r.time),
                r.endpoint,
                display_state(r.state, r.log_tail),
                r.name,
                r.version,
                r.image,
                r.path,
                r.exit_status,
            )
            for r in conn.execute(query)
        ]


FINISHED_BATCH = 500  # job ids per IN list: below SQLite's oldest parameter limit (999)
Package = tuple[str, str]  # (name, version)


def _producers(
    conn: Connection, submit_uuid: str, packages: Sequence[Package] | None = None
) -> dict[Package, tuple[bool, int | None]]:
    """For the newest successful or reused job of each package of ``submit_uuid`` (of
    ``packages`` only, when given; a later try wins): whether it reused, and the job that
    built its artifacts (for a reused job the earlier build, None when not recorded)."""
    j, sub, p = s.jobs, s.submits, s.packages
    query = (
        sa.select(p.c.name, p.c.version, j.c.id, j.c.state, j.c.reused_from_job_id)
        .join(sub, sub.c.id == j.c.submit_id)
        .join(p, p.c.id == j.c.package_id)
        .where(sub.c.uuid == submit_uuid, j.c.state.in_((s.SUCCESS, s.REUSED)))
    )
    if packages is None:
        found = list(conn.execute(query))
    else:
        wanted, found = sorted(set(packages)), []
        step = FINISHED_BATCH // 2  # two parameters per package
        for start in range(0, len(wanted), step):
            batch = wanted[start : start + step]
            found += conn.execute(query.where(sa.tuple_(p.c.name, p.c.version).in_(batch)))
    newest = {(r.name, r.version): r for r in sorted(found, key=lambda r: r.id)}
    return {
        key: (r.state == s.REUSED, r.reused_from_job_id if r.state == s.REUSED else r.id)
        for key, r in newest.items()
    }


def _batches(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), FINISHED_BATCH):
        yield ids[start : start + FINISHED_BATCH]


def finished_jobs(engine: Engine, submit_uuid: str) -> dict[Package, Finished]:
    """The newest successful or reused job of every package of ``submit_uuid``, by
    (name, version): built or reused at run time, and its artifacts (a reused job's are
    those of the earlier build it reused). What a run's report needs, in a query for the
    jobs and one per 500 of them for the artifacts, however many packages the run has.
    A reused job whose earlier build is not recorded is left out."""
    from airflow_butido.report import Finished  # not on the db commands' start-up path

    a = s.artifacts
    with transaction(engine) as conn:
        producers = _producers(conn, submit_uuid)
        ids = sorted({job_id for _, job_id in producers.values() if job_id is not None})
        paths: dict[int, list[str]] = {job_id: [] for job_id in ids}
        for batch in _batches(ids):
            for job_id, path in conn.execute(
                sa.select(a.c.job_id, a.c.path)
                .where(a.c.job_id.in_(batch))
                .order_by(a.c.job_id, a.c.path)
            ):
                paths[job_id].append(path)
    return {
        key: Finished(reused, tuple(paths[job_id]))
        for key, (reused, job_id) in producers.items()
        if job_id is not None
    }


def delivered_artifacts(
    engine: Engine, submit_uuid: str, packages: Sequence[Package]
) -> list[ArtifactRef] | None:
    """The artifacts of ``packages`` in the run of ``submit_uuid``: those of each one's
    newest successful job, or for a reused one of the earlier build, with the submit and
    job that produced them. What a package task receives from its dependencies, read in
    two queries (per 250 packages) where their manifests are an XCom request each.

    None when the record cannot tell: a package without such a job, a reused one whose
    earlier build is not recorded, an artifact recorded without its hash or size.
    """
    from airflow_butido.manifest import ArtifactRef

    a, j, sub = s.artifacts, s.jobs, s.submits
    with transaction(engine) as conn:
        producers = _producers(conn, submit_uuid, packages)
        if set(producers) != set(packages) or any(i is None for _, i in producers.values()):
            return None
        ids = sorted({job_id for _, job_id in producers.values() if job_id is not None})
        refs: list[ArtifactRef] = []
        for batch in _batches(ids):
            for row in conn.execute(
                sa.select(a.c.path, a.c.sha256, a.c.size, j.c.uuid, sub.c.uuid.label("submit"))
                .join(j, j.c.id == a.c.job_id)
                .join(sub, sub.c.id == j.c.submit_id)
                .where(a.c.job_id.in_(batch))
                .order_by(a.c.job_id, a.c.path)
            ):
                if row.sha256 is None or row.size is None:
                    return None
                refs.append(
                    ArtifactRef(row.path, row.sha256, row.size, str(row.submit), str(row.uuid))
                )
    return refs


@dataclass(frozen=True)
class JobDetail:
    uuid: str
    submit_uuid: str
    package: str
    version: str
    image: str
    endpoint: str
    container: str
    state: str
    exit_status: int | None
    failure_class: str | None
    started_at: datetime | None
    finished_at: datetime | None
    submit_time: datetime
    dag_id: str | None
    run_id: str | None
    try_number: int | None
    image_digest: str | None
    build_key: str | None
    build_key_inputs: str | None
    reused_from: str | None
    reuse_reason: str | None
    script: str
    log: str
    env: tuple[tuple[str, str], ...]
    artifacts: tuple[tuple[str, str | None, int | None], ...]
    inputs: tuple[str, ...]
    phase_seconds: dict[str, float] = field(default_factory=dict)  # see jobs.PhaseTimer


def job_log(conn: Connection, job_id: int, log_text: str) -> str:
    """The whole log of a job: its chunks when it has them, else ``jobs.log_text``."""
    return "".join(iter_job_log(conn, job_id, log_text))


def iter_job_log(conn: Connection, job_id: int, log_text: str) -> Iterator[str]:
    """The log of a job chunk by chunk (see record_job_finish)."""
    c = s.job_log_chunks.c
    last = -1
    while True:
        found = conn.execute(
            sa.select(c.seq, c.text)
            .where(c.job_id == job_id, c.seq > last)
            .order_by(c.seq)
            .limit(LOG_CHUNKS_PER_READ)
        ).all()
        if not found:
            break
        for seq, text in found:
            last = seq
            yield text
    if last < 0:
        yield log_text


def job_detail(engine: Engine, uuid: str, *, with_log: bool = True) -> JobDetail | None:
    j, sub, p, i, e = s.jobs, s.submits, s.packages, s.images, s.endpoints
    orig = j.alias("orig")
    log_col = j.c.log_text if with_log else sa.literal("")
    query = (
        sa.select(
            j,
            sub.c.uuid.label("submit_uuid"),
            sub.c.submit_time,
            p.c.name,
            p.c.version,
            i.c.name.label("image"),
            e.c.name.label("endpoint"),
            orig.c.uuid.label("reused_from"),
            log_col.label("log"),
        )
        .join(sub, sub.c.id == j.c.submit_id)
        .join(p, p.c.id == j.c.package_id)
        .join(i, i.c.id == j.c.image_id)
        .join(e, e.c.id == j.c.endpoint_id)
        .outerjoin(orig, orig.c.id == j.c.reused_from_job_id)
        .where(j.c.uuid == uuid)
    )
    with transaction(engine) as conn:
        r = conn.execute(query).first()
        if r is None:
            return None
        env = conn.execute(
            sa.select(s.envvars.c.name, s.envvars.c.value)
            .join(s.job_envs, s.job_envs.c.env_id == s.envvars.c.id)
            .where(s.job_envs.c.job_id == r.id)
            .order_by(s.envvars.c.name, s.envvars.c.value)
        ).all()
        arts = conn.execute(
            sa.select(s.artifacts.c.path, s.artifacts.c.sha256, s.artifacts.c.size)
            .where(s.artifacts.c.job_id == r.id)
            .order_by(s.artifacts.c.path)
        ).all()
        inputs = conn.execute(
            sa.select(s.artifacts.c.path)
            .join(s.job_inputs, s.job_inputs.c.artifact_id == s.artifacts.c.id)
            .where(s.job_inputs.c.job_id == r.id)
            .order_by(s.artifacts.c.path)
        ).scalars()
        tail = None
        if r.state is None:
            tail = (
                r.log
                if with_log
                else conn.execute(sa.select(_log_tail(conn)).where(j.c.id == r.id)).scalar()
            )
        return JobDetail(
            uuid=str(r.uuid),
            submit_uuid=str(r.submit_uuid),
            package=r.name,
            version=r.version,
            image=r.image,
            endpoint=r.endpoint,
            container=r.container_hash,
            state=display_state(r.state, tail),
            exit_status=r.exit_status,
            failure_class=r.failure_class,
            started_at=rows.as_utc(r.started_at),
            finished_at=rows.as_utc(r.finished_at),
            submit_time=rows.as_utc(r.submit_time),
            dag_id=r.dag_id,
            run_id=r.run_id,
            try_number=r.try_number,
            image_digest=r.image_digest,
            build_key=r.build_key,
            build_key_inputs=r.build_key_inputs,
            reused_from=None if r.reused_from is None else str(r.reused_from),
            reuse_reason=r.reuse_reason,
            script=r.script_text,
            log=job_log(conn, r.id, r.log) if with_log else r.log,
            env=tuple((n, v) for n, v in env),
            artifacts=tuple(tuple(x) for x in arts),
            inputs=tuple(inputs),
            phase_seconds=json.loads(r.phase_seconds) if r.phase_seconds else {},
        )


# --- one submit ---------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitDetail:
    submit: SubmitRow
    dag_id: str | None
    run_id: str | None
    env: tuple[tuple[str, str], ...]
    jobs: tuple[JobRow, ...]
    # (name, version, outcome, message) of every package of the submit, once its run ended
    outcomes: tuple[tuple[str, str, str, str], ...] = ()


def submit_detail(engine: Engine, uuid: str) -> SubmitDetail | None:
    with transaction(engine) as conn:
        r = conn.execute(_submit_query().where(s.submits.c.uuid == uuid)).first()
        if r is None:
            return None
        env = conn.execute(
            sa.select(s.envvars.c.name, s.envvars.c.value)
            .join(s.submit_envs, s.submit_envs.c.env_id == s.envvars.c.id)
            .where(s.submit_envs.c.submit_id == r.id)
            .order_by(s.envvars.c.name)
        ).all()
        sp, p = s.submit_packages, s.packages
        outcomes = conn.execute(
            sa.select(p.c.name, p.c.version, sp.c.outcome, sp.c.message)
            .join(p, p.c.id == sp.c.package_id)
            .where(sp.c.submit_id == r.id)
            .order_by(p.c.name, p.c.version)
        ).all()
    jobs = list_jobs(engine, submit=uuid, limit=None)
    return SubmitDetail(
        _submit_row(r),
        r.dag_id,
        r.run_id,
        tuple(tuple(x) for x in env),
        tuple(reversed(jobs)),
        tuple((o.name, o.version, o.outcome, o.message or "") for o in outcomes),
    )


# --- artifacts, releases, lookup tables --------------------------------------------


@dataclass(frozen=True)
class ArtifactRow:
    path: str
    released: datetime | None
    job_uuid: str
    sha256: str | None
    size: int | None


def list_artifacts(
    engine: Engine, *, job: str | None = None, limit: int | None = None
) -> list[ArtifactRow]:
    a, j, r = s.artifacts, s.jobs, s.releases
    last_release = (
        sa.select(sa.func.max(r.c.release_date)).where(r.c.artifact_id == a.c.id).scalar_subquery()
    )
    query = sa.select(a.c.path, last_release.label("released"), j.c.uuid, a.c.sha256, a.c.size)
    query = query.join(j, j.c.id == a.c.job_id)
    if job:
        query = query.where(j.c.uuid == job)
    query = _limited(query.order_by(a.c.id.desc()), limit)
    with transaction(engine) as conn:
        return [
            ArtifactRow(x.path, rows.as_utc(x.released), str(x.uuid), x.sha256, x.size)
            for x in conn.execute(query)
        ]


@dataclass(frozen=True)
class ReleaseRow:
    package: str
    version: str
    date: datetime
    store: str
    path: str
    sha256: str | None
    release_id: int


def _release_query() -> Any:
    r, a, j, p, rs = s.releases, s.artifacts, s.jobs, s.packages, s.release_stores
    return (
        sa.select(
            p.c.name, p.c.version, r.c.release_date, rs.c.store_name, a.c.path, a.c.sha256, r.c.id
        )
        .join(a, a.c.id == r.c.artifact_id)
        .join(j, j.c.id == a.c.job_id)
        .join(p, p.c.id == j.c.package_id)
        .join(rs, rs.c.id == r.c.release_store_id)
    )


def _release_row(x: Any) -> ReleaseRow:
    return ReleaseRow(
        x.name, x.version, rows.as_utc(x.release_date), x.store_name, x.path, x.sha256, x.id
    )


def list_releases(
    engine: Engine,
    *,
    store: str | None = None,
    package: str | None = None,
    version: str | None = None,
    older_than: datetime | None = None,
    newer_than: datetime | None = None,
    limit: int | None = None,
    job: str | None = None,
) -> list[ReleaseRow]:
    """Newest first; ``job``: only releases of the artifacts that job built."""
    r, p, rs = s.releases, s.packages, s.release_stores
    query = _release_query()
    if job:
        query = query.where(s.jobs.c.uuid == job)
    if store:
        query = query.where(rs.c.store_name == store)
    if package:
        query = query.where(p.c.name == package)
    if version:
        query = query.where(p.c.version == version)
    if older_than:
        query = query.where(r.c.release_date < older_than)
    if newer_than:
        query = query.where(r.c.release_date > newer_than)
    query = _limited(query.order_by(r.c.release_date.desc(), r.c.id.desc()), limit)
    with transaction(engine) as conn:
        return [_release_row(x) for x in conn.execute(query)]


def list_envvars(engine: Engine) -> list[tuple[str, str]]:
    with transaction(engine) as conn:
        return [
            (n, v)
            for n, v in conn.execute(
                sa.select(s.envvars.c.name, s.envvars.c.value).order_by(
                    s.envvars.c.name, s.envvars.c.value
                )
            )
        ]


def list_images(engine: Engine) -> list[str]:
    with transaction(engine) as conn:
        return list(conn.execute(sa.select(s.images.c.name).order_by(s.images.c.name)).scalars())


def table_counts(engine: Engine, tables: Sequence[str] = s.BUTIDO_05_TABLES) -> dict[str, int]:
    with transaction(engine) as conn:
        return {
            name: int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(s.metadata.tables[name])
                ).scalar_one()
            )
            for name in tables
        }


def build_keys_but_script(
    engine: Engine, name: str, version: str, inputs: Mapping[str, Any], *, scan: int = 200
) -> list[str]:
    """Build keys of successful builds of a package whose recorded inputs equal
    ``inputs`` in everything but the script (``find-artifact -S``), newest first."""
    import json

    j, p = s.jobs, s.packages
    with transaction(engine) as conn:
        stored = conn.execute(
            sa.select(j.c.build_key, j.c.build_key_inputs)
            .join(p, p.c.id == j.c.package_id)
            .where(
                p.c.name == name,
                p.c.version == version,
                j.c.state == s.SUCCESS,
                j.c.build_key.is_not(None),
                j.c.build_key_inputs.is_not(None),
            )
            .order_by(j.c.id.desc())
            .limit(scan)
        ).all()
    wanted = {k: v for k, v in inputs.items() if k != "script_sha256"}
    keys: list[str] = []
    for row in stored:
        try:
            before = json.loads(row.build_key_inputs)
        except ValueError:
            continue
        same = {k: v for k, v in before.items() if k != "script_sha256"} == wanted
        if same and row.build_key not in keys:
            keys.append(str(row.build_key))
    return keys
