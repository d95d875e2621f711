"""Reuse: finding an earlier successful build with the same build key
(:mod:`airflow_butido.build_key`) whose artifacts are intact, and the claims that make one
build per key at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_butido.build_key import BuildKeyInputs, compare_inputs
from airflow_butido.db import rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction
from airflow_butido.errors import InfrastructureError
from airflow_butido.object_store import StorePath
from airflow_butido.stores import hash_artifact

CANDIDATES_CHECKED = 20
CLAIM_TTL_SECONDS = 6 * 3600
CLAIM_ATTEMPTS = 5  # inserts tried when the claim vanishes between insert and select


@dataclass(frozen=True)
class ReusableArtifact:
    path: str  # relative to the producing submit's staging directory
    sha256: str
    size: int | None
    submit_uuid: str

    @property
    def staging_path(self) -> str:
        """Relative to the staging root: ``<submit-uuid>/<path>``."""
        return f"{self.submit_uuid}/{self.path}"


@dataclass(frozen=True)
class ReuseCandidate:
    job_uuid: str
    submit_uuid: str
    build_key: str
    artifacts: tuple[ReusableArtifact, ...]
    reason: str = ""  # why it is reusable, when not by its build key


ArtifactExists = Callable[[ReusableArtifact], bool]
Wanted = tuple[str, str, str]  # (package name, version, build key)


def find_reusable(
    engine: Engine,
    package_name: str,
    version: str,
    key: str,
    artifact_exists: ArtifactExists,
) -> ReuseCandidate | None:
    """The newest successful job of this package with this key whose artifacts are all
    intact (``artifact_exists``, see store_checker)."""
    wanted = (package_name, version, key)
    return find_reusable_many(engine, [wanted], artifact_exists)[wanted]


def find_reusable_many(
    engine: Engine, wanted: Sequence[Wanted], artifact_exists: ArtifactExists
) -> dict[Wanted, ReuseCandidate | None]:
    """find_reusable for many packages in one lookup: two queries whatever their number."""
    found: dict[Wanted, ReuseCandidate | None] = {w: None for w in wanted}
    if not wanted:
        return found
    j, p, a, sub = s.jobs, s.packages, s.artifacts, s.submits
    keys = sorted({key for _, _, key in wanted})
    with transaction(engine) as conn:
        job_rows = conn.execute(
            sa.select(j.c.id, j.c.uuid, j.c.build_key, p.c.name, p.c.version,
                      sub.c.uuid.label("submit_uuid"))
            .join(p, p.c.id == j.c.package_id)
            .join(sub, sub.c.id == j.c.submit_id)
            .where(j.c.build_key.in_(keys), j.c.state == s.SUCCESS)
            .order_by(j.c.id.desc())
        ).all()  # fmt: skip
        per_want: dict[Wanted, list[Any]] = {}
        for row in job_rows:
            want = (row.name, row.version, row.build_key)
            if want in found and len(per_want.setdefault(want, [])) < CANDIDATES_CHECKED:
                per_want[want].append(row)
        job_ids = [row.id for rows_ in per_want.values() for row in rows_]
        by_job: dict[int, list[Any]] = {job_id: [] for job_id in job_ids}
        for chunk in _chunks(job_ids, 500):
            for art in conn.execute(
                sa.select(a.c.job_id, a.c.path, a.c.sha256, a.c.size)
                .where(a.c.job_id.in_(chunk))
                .order_by(a.c.path)
            ):
                by_job[art.job_id].append(art)
    for want, rows_ in per_want.items():
        for job in rows_:
            arts = by_job[job.id]
            if not arts or any(not art.sha256 for art in arts):
                continue
            candidate = tuple(
                ReusableArtifact(art.path, art.sha256, art.size, str(job.submit_uuid))
                for art in arts
            )
            if all(artifact_exists(c) for c in candidate):
                found[want] = ReuseCandidate(
                    str(job.uuid), str(job.submit_uuid), want[2], candidate
                )
                break
    return found


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def artifact_places(
    staging_root: StorePath, release_store_dirs: Sequence[StorePath], artifact: ReusableArtifact
) -> list[StorePath]:
    """Where an artifact may be, in lookup order: its submit's staging directory, then each
    release store."""
    return [
        staging_root / artifact.staging_path,
        *(d / artifact.path for d in release_store_dirs),
    ]


def store_checker(
    staging_root: StorePath,
    release_store_dirs: Sequence[StorePath] = (),
    *,
    verify: bool = True,
) -> ArtifactExists:
    """An ``artifact_exists`` for find_reusable: the file is looked up in the staging store
    (``<staging>/<submit-uuid>/<path>``), then in each release store (``<store>/<path>``).
    It must have the recorded sha256 when ``verify``, else only the recorded size (a stat,
    no read: what the plan checks for every package of a run)."""

    def exists(artifact: ReusableArtifact) -> bool:
        for place in artifact_places(staging_root, release_store_dirs, artifact):
            if not place.is_file():
                continue
            if verify:
                if hash_artifact(place) == artifact.sha256:
                    return True
            elif artifact.size is None or place.stat().st_size == artifact.size:
                return True
        return False

    return exists


Key = tuple[str, str]  # (package name, version)


@dataclass(frozen=True)
class ReuseDecision:
    """Whether a package of a graph can be reused now, and the inputs that say so."""

    inputs: BuildKeyInputs | None  # None: a dependency must be built first, so no key yet
    candidate: ReuseCandidate | None


def decide_reuse(
    engine: Engine,
    order: Sequence[Key],
    dependencies: Callable[[Key], Collection[Key]],
    inputs_of: Callable[[Key, list[str]], BuildKeyInputs | None],
    artifact_exists: ArtifactExists,
    fallback: Callable[[Key, BuildKeyInputs], ReuseCandidate | None] | None = None,
    adopt: Callable[[Mapping[Key, BuildKeyInputs]], Mapping[Key, ReuseCandidate]] | None = None,
) -> dict[Key, ReuseDecision]:
    """Which packages of a graph can be reused now, deciding dependencies first.

    ``order`` lists the packages dependencies first; ``dependencies(key)`` names every
    transitive dependency whose artifacts the package receives; ``inputs_of(key, hashes)``
    gives its build-key inputs once the sha256 of those artifacts are known, or None when the
    package cannot be reused whatever the database holds. A package whose
    dependencies are all reusable gets a key and a lookup; the others are left undecided
    (``inputs`` None) because their key depends on artifacts not built yet. One batched
    lookup per dependency level: a handful of queries for a deep graph. ``adopt`` is asked,
    once per level, about the packages with a key but no candidate (jobs of a butido
    database, see adopt_butido_jobs); ``fallback`` about each one still without a
    candidate (``find-artifact -S``).
    """
    level: dict[Key, int] = {}
    for key in order:
        level[key] = 1 + max((level[d] for d in dependencies(key)), default=-1)
    decisions: dict[Key, ReuseDecision] = {}
    for depth in sorted(set(level.values())):
        ready: dict[Key, BuildKeyInputs] = {}
        for key in (k for k in order if level[k] == depth):
            deps = dependencies(key)
            found = [decisions[d].candidate for d in deps]
            if any(c is None for c in found):
                decisions[key] = ReuseDecision(None, None)
                continue
            hashes = [a.sha256 for c in found if c is not None for a in c.artifacts]
            inputs = inputs_of(key, hashes)
            if inputs is None:
                decisions[key] = ReuseDecision(None, None)
            else:
                ready[key] = inputs
        wanted = {key: (key[0], key[1], inputs.key) for key, inputs in ready.items()}
        looked_up = find_reusable_many(engine, list(wanted.values()), artifact_exists)
        if adopt is not None:
            missing = {k: inputs for k, inputs in ready.items() if looked_up[wanted[k]] is None}
            for key, adopted in adopt(missing).items():
                looked_up[wanted[key]] = adopted
        for key, inputs in ready.items():
            candidate = looked_up[wanted[key]]
            if candidate is None and fallback is not None:
                candidate = fallback(key, inputs)
            decisions[key] = ReuseDecision(inputs, candidate)
    return decisions


def explain_difference(
    engine: Engine, name: str, version: str, inputs: BuildKeyInputs, *, scan: int = 50
) -> list[str]:
    """Which inputs differ from the closest earlier build of this package (the one
    with the fewest differing fields, newest first on ties). Jobs that reused another
    build are no builds of their own and are passed over."""
    j, p = s.jobs, s.packages
    with transaction(engine) as conn:
        stored = conn.execute(
            sa.select(j.c.uuid, j.c.build_key_inputs, j.c.state)
            .join(p, p.c.id == j.c.package_id)
            .where(
                p.c.name == name,
                p.c.version == version,
                j.c.build_key_inputs.is_not(None),
                sa.or_(j.c.state.is_(None), j.c.state != s.REUSED),
            )
            .order_by(j.c.id.desc())
            .limit(scan)
        ).all()
    if not stored:
        return [f"no earlier build of {name} {version} with recorded build inputs"]
    now = inputs.to_json()
    best: tuple[int, str, list[str], str | None] | None = None
    for row in stored:
        try:
            before = json.loads(row.build_key_inputs)
        except ValueError:
            continue
        diffs = compare_inputs(before, now)
        if best is None or len(diffs) < best[0]:
            best = (len(diffs), str(row.uuid), diffs, row.state)
    if best is None:
        return [f"no earlier build of {name} {version} with readable build inputs"]
    count, job_uuid, diffs, state = best
    if not count:
        why = {
            s.FAILED: "which failed",
            s.RUNNING: "which has not finished",
        }.get(
            state or "", "but its artifacts are missing from the stores or fail their sha256 check"
        )
        return [f"no input differs from job {job_uuid}, {why}"]
    return [f"compared with job {job_uuid}:", *diffs]


# --- claims: one build per key at a time ------------------------------------------


def claim_build_key(
    engine: Engine, key: str, job_uuid: str, *, ttl_seconds: float = CLAIM_TTL_SECONDS
) -> bool:
    """Claim the right to build ``key``; True if this job holds the claim (also when
    it already did, or the previous holder's claim expired)."""
    now = rows.utcnow()
    expires = now + timedelta(seconds=ttl_seconds)
    c = s.build_claims
    claim = {"build_key": key, "job_uuid": job_uuid, "claimed_at": now, "expires_at": expires}
    with transaction(engine, immediate=True) as conn:
        holder = None
        # The holder's release may land between the insert (which found its claim) and the
        # select (which then finds none): the key is free then, and the insert is tried again.
        for _ in range(CLAIM_ATTEMPTS):
            rows.insert_ignore(conn, c, claim)
            holder = conn.execute(
                sa.select(c.c.job_uuid, c.c.expires_at)
                .where(c.c.build_key == key)
                .with_for_update()
            ).one_or_none()
            if holder is not None:
                break
        if holder is None:
            raise InfrastructureError(
                f"could not claim build key {key}: its claim kept changing hands"
            )
        if holder.job_uuid == job_uuid:
            return True
        if rows.as_utc(holder.expires_at) <= now:
            conn.execute(
                sa.update(c)
                .where(c.c.build_key == key, c.c.job_uuid == holder.job_uuid)
                .values(job_uuid=job_uuid, claimed_at=now, expires_at=expires)
            )
            return True
        return False


def release_build_key(engine: Engine, key: str, job_uuid: str) -> None:
    """Give up the claim (after success or failure alike)."""
    c = s.build_claims
    with transaction(engine, immediate=True) as conn:
        conn.execute(sa.delete(c).where(c.c.build_key == key, c.c.job_uuid == job_uuid))


def renew_build_key(
    engine: Engine, key: str, job_uuid: str, *, ttl_seconds: float = CLAIM_TTL_SECONDS
) -> bool:
    """Extend this job's claim (the heartbeat of a build); False if it no longer holds it."""
    c = s.build_claims
    expires = rows.utcnow() + timedelta(seconds=ttl_seconds)
    with transaction(engine, immediate=True) as conn:
        done = conn.execute(
            sa.update(c)
            .where(c.c.build_key == key, c.c.job_uuid == job_uuid)
            .values(expires_at=expires)
        )
        return bool(done.rowcount)


def claim_holder(engine: Engine, key: str) -> str | None:
    c = s.build_claims
    with transaction(engine) as conn:
        return conn.execute(sa.select(c.c.job_uuid).where(c.c.build_key == key)).scalar()


def claim_or_reuse(
    engine: Engine,
    key: str,
    job_uuid: str,
    find: Callable[[], ReuseCandidate | None],
    *,
    poll_seconds: float = 2.0,
    timeout_seconds: float = CLAIM_TTL_SECONDS,
    ttl_seconds: float = CLAIM_TTL_SECONDS,
    on_wait: Callable[[str | None, float], None] | None = None,
) -> ReuseCandidate | None:
    """Either a reusable earlier build (returned), or None: then this job holds the
    claim and must build, and call release_build_key when done. While another job
    holds the claim, wait for it to finish and look again; ``on_wait(holder, waited)``
    is told each time."""
    start = time.monotonic()
    deadline = start + timeout_seconds
    while True:
        found = find()
        if found is not None:
            return found
        if claim_build_key(engine, key, job_uuid, ttl_seconds=ttl_seconds):
            # The holder may have finished between find() and the claim.
            found = find()
            if found is not None:
                release_build_key(engine, key, job_uuid)
            return found
        if time.monotonic() >= deadline:
            raise InfrastructureError(
                f"waited {timeout_seconds:.0f}s for another run building key {key[:12]}"
            )
        if on_wait is not None:
            on_wait(claim_holder(engine, key), time.monotonic() - start)
        time.sleep(poll_seconds)
