"""The report task: the last word of a run (``trigger_rule="all_done"``).

It reads every package task's state and what the build database recorded of the tasks that
succeeded (their manifests over XCom only for what it lacks), logs what was built, reused,
failed and not built (with failure messages and log tails), marks jobs of the run that never
finished as failed in the build database, and raises when a package failed: a final task
that succeeds would otherwise make a run with failed packages look successful.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_butido.manifest import Manifest, is_manifest
from airflow_butido.operators.plan import FAILURE_XCOM_KEY, pull_plan
from airflow_butido.plan import PLAN_TASK_ID, Plan, label_key
from airflow_butido.report import Finished, RunReport, report_json, summarize
from airflow_butido.run_steps import RunEnd, failure_summary

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
        with RunEnd(self.log, self.repo_path, self.database_url) as end:
            if plan is None:
                end.record(dag_id, run_id)
                failure = ti.xcom_pull(task_ids=PLAN_TASK_ID, key=FAILURE_XCOM_KEY) or {}
                message = failure.get("message") or "see its log"
                for line in f"the plan task failed, nothing was built:\n{message}".splitlines():
                    self.log.error("%s", line)
                raise AirflowFailException(f"the plan task failed: {message.splitlines()[0]}")
            report = self._report(context, plan, end)
        for line in report.format().splitlines():
            self.log.info("%s", line)
        value = report_json(report)
        if not report.ok:
            # published before failing the run: `butido trigger` prints the same report
            ti.xcom_push(key="return_value", value=value)
            raise AirflowFailException(failure_summary(report))
        return value

    def _report(self, context: Context, plan: Plan, end: RunEnd) -> RunReport:
        """Summarize how every package ended and record it: jobs of this run that died
        without finishing are marked failed (the report is given even when the database
        cannot be read or updated)."""
        ti, run_id, dag_id = context["ti"], context["run_id"], context["dag"].dag_id
        states_by_run = ti.get_task_states(dag_id=dag_id, run_ids=[run_id])
        states = {
            task_id: getattr(state, "value", state)
            for task_id, state in (states_by_run.get(run_id) or {}).items()
        }
        # all_done on the last tasks only: another branch may still be building
        in_progress = [t for t in plan.packages if states.get(t) not in FINISHED_STATES]
        succeeded = [t for t in plan.packages if states.get(t) == "success"]
        finished: dict[str, Manifest | Finished] = dict(end.finished(plan, succeeded))
        finished.update(
            (task_id, Manifest.from_json(value))
            for task_id, value in _pull(ti, [t for t in succeeded if t not in finished]).items()
            if is_manifest(value)
        )
        failed = [t for t in plan.packages if states.get(t) == "failed"]
        report = summarize(plan, states, finished, _pull(ti, failed, key=FAILURE_XCOM_KEY))
        keep = [label_key(plan.labels[t]) for t in in_progress]
        end.record(dag_id, run_id, keep=keep, plan=plan, report=report)
        return report


def _pull(ti: Any, task_ids: list[str], key: str = "return_value") -> dict[str, Any]:
    """One ``xcom_pull`` for the XComs of ``task_ids`` (none when the list is empty)."""
    if not task_ids:
        return {}
    return dict(zip(task_ids, ti.xcom_pull(task_ids=task_ids, key=key), strict=False))
