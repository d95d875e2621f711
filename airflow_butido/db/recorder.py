"""The build record of a job in the database: the ``JobRecorder`` of real runs.

The submit row must exist already (the plan records it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from sqlalchemy.engine import Engine

from airflow_butido.db.records import (
    ArtifactRecord,
    InputRef,
    record_inputs,
    record_job_finish,
    record_job_start,
    record_phase_seconds,
    record_reused_job,
)
from airflow_butido.jobs import SUCCESS, BuildKey, JobReused, JobStarted
from airflow_butido.stores import Artifact

log = logging.getLogger(__name__)


class DatabaseRecorder:
    """Writes jobs, logs, artifacts and the inputs a job consumed."""

    def __init__(
        self,
        engine: Engine,
        *,
        dag_id: str | None = None,
        run_id: str | None = None,
        try_number: int | None = None,
        inputs: Sequence[InputRef] = (),
    ) -> None:
        self.engine = engine
        self.inputs = tuple(inputs)
        self.run = {"dag_id": dag_id, "run_id": run_id, "try_number": try_number}

    def _job_values(self, job: JobStarted | JobReused) -> dict[str, Any]:
        """The columns a started and a reused job both record."""
        key: BuildKey | None = job.build_key
        return {
            "uuid": job.job_uuid,
            "submit_uuid": job.submit_uuid,
            "package_name": job.package_name,
            "package_version": job.package_version,
            "image": job.image,
            "script": job.script,
            "env": dict(job.env),
            **self.run,
            "build_key": key.key if key else None,
            "build_key_inputs": key.inputs if key else None,
            "image_digest": key.image_digest if key else None,
        }

    def job_started(self, job: JobStarted) -> None:
        missing: list[InputRef] = []
        record_job_start(
            self.engine,
            endpoint=job.endpoint,
            container_id=job.container_id,
            inputs=self.inputs,
            missing_inputs=missing,
            **self._job_values(job),
        )
        self._warn_missing(job.job_uuid, missing)

    def job_reused(self, job: JobReused) -> None:
        record_reused_job(
            self.engine,
            reused_job_uuid=job.reused.job_uuid,
            reason=job.reused.reason,
            phase_seconds=job.phase_seconds,
            **self._job_values(job),
        )
        self._record_inputs(job.job_uuid)

    def _record_inputs(self, job_uuid: str) -> None:
        if self.inputs:
            self._warn_missing(job_uuid, record_inputs(self.engine, job_uuid, self.inputs))

    @staticmethod
    def _warn_missing(job_uuid: str, missing: Sequence[InputRef]) -> None:
        for ref in missing:
            log.warning("input %s of job %s has no artifact record", ref.path, job_uuid)

    def job_finished(
        self,
        job_uuid: str,
        *,
        state: str,
        exit_code: int | None,
        failure_class: str | None,
        log: IO[str] | None,
        artifacts: Sequence[Artifact] = (),
        phases: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        record_job_finish(
            self.engine,
            uuid=job_uuid,
            state=state,
            exit_status=exit_code,
            failure_class=failure_class,
            log=log,
            artifacts=(
                [ArtifactRecord(a.path, a.sha256, a.size) for a in artifacts]
                if state == SUCCESS
                else None
            ),
            phase_seconds=phases,
        )

    def job_phases(self, job_uuid: str, phases: Mapping[str, float]) -> None:
        record_phase_seconds(self.engine, job_uuid, phases)
