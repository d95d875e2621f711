"""Releasing artifacts of a submit from the staging store into a release store.

A release copies ``<staging>/<submit-uuid>/<path>`` to ``<releases_root>/<store>/<path>``
under a temporary name in the destination directory, checks the copy's sha256
against the source (and the recorded hash), renames it into place and records a
``releases`` row. An existing file is replaced only when asked (``update``).
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_butido.db import rows
from airflow_butido.db import schema as s
from airflow_butido.db.engine import transaction
from airflow_butido.db.queries import ReleaseRow, list_releases
from airflow_butido.errors import ButidoError
from airflow_butido.object_store import (
    StorePath,
    chunks_of,
    describe,
    is_local,
    put_verified,
    reading,
    temporary_key,
    url_of,
)
from airflow_butido.stores import hash_artifact, part_prefix, release_dir, staging_dir

COPY_CHUNK = 1024 * 1024


class ReleaseError(ButidoError):
    """A release could not be made or removed; the message lists every problem."""


@dataclass(frozen=True)
class Released:
    package: str
    version: str
    path: StorePath
    replaced: bool


def check_store(store: str, stores: Sequence[str]) -> None:
    if store not in stores:
        known = ", ".join(stores) or "none"
        raise ReleaseError(f"unknown release store {store!r} (release_stores: {known})")


def release_new(
    engine: Engine,
    *,
    submit_uuid: str,
    store: str,
    staging_root: StorePath,
    releases_root: StorePath,
    stores: Sequence[str],
    name: str | None = None,
    version: str | None = None,
    update: bool = False,
    confirm_update: Callable[[StorePath], bool] | None = None,
) -> list[Released]:
    """Release the artifacts built in ``submit_uuid`` (optionally of one package
    NAME, VERSION matched exactly). Problems are collected; after every artifact
    was tried, ReleaseError lists them. With ``update``, ``confirm_update(dest)`` is
    asked before an existing file is replaced."""
    check_store(store, stores)
    _check_uuid(submit_uuid)
    a, j, p, sub = s.artifacts, s.jobs, s.packages, s.submits
    query = (
        sa.select(a.c.id, a.c.path, a.c.sha256, p.c.name, p.c.version)
        .join(j, j.c.id == a.c.job_id)
        .join(sub, sub.c.id == j.c.submit_id)
        .join(p, p.c.id == j.c.package_id)
        .where(sub.c.uuid == submit_uuid)
        .order_by(a.c.path)
    )
    if name:
        query = query.where(p.c.name == name)
    if version:
        query = query.where(p.c.version == version)
    with transaction(engine) as conn:
        selected = conn.execute(query).all()
    if not selected:
        what = " ".join(x for x in (name, version) if x) or "any package"
        raise ReleaseError(f"submit {submit_uuid} has no artifacts of {what}")

    store_dir = release_dir(releases_root, store)
    released: list[Released] = []
    errors: list[str] = []
    for art in selected:
        source = staging_dir(staging_root, submit_uuid) / art.path
        dest = store_dir / art.path
        try:
            if not source.is_file():
                errors.append(f"{url_of(source)}: artifact file is missing in the staging store")
                continue
            existed = dest.exists()
            if existed and not update:
                errors.append(f"{url_of(dest)}: already released (use --update to replace it)")
                continue
            if existed and confirm_update is not None and not confirm_update(dest):
                errors.append(f"{url_of(dest)}: not updated (declined)")
                continue
            _copy_verified(source, dest, art.sha256)
        except (OSError, ButidoError) as exc:
            errors.append(str(exc))
            continue
        except Exception as exc:  # the object store's client errors
            errors.append(f"{url_of(dest)}: copying from {url_of(source)} failed: {describe(exc)}")
            continue
        with transaction(engine, immediate=True) as conn:
            conn.execute(
                sa.insert(s.releases).values(
                    artifact_id=art.id,
                    release_date=rows.utcnow(),
                    release_store_id=rows.release_store_id(conn, store),
                )
            )
        released.append(Released(art.name, art.version, dest, existed))
    if errors:
        done = "".join(f"\nreleased: {url_of(r.path)}" for r in released)
        raise ReleaseError("release failed:\n" + "\n".join(errors) + done)
    return released


def _check_uuid(value: str) -> None:
    try:
        uuidlib.UUID(value)
    except ValueError:
        raise ReleaseError(f"{value!r} is not a submit UUID") from None


def _copy_verified(source: StorePath, dest: StorePath, recorded_sha256: str | None) -> None:
    """Copy ``source`` to ``dest`` under a temporary name, check it, then put it in place
    (a rename on a disk; on object storage a copy of the checked temporary key)."""
    if not is_local(dest):

        def check(sha256: str, _size: int) -> None:
            if recorded_sha256 and recorded_sha256 != sha256:
                raise ReleaseError(
                    f"{url_of(source)}: sha256 {sha256} differs from the recorded {recorded_sha256}"
                )

        put_verified(
            dest, chunks_of(source), temporary_key(dest.parent, part_prefix()), before_place=check
        )
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuidlib.uuid4().hex[:8]}.tmp"
    try:
        source_hash = hashlib.sha256()
        with reading(source) as src, open(tmp, "wb") as out:
            while chunk := src.read(COPY_CHUNK):
                source_hash.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        expected = source_hash.hexdigest()
        if recorded_sha256 and recorded_sha256 != expected:
            raise ReleaseError(
                f"{url_of(source)}: sha256 {expected} differs from the recorded {recorded_sha256}"
            )
        copied = hash_artifact(tmp)
        if copied != expected:
            raise ReleaseError(f"{dest}: the copy's sha256 {copied} differs from {expected}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def release_rm(
    engine: Engine,
    *,
    store: str,
    name: str,
    version: str,
    releases_root: StorePath,
    stores: Sequence[str],
) -> ReleaseRow:
    """Remove the newest release of NAME VERSION (exact) from ``store``: the file and
    the ``releases`` row (the artifact row stays)."""
    check_store(store, stores)
    found = list_releases(engine, store=store, package=name, version=version, limit=1)
    if not found:
        raise ReleaseError(f"no release of {name} {version} in store {store!r}")
    release = found[0]
    path = release_dir(releases_root, store) / release.path
    if path.is_file():
        path.unlink()
    with transaction(engine, immediate=True) as conn:
        conn.execute(sa.delete(s.releases).where(s.releases.c.id == release.release_id))
    return release
