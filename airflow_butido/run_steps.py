"""The plan and the report of a run as plain functions, without Airflow.

The plan and report tasks of a DAG call them, and so does ``butido build`` before it builds
the DAG: when the plan leaves no package task to run (everything reused up front), the
command plans, reports and records the run itself and never imports Airflow or Docker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_butido.plan import Plan, PlanError, RunRequest, label_key
from airflow_butido.report import REUSED, Finished, RunReport

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airflow_butido.db.records import PackageOutcomeRecord
    from airflow_butido.recipes.config import Config
    from airflow_butido.recipes.repository import Repository


@dataclass(frozen=True)
class PlannedRun:
    """A recorded plan: the submit is in the build database, reuse is decided."""

    repo: Repository
    plan: Plan
    skipped: list[str]  # package tasks that never start: outside the run or reused up front

    @property
    def to_run(self) -> list[str]:
        """Package tasks of the run that start (to build, or to fail with the plan's message)."""
        return [t for t in self.plan.packages if t not in self.plan.reused]


def dag_id_of(config: Config, image: str) -> str:
    """The id of the DAG that builds in ``image`` (``[airflow] dag_id_prefix`` + short name)."""
    short = next(i.short_name for i in config.docker.images if i.name == image)
    return f"{config.airflow.dag_id_prefix}{short}"


def image_digest(config: Config, image: str) -> str:
    """The ID of ``image`` on the endpoints that can run it; PlanError when none can."""
    from airflow_butido.errors import ConfigError, InfrastructureError
    from airflow_butido.jobs import DockerRuntime

    try:
        candidates, digest = DockerRuntime().endpoints(config, image, None)
    except (ConfigError, InfrastructureError) as exc:
        raise PlanError([str(exc)]) from None
    for candidate in candidates:
        candidate.api.close()
    return digest


def plan_run(
    repo_path: str | Path,
    image: str,
    request: RunRequest,
    *,
    default_packages: Sequence[str] = (),
    database_url: str | None,
    dag_id: str,
    run_id: str,
    digest_of: Callable[[Config, str], str] = image_digest,
) -> PlannedRun:
    """Resolve and check the run, record the submit and decide reuse up front.

    Run-level problems raise (ButidoError); package-level ones are the plan's ``failures``.
    """
    from airflow_butido import parse_cache
    from airflow_butido.db.migrate import open_database
    from airflow_butido.plan import prepare_plan, record_submit, task_ids_for
    from airflow_butido.planned_reuse import reuse_up_front

    repo = parse_cache.load(repo_path).repo
    plan = prepare_plan(repo, image, request, default_packages=default_packages)
    digest = digest_of(repo.config, plan.image)
    engine = open_database(repo.config, url=database_url)
    try:
        record_submit(engine, repo, plan, dag_id=dag_id, run_id=run_id)
        plan = reuse_up_front(engine, repo, plan, image_digest=digest, dag_id=dag_id, run_id=run_id)
    finally:
        engine.dispose()
    skipped = [
        t for t in task_ids_for(repo.packages).values() if t not in plan.labels or t in plan.reused
    ]
    return PlannedRun(repo, plan, skipped)


def log_plan(log: logging.Logger | Any, plan: Plan) -> None:
    """What the plan decided, one line per package of the run."""
    runs = [t for t in plan.packages if t not in plan.reused and t not in plan.failures]
    log.info(
        "submit %s on %s: %d package(s) in the run: %d to build, %d reused up front, %d failing",
        plan.submit_uuid,
        plan.image,
        len(plan.packages),
        len(runs),
        len(plan.reused),
        len(plan.failures),
    )
    for task_id in plan.packages:
        label = plan.labels[task_id]
        if task_id in plan.failures:
            log.error("  failing %s: %s", label, plan.failures[task_id])
        elif task_id in plan.reused:
            reused = plan.reused[task_id].reused_from
            log.info("  reused  %s: %s", label, reused.reason if reused else "")
        else:
            log.info("  build   %s", label)


class RunEnd:
    """The build database as the end of a run uses it (the report task, ``butido build``'s
    report): the repository and the database opened once, at first use, for reading how the
    packages ended and recording it. What cannot be done is said in ``log``, never raised:
    a report is given whatever the database does."""

    def __init__(self, log: logging.Logger | Any, repo_path: str | Path, database_url: str | None):
        self.log = log
        self.repo_path = repo_path
        self.database_url = database_url
        self._opened: tuple[Repository, Engine] | None = None
        self._failure: Exception | None = None

    def __enter__(self) -> RunEnd:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._opened is not None:
            self._opened[1].dispose()
            self._opened = None

    def _open(self) -> tuple[Repository, Engine]:
        if self._failure is not None:
            raise self._failure
        if self._opened is None:
            from airflow_butido import parse_cache
            from airflow_butido.db.migrate import open_database

            try:
                repo = parse_cache.load(self.repo_path).repo
                self._opened = repo, open_database(repo.config, url=self.database_url)
            except Exception as exc:
                self._failure = exc
                raise
        return self._opened

    def finished(self, plan: Plan, task_ids: Sequence[str]) -> dict[str, Finished]:
        """What the database says of the package tasks ``task_ids`` that succeeded (built
        or reused, and the artifacts), by task id: one query for the whole run where the
        tasks' manifests are one XCom request each. A task the database has no finished job
        for is left out (its manifest is asked for instead), and so is every task when the
        database cannot be read."""
        if not task_ids:
            return {}
        from airflow_butido.db.queries import finished_jobs

        try:
            jobs = finished_jobs(self._open()[1], plan.submit_uuid)
        except Exception as exc:
            self.log.warning("could not read the run's jobs from the build database: %s", exc)
            return {}
        found = {t: jobs.get(label_key(plan.labels[t])) for t in task_ids}
        return {t: job for t, job in found.items() if job is not None}

    def record(
        self,
        dag_id: str,
        run_id: str,
        *,
        keep: Sequence[tuple[str, str]] = (),
        plan: Plan | None = None,
        report: RunReport | None = None,
    ) -> None:
        """Mark jobs of this run that died without finishing as failed (``keep``: packages
        whose tasks are still in progress) and record how every package ended."""
        from airflow_butido.db.records import mark_orphaned_jobs, record_outcomes

        try:
            repo, engine = self._open()
            count = mark_orphaned_jobs(engine, dag_id, run_id, keep=keep)
            if plan is not None and report is not None:
                outcomes = submit_outcomes(plan, report, repo.packages)
                record_outcomes(engine, plan.submit_uuid, outcomes)
        except Exception as exc:
            self.log.warning("could not update the build record: %s", exc)
            return
        if count:
            self.log.warning("marked %d orphaned job(s) of this run as failed", count)


def submit_outcomes(
    plan: Plan, report: RunReport, packages: Iterable[tuple[str, str]]
) -> list[PackageOutcomeRecord]:
    """How every package of the repository ended in this submit."""
    from airflow_butido.db.records import PackageOutcomeRecord

    recorded = []
    for o in report.outcomes:
        name, version = label_key(o.label)
        outcome = o.outcome
        if outcome == REUSED:
            outcome = "reused up front" if o.task_id in plan.reused else "reused at run time"
        recorded.append(PackageOutcomeRecord(name, version, outcome, o.message or None))
    in_run = {label_key(label) for label in plan.labels.values()}
    recorded += [
        PackageOutcomeRecord(name, version, "not requested")
        for name, version in packages
        if (name, version) not in in_run
    ]
    return recorded


def failure_summary(report: RunReport) -> str:
    """The one line a failed report fails its run with."""
    failed = ", ".join(o.label for o in report.of("failed")) or "none"
    not_built = len(report.of("not built"))
    return f"package(s) failed: {failed}; {not_built} not built"
