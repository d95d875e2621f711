"""Earlier builds in the database: the ``BuildCache`` of real runs.

An earlier successful job of the package with the same build key is reused when its artifact
files are present in the staging store or a release store with their recorded sha256. One
job builds a key at a time: it holds a claim on the key, renewed by a heartbeat while it
builds; another job needing the same key waits for it and then reuses its artifacts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack

from sqlalchemy.engine import Engine

from airflow_butido.db import reuse
from airflow_butido.db.leases import lease_endpoint_of
from airflow_butido.db.records import HEARTBEAT_TTL_SECONDS, repair_abandoned
from airflow_butido.errors import BuildError
from airflow_butido.heartbeat import heartbeat
from airflow_butido.jobs import BuildKey, ReusedBuild
from airflow_butido.object_store import StorePath
from airflow_butido.stores import Artifact, release_store_holding

log = logging.getLogger(__name__)

CLAIM_TTL_SECONDS = HEARTBEAT_TTL_SECONDS  # renewed every fifth of it
WAIT_REPORT_SECONDS = 15.0  # a waiting job says for whom at once, then this often


class DatabaseBuildCache:
    """A claim lives ``claim_ttl_seconds`` and is renewed every fifth of that while the build
    runs, so the claim of a killed task frees itself within one TTL."""

    def __init__(
        self,
        engine: Engine,
        staging_root: StorePath,
        release_store_dirs: Sequence[StorePath] = (),
        *,
        poll_seconds: float = 2.0,
        timeout_seconds: float | None = None,
        claim_ttl_seconds: float = CLAIM_TTL_SECONDS,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.cancelled = cancelled  # polled while waiting for another job's claim
        self.staging_root = staging_root
        self.release_store_dirs = tuple(release_store_dirs)
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.claim_ttl_seconds = claim_ttl_seconds
        self._heartbeats: dict[tuple[str, str], ExitStack] = {}

    def claim_or_reuse(
        self, package_name: str, package_version: str, key: BuildKey, job_uuid: str
    ) -> ReusedBuild | None:
        repair_abandoned(self.engine)  # a dead holder's claim must not keep us waiting
        exists = reuse.store_checker(self.staging_root, self.release_store_dirs)
        label = f"{package_name} {package_version}"

        def find() -> reuse.ReuseCandidate | None:
            return reuse.find_reusable(self.engine, package_name, package_version, key.key, exists)

        next_report = [0.0]

        def waiting(holder: str | None, waited: float) -> None:
            if self.cancelled is not None and self.cancelled():
                raise BuildError(
                    f"{label}: cancelled while waiting for job {holder} building the same inputs"
                )
            if waited < next_report[0]:
                return
            next_report[0] = waited + WAIT_REPORT_SECONDS
            endpoint = lease_endpoint_of(self.engine, holder) if holder else None
            log.log(
                logging.WARNING if waited >= WAIT_REPORT_SECONDS else logging.INFO,
                "%s: job %s%s is building the same inputs (key %s); waiting %.0f s to reuse "
                "it (a dead holder's claim frees itself within %.0f s)",
                label,
                holder,
                f" on {endpoint}" if endpoint else "",
                key.key[:12],
                waited,
                self.claim_ttl_seconds,
            )

        found = reuse.claim_or_reuse(
            self.engine,
            key.key,
            job_uuid,
            find,
            poll_seconds=self.poll_seconds,
            ttl_seconds=self.claim_ttl_seconds,
            on_wait=waiting,
            **({} if self.timeout_seconds is None else {"timeout_seconds": self.timeout_seconds}),
        )
        if found is None:
            self._keep_alive(key.key, job_uuid)
            return None
        reason = (
            f"build key {key.key[:12]} equals that of job {found.job_uuid} "
            f"(submit {found.submit_uuid}); its {len(found.artifacts)} artifact(s) are "
            "present with their recorded sha256"
        )
        artifacts = tuple(
            Artifact(a.path, a.sha256, a.size if a.size is not None else 0) for a in found.artifacts
        )
        released = tuple(
            (a.path, store)
            for a in artifacts
            if (
                store := release_store_holding(
                    self.staging_root, self.release_store_dirs, found.submit_uuid, a.path
                )
            )
            is not None
        )
        return ReusedBuild(found.job_uuid, found.submit_uuid, reason, artifacts, released)

    def _keep_alive(self, key: str, job_uuid: str) -> None:
        stack = ExitStack()
        stack.enter_context(
            heartbeat(
                lambda: reuse.renew_build_key(
                    self.engine, key, job_uuid, ttl_seconds=self.claim_ttl_seconds
                ),
                max(self.claim_ttl_seconds / 5, 0.1),
                f"the build claim of job {job_uuid}",
            )
        )
        self._heartbeats[(key, job_uuid)] = stack

    def release(self, key: BuildKey, job_uuid: str) -> None:
        stack = self._heartbeats.pop((key.key, job_uuid), None)
        if stack is not None:
            stack.close()
        reuse.release_build_key(self.engine, key.key, job_uuid)
