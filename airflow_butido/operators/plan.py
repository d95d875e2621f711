"""The plan task and the plan-driven package task of a butido DAG.

The plan task turns the run conf into a :class:`~airflow_butido.plan.Plan` (XCom
``return_value`` of ``plan``). A package task reads it: outside the plan it skips itself;
inside, it builds through :class:`~airflow_butido.operators.build.PackageBuildOperator`
with the manifests of its direct dependencies (each forwards what it received) and those
the plan reused up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.skipmixin import XCOM_SKIPMIXIN_KEY, XCOM_SKIPMIXIN_SKIPPED
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSkipException,
    DownstreamTasksSkipped,
)

from airflow_butido.errors import ButidoError
from airflow_butido.operators.build import PackageBuildOperator
from airflow_butido.operators.links import PLAN_TASK_LINKS
from airflow_butido.package_build import FAILURE_XCOM_KEY, NotInRun
from airflow_butido.plan import (
    PLAN_TASK_ID,
    RUN_CONF_KEYS,
    Plan,
    RunRequest,
    parse_run_conf,
)
from airflow_butido.run_steps import image_digest

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["FAILURE_XCOM_KEY", "PlanOperator", "PlannedBuildOperator", "pull_plan", "run_request"]


def run_request(context: Context) -> RunRequest:
    """The run conf as validated params (the trigger form and REST ``conf`` alike)."""
    params = context.get("params") or {}
    conf = {k: params[k] for k in params if k in RUN_CONF_KEYS}
    dag_run_conf = getattr(context.get("dag_run"), "conf", None) or {}
    for key in set(dag_run_conf) - set(conf):  # unknown keys are reported, not dropped
        conf[key] = dag_run_conf[key]
    return parse_run_conf(conf)


def pull_plan(context: Context) -> Plan | None:
    """The plan of this run, or None when the plan task failed."""
    data = context["ti"].xcom_pull(task_ids=PLAN_TASK_ID)
    return Plan.from_json(data) if data else None


class PlanOperator(BaseOperator):
    """Resolve the requested packages for this image and env, check them, record the submit."""

    ui_color = "#e8f0fe"
    template_fields: Sequence[str] = ()
    operator_extra_links = PLAN_TASK_LINKS

    def __init__(
        self,
        *,
        repo_path: str,
        image: str,
        default_packages: Sequence[str] = (),
        database_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.repo_path = repo_path
        self.image = image
        self.default_packages = tuple(default_packages)
        self.database_url = database_url

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_butido.run_steps import log_plan, plan_run

        ti = context["ti"]
        try:
            planned = plan_run(
                self.repo_path,
                self.image,
                run_request(context),
                default_packages=self.default_packages,
                database_url=self.database_url,
                dag_id=ti.dag_id,
                run_id=context["run_id"],
                digest_of=image_digest,
            )
        except ButidoError as exc:
            # also an XCom, so that `butido trigger` can show CI why the run did not start
            ti.xcom_push(key=FAILURE_XCOM_KEY, value={"message": str(exc)})
            raise AirflowFailException(f"the run cannot start:\n{exc}") from None
        log_plan(self.log, planned.plan)
        value = planned.plan.to_json()
        # Skipping ends execute() (the Task SDK's DownstreamTasksSkipped), so the plan is
        # pushed first; the skipped tasks never start a task process.
        ti.xcom_push(key="return_value", value=value)
        if planned.skipped:
            ti.xcom_push(key=XCOM_SKIPMIXIN_KEY, value={XCOM_SKIPMIXIN_SKIPPED: planned.skipped})
            raise DownstreamTasksSkipped(tasks=planned.skipped)
        return value


class PlannedBuildOperator(PackageBuildOperator):
    """A package task that follows the plan: it skips itself outside the plan; inside, the
    base operator builds with the manifests of its direct dependencies and the plan's.
    On failure it leaves the message and log tail for the report."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.from_parse_cache = True  # the DAG file's import has just loaded the repository

    def execute(self, context: Context) -> dict[str, Any]:  # type: ignore[override]
        try:
            manifest: dict[str, Any] = self.build_planned(
                context, self.read_plan(context), self.build
            )
        except NotInRun as exc:
            raise AirflowSkipException(str(exc)) from None
        except ButidoError as exc:  # the plan's verdict: no plan, or a failure it found
            raise AirflowFailException(str(exc)) from None
        return manifest
