"""Extra links of package tasks: the build record, the run a reused build came from, the
artifacts.

Airflow 3 asks a link for its URL once, when the task finishes, in the task process, and
stores it in XCom; the UI shows the stored URL as a button on the task instance. The URLs
point into the build-record view (:mod:`airflow_butido.web`), which the api-server serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseOperatorLink

from airflow_butido.package_build import FAILURE_XCOM_KEY, RETURN_VALUE, LeftValues
from airflow_butido.web import urls


def _left(operator: Any, ti_key: Any, key: str) -> Any:
    """The XCom value ``key`` of the task instance: kept on the task when it has just run
    in this process (see ``LeftValues``), else read from XCom."""
    left = getattr(operator, "left_values", None)
    kept = left.of(ti_key) if isinstance(left, LeftValues) else None
    if kept is not None:
        return kept.get(key)
    from airflow.sdk.bases.xcom import BaseXCom

    return BaseXCom.get_value(ti_key=ti_key, key=key)


def _manifest(operator: Any, ti_key: Any) -> Mapping[str, Any] | None:
    """The task's manifest (its ``return_value``), None when it built nothing."""
    value = _left(operator, ti_key, RETURN_VALUE)
    return value if isinstance(value, Mapping) and value.get("job_uuid") else None


class BuildRecordLink(BaseOperatorLink):
    """The job this task recorded: state, script, full log, artifacts (failed jobs too)."""

    name = "Build record"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        recorded = _manifest(operator, ti_key) or _left(operator, ti_key, FAILURE_XCOM_KEY)
        if not recorded:  # skipped: not part of the run
            return ""
        return urls.task_record(ti_key.dag_id, ti_key.run_id, ti_key.task_id)


class ReusedFromLink(BaseOperatorLink):
    """For a reused package: the Airflow task instance that built the artifacts."""

    name = "Reused from"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        manifest = _manifest(operator, ti_key)
        origin = (manifest or {}).get("reused_from") or {}
        return urls.job_run(str(origin["job_uuid"])) if origin.get("job_uuid") else ""


class ArtifactsLink(BaseOperatorLink):
    """The artifacts this task's package is made of, with downloads, in the job that built
    them (this task's job, or for a reused package the earlier one)."""

    name = "Artifacts"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        manifest = _manifest(operator, ti_key)
        artifacts = (manifest or {}).get("artifacts") or ()
        if not artifacts:
            return ""
        producer = artifacts[0].get("job_uuid") or (manifest or {}).get("job_uuid")
        return urls.job_artifacts(str(producer))


class SubmitRecordLink(BaseOperatorLink):
    """On the plan task: the run's submit, every job of it with its state, packages reused
    up front included (their tasks are skipped without starting, so they have no links)."""

    name = "Build record"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.bases.xcom import BaseXCom

        plan = BaseXCom.get_value(ti_key=ti_key, key="return_value")
        submit = plan.get("submit_uuid") if isinstance(plan, Mapping) else None
        return urls.submit(str(submit)) if submit else ""


PACKAGE_TASK_LINKS = (BuildRecordLink(), ReusedFromLink(), ArtifactsLink())
PLAN_TASK_LINKS = (SubmitRecordLink(),)
