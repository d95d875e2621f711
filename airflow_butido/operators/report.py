"""The report task: the last word of a run (``trigger_rule="all_done"``).

It reads every package task's state and manifest, logs what was built, reused, failed and
not built (with failure messages and log tails), marks jobs of the run that never finished
as failed in the build database, and raises when a package failed: a final task that
succeeds would otherwise make a run with failed packages look successful.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_butido.manifest import Manifest, is_manifest
from airflow_butido.operators.plan import FAILURE_XCOM_KEY, pull_plan
from airflow_butido.plan import PLAN_TASK_ID
from airflow_butido.report import RunReport, report_json, summarize

if TYPE_CHECKING:
    from airflow.sdk import Context

# Task states after which a package task records nothing more.
FINISHED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


class ReportOperator(BaseOperator):
    ui_color = "#f1f3f4"
    template_fields: Sequence[str] = ()

    def __init__(
        self, *, repo_path: str, image: str, database_url: str | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("retries", 0)
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.repo_path = repo_path
        self.image = image
        self.database_url = database_url

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        run_id = context["run_id"]
        dag_id = context["dag"].dag_id
        plan = pull_plan(context)
        if plan is None:
            self._mark_orphans(dag_id, run_id, keep=())
            failure = ti.xcom_pull(task_ids=PLAN_TASK_ID, key=FAILURE_XCOM_KEY) or {}
            message = failure.get("message") or "see its log"
            for line in f"the plan task failed, nothing was built:\n{message}".splitlines():
                self.log.error("%s", line)
            raise AirflowFailException(f"the plan task failed: {message.splitlines()[0]}")
        states_by_run = ti.get_task_states(dag_id=dag_id, run_ids=[run_id])
        states = {
            task_id: getattr(state, "value", state)
            for task_id, state in (states_by_run.get(run_id) or {}).items()
        }
        # all_done on the last tasks only: another branch may still be building
        in_progress = [t for t in plan.packages if states.get(t) not in FINISHED_STATES]
        keep = [tuple(plan.labels[t].rsplit(" ", 1)) for t in in_progress]
        self._mark_orphans(dag_id, run_id, keep=keep)
        manifests = {
            task_id: Manifest.from_json(value)
            for task_id, value in _pull(
                ti, [t for t in plan.packages if states.get(t) == "success"]
            ).items()
            if is_manifest(value)
        }
        failed = [t for t in plan.packages if states.get(t) == "failed"]
        failures = _pull(ti, failed, key=FAILURE_XCOM_KEY)
        report = summarize(plan, states, manifests, failures)
        for line in report.format().splitlines():
            self.log.info("%s", line)
        if not report.ok:
            raise AirflowFailException(_failure_summary(report))
        return report_json(report)

    def _mark_orphans(self, dag_id: str, run_id: str, keep: Sequence[Any]) -> None:
        """Jobs recorded as running by tasks of this run that died without finishing;
        ``keep``: (name, version) of packages whose tasks are still in progress."""
        from airflow_butido import parse_cache
        from airflow_butido.db.migrate import open_database
        from airflow_butido.db.records import mark_orphaned_jobs

        try:
            config = parse_cache.load(self.repo_path).repo.config
            engine = open_database(config, url=self.database_url)
            try:
                count = mark_orphaned_jobs(engine, dag_id, run_id, keep=keep)
            finally:
                engine.dispose()
        except Exception as exc:  # the report must still be given
            self.log.warning("could not check for orphaned jobs: %s", exc)
            return
        if count:
            self.log.warning("marked %d orphaned job(s) of this run as failed", count)


def _pull(ti: Any, task_ids: list[str], key: str = "return_value") -> dict[str, Any]:
    """One ``xcom_pull`` for the XComs of ``task_ids`` (none when the list is empty)."""
    if not task_ids:
        return {}
    return dict(zip(task_ids, ti.xcom_pull(task_ids=task_ids, key=key), strict=False))


def _failure_summary(report: RunReport) -> str:
    failed = ", ".join(o.label for o in report.of("failed")) or "none"
    not_built = len(report.of("not built"))
    return f"package(s) failed: {failed}; {not_built} not built"
