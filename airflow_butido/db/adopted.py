"""Reusing the jobs of an adopted butido 0.5 database, on butido's own reuse criteria.

butido recorded no build key, so the key lookup never finds its jobs, and the first run after
``butido db setup`` would rebuild everything. For a package without a key match, a job
butido built (no build key, no recorded state) is reused when butido itself would reuse it
(reference 7.3): same package name and version, requested in the same image, its script
byte-equal to the script rendered now, its environment set equal to the one the job would
get now, its log successful by butido's post-hoc rule (the last state line is OK), and every
artifact file present in its staging directory or a release store.

The adopted job then gets what this project records for its own builds: the build key of the
inputs it matched, those inputs, the state ``success``, and the sha256 and size of its
artifact files. Later runs find it by the key, with no second look at butido's criteria.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_butido.build_key import BuildKeyInputs
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction
from airflow_butido.db.queries import _log_tail as log_tail
from airflow_butido.db.reuse import CANDIDATES_CHECKED, ReusableArtifact, ReuseCandidate
from airflow_butido.db.reuse import artifact_places as places_of
from airflow_butido.object_store import StorePath
from airflow_butido.scripts.logproto import posthoc_state
from airflow_butido.stores import hash_artifact

Key = tuple[str, str]  # (package name, version)

PACKAGES_PER_QUERY = 100


def has_butido_jobs(engine: Engine) -> bool:
    """Whether the database holds jobs butido built (no build key, no state) at all."""
    j = s.jobs
    with transaction(engine) as conn:
        query = sa.select(j.c.id).where(j.c.build_key.is_(None), j.c.state.is_(None)).limit(1)
        return conn.execute(query).first() is not None


def adopt_butido_jobs(
    engine: Engine,
    image: str,
    wanted: Mapping[Key, BuildKeyInputs],
    staging_root: StorePath,
    release_store_dirs: Sequence[StorePath] = (),
) -> dict[Key, ReuseCandidate]:
    """The butido job each package of ``wanted`` (inputs as built now) can reuse, recorded
    with its build key; packages without such a job are left out. A few queries per
    hundred packages, whatever the history holds."""
    if not wanted:
        return {}
    with transaction(engine) as conn:
        image_id = conn.execute(sa.select(s.images.c.id).where(s.images.c.name == image)).scalar()
        if image_id is None:
            return {}
        candidates = _candidates(conn, image_id, wanted)
        job_ids = [row.id for rows_ in candidates.values() for row in rows_]
        envs = _job_envs(conn, job_ids)
        arts = _job_artifacts(conn, job_ids)
    found: dict[Key, ReuseCandidate] = {}
    adopted: list[tuple[int, BuildKeyInputs, list[tuple[int, str, int]]]] = []
    for key, rows_ in candidates.items():
        inputs = wanted[key]
        now_env = {(k, str(v)) for k, v in inputs.environment.items()}
        for row in rows_:
            if envs.get(row.id, set()) != now_env or not arts.get(row.id):
                continue
            submit = str(row.submit_uuid)
            files = []
            for art_id, path in arts[row.id]:
                artifact = ReusableArtifact(path, "", None, submit)
                place = next(
                    (p for p in places_of(staging_root, release_store_dirs, artifact)
                     if p.is_file()),
                    None,
                )  # fmt: skip
                if place is None:
                    break
                files.append((art_id, path, hash_artifact(place), place.stat().st_size))
            else:
                found[key] = ReuseCandidate(
                    str(row.uuid),
                    submit,
                    inputs.key,
                    tuple(ReusableArtifact(p, h, n, submit) for _, p, h, n in files),
                    reason=(
                        f"adopted from butido: job {row.uuid} (submit {submit}) has the same "
                        "script, image and environment, and its artifacts are present"
                    ),
                )
                adopted.append((row.id, inputs, [(i, h, n) for i, _, h, n in files]))
                break
    if adopted:
        _record(engine, adopted)
    return found


def _candidates(
    conn: Connection, image_id: int, wanted: Mapping[Key, BuildKeyInputs]
) -> dict[Key, list[Any]]:
    """butido's jobs of each package with the script of now, requested in the image,
    successful by the post-hoc rule; newest first."""
    j, p, sub = s.jobs, s.packages, s.submits
    tail = log_tail(conn)  # the last state line of a butido log is at its end
    keys = list(wanted)
    found: dict[Key, list[Any]] = {}
    for start in range(0, len(keys), PACKAGES_PER_QUERY):
        chunk = keys[start : start + PACKAGES_PER_QUERY]
        matches = sa.or_(
            *(
                sa.and_(p.c.name == name, p.c.version == version,
                        j.c.script_text == wanted[(name, version)].script)
                for name, version in chunk
            )
        )  # fmt: skip
        for row in conn.execute(
            sa.select(j.c.id, j.c.uuid, p.c.name, p.c.version, tail.label("tail"),
                      sub.c.uuid.label("submit_uuid"))
            .join(p, p.c.id == j.c.package_id)
            .join(sub, sub.c.id == j.c.submit_id)
            .where(matches, sub.c.requested_image_id == image_id,
                   j.c.build_key.is_(None), j.c.state.is_(None))
            .order_by(j.c.id.desc())
        ):  # fmt: skip
            listed = found.setdefault((row.name, row.version), [])
            if len(listed) < CANDIDATES_CHECKED and posthoc_state(row.tail or "") == "ok":
                listed.append(row)
    return found


def _job_envs(conn: Connection, job_ids: Sequence[int]) -> dict[int, set[tuple[str, str]]]:
    je, ev = s.job_envs, s.envvars
    envs: dict[int, set[tuple[str, str]]] = {}
    for start in range(0, len(job_ids), 500):
        for row in conn.execute(
            sa.select(je.c.job_id, ev.c.name, ev.c.value)
            .join(ev, ev.c.id == je.c.env_id)
            .where(je.c.job_id.in_(job_ids[start : start + 500]))
        ):
            envs.setdefault(row.job_id, set()).add((row.name, row.value))
    return envs


def _job_artifacts(conn: Connection, job_ids: Sequence[int]) -> dict[int, list[tuple[int, str]]]:
    a = s.artifacts
    arts: dict[int, list[tuple[int, str]]] = {}
    for start in range(0, len(job_ids), 500):
        for row in conn.execute(
            sa.select(a.c.id, a.c.job_id, a.c.path)
            .where(a.c.job_id.in_(job_ids[start : start + 500]))
            .order_by(a.c.path)
        ):
            arts.setdefault(row.job_id, []).append((row.id, row.path))
    return arts


def _record(
    engine: Engine,
    adopted: Sequence[tuple[int, BuildKeyInputs, Sequence[tuple[int, str, int]]]],
) -> None:
    """The adopted jobs as this project records its own builds: key, inputs, state, and
    artifact hashes, in one transaction. Only columns butido 0.5 does not have are written."""
    j, a = s.jobs, s.artifacts
    with transaction(engine, immediate=True) as conn:
        for job_id, inputs, files in adopted:
            conn.execute(
                sa.update(j)
                .where(j.c.id == job_id, j.c.build_key.is_(None))
                .values(
                    build_key=inputs.key,
                    build_key_inputs=json.dumps(inputs.to_json(), sort_keys=True,
                                                separators=(",", ":")),
                    state=s.SUCCESS,
                )
            )  # fmt: skip
            for art_id, sha256, size in files:
                conn.execute(sa.update(a).where(a.c.id == art_id).values(sha256=sha256, size=size))
