"""Build keys and reuse: what makes two builds the same, and finding an earlier one.

A build key is the sha256 of a canonical JSON of everything that determines the
output of a build: the rendered script, the phase list, the image digest, the
environment, the source hashes, the patch contents and the sha256 of every
dependency artifact the job receives. The JSON (with the script replaced by its
sha256) is stored with the job, so that a rebuild can say which input changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_butido.db import rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction
from airflow_butido.errors import InfrastructureError
from airflow_butido.stores import hash_artifact

KEY_FORMAT = 1
CANDIDATES_CHECKED = 20
CLAIM_TTL_SECONDS = 6 * 3600


@dataclass(frozen=True)
class BuildKeyInputs:
    script: str
    phases: Sequence[str]
    image_digest: str
    environment: Mapping[str, str] = field(default_factory=dict)
    source_hashes: Mapping[str, str] = field(default_factory=dict)
    patch_hashes: Mapping[str, str] = field(default_factory=dict)
    dependency_artifacts: Sequence[str] = ()

    def to_json(self) -> dict[str, Any]:
        """The canonical form hashed into the key and stored with the job."""
        return {
            "format": KEY_FORMAT,
            "script_sha256": hashlib.sha256(self.script.encode("utf-8")).hexdigest(),
            "phases": list(self.phases),
            "image_digest": self.image_digest,
            "environment": {k: str(v) for k, v in sorted(self.environment.items())},
            "source_hashes": dict(sorted(self.source_hashes.items())),
            "patch_hashes": dict(sorted(self.patch_hashes.items())),
            # The order in which dependencies deliver artifacts is not meaningful.
            "dependency_artifacts": sorted(self.dependency_artifacts),
        }


def canonical_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_key(inputs: BuildKeyInputs) -> str:
    return hashlib.sha256(canonical_json(inputs.to_json()).encode("utf-8")).hexdigest()


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


ArtifactExists = Callable[[str, str], bool]


def find_reusable(
    engine: Engine,
    package_name: str,
    version: str,
    key: str,
    artifact_exists: ArtifactExists,
) -> ReuseCandidate | None:
    """The newest successful job of this package with this key whose artifacts are
    all present and verified; ``artifact_exists(staging_relative_path, sha256)`` is
    asked per artifact (``staging_relative_path`` = ``<submit-uuid>/<path>``; a
    release store holds the same file under ``<path>``, see store_checker)."""
    j, p, a, sub = s.jobs, s.packages, s.artifacts, s.submits
    with transaction(engine) as conn:
        job_rows = conn.execute(
            sa.select(j.c.id, j.c.uuid, sub.c.uuid.label("submit_uuid"))
            .join(p, p.c.id == j.c.package_id)
            .join(sub, sub.c.id == j.c.submit_id)
            .where(
                j.c.build_key == key,
                j.c.state == s.SUCCESS,
                p.c.name == package_name,
                p.c.version == version,
            )
            .order_by(j.c.id.desc())
            .limit(CANDIDATES_CHECKED)
        ).all()
        by_job: dict[int, list[Any]] = {r.id: [] for r in job_rows}
        if by_job:
            for art in conn.execute(
                sa.select(a.c.job_id, a.c.path, a.c.sha256, a.c.size)
                .where(a.c.job_id.in_(list(by_job)))
                .order_by(a.c.path)
            ):
                by_job[art.job_id].append(art)
    for job in job_rows:
        arts = by_job[job.id]
        if not arts or any(not art.sha256 for art in arts):
            continue
        candidate = tuple(
            ReusableArtifact(art.path, art.sha256, art.size, str(job.submit_uuid)) for art in arts
        )
        if all(artifact_exists(c.staging_path, c.sha256) for c in candidate):
            return ReuseCandidate(str(job.uuid), str(job.submit_uuid), key, candidate)
    return None


def store_checker(
    staging_root: Path, release_store_dirs: Sequence[Path] = (), *, verify: bool = True
) -> ArtifactExists:
    """An ``artifact_exists`` for find_reusable: the file is looked up in the staging
    store (``<staging>/<submit-uuid>/<path>``), then in each release store
    (``<store>/<path>``), and must have the recorded sha256 when ``verify``."""

    def exists(staging_relative: str, sha256: str) -> bool:
        _submit, _, path = staging_relative.partition("/")
        places = [staging_root / staging_relative, *(d / path for d in release_store_dirs)]
        for place in places:
            if place.is_file() and (not verify or hash_artifact(place) == sha256):
                return True
        return False

    return exists


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


def compare_inputs(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Field-by-field differences of two stored build-key input documents."""
    diffs: list[str] = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if name not in old:
                    diffs.append(f"{key}: {name} added ({new[name]!r})")
                elif name not in new:
                    diffs.append(f"{key}: {name} removed (was {old[name]!r})")
                elif old[name] != new[name]:
                    diffs.append(f"{key}: {name} changed from {old[name]!r} to {new[name]!r}")
        elif isinstance(old, list) and isinstance(new, list) and key != "phases":
            for item in sorted(set(map(str, new)) - set(map(str, old))):
                diffs.append(f"{key}: {item} added")
            for item in sorted(set(map(str, old)) - set(map(str, new))):
                diffs.append(f"{key}: {item} removed")
        elif key == "script_sha256":
            diffs.append("script: the rendered script differs")
        else:
            diffs.append(f"{key}: changed from {old!r} to {new!r}")
    return diffs


# --- claims: one build per key at a time ------------------------------------------


def claim_build_key(
    engine: Engine, key: str, job_uuid: str, *, ttl_seconds: float = CLAIM_TTL_SECONDS
) -> bool:
    """Claim the right to build ``key``; True if this job holds the claim (also when
    it already did, or the previous holder's claim expired)."""
    now = rows.utcnow()
    expires = now + timedelta(seconds=ttl_seconds)
    c = s.build_claims
    with transaction(engine, immediate=True) as conn:
        rows.insert_ignore(
            conn,
            c,
            {"build_key": key, "job_uuid": job_uuid, "claimed_at": now, "expires_at": expires},
        )
        holder = conn.execute(
            sa.select(c.c.job_uuid, c.c.expires_at).where(c.c.build_key == key).with_for_update()
        ).one()
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
) -> ReuseCandidate | None:
    """Either a reusable earlier build (returned), or None: then this job holds the
    claim and must build, and call release_build_key when done. While another job
    holds the claim, wait for it to finish and look again."""
    deadline = time.monotonic() + timeout_seconds
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
        time.sleep(poll_seconds)
