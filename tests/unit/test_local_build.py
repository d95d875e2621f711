"""The in-process scheduler of `butido build`: trigger rules, XCom, parallelism."""

from __future__ import annotations

import threading
import time
from typing import Any

from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_butido.local_build import LocalRun


class Step(BaseOperator):
    """Returns its id plus what its upstream tasks returned; fails or skips on request."""

    active = 0
    peak = 0
    lock = threading.Lock()

    def __init__(self, *, outcome: str = "ok", delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcome = outcome
        self.delay = delay

    def execute(self, context: Any) -> Any:
        with Step.lock:
            Step.active += 1
            Step.peak = max(Step.peak, Step.active)
        try:
            time.sleep(self.delay)
            if self.outcome == "fail":
                raise AirflowFailException(f"{self.task_id} failed")
            if self.outcome == "skip":
                raise AirflowSkipException("not needed")
            if self.outcome == "states":
                states = context["ti"].get_task_states(dag_id="d", run_ids=[context["run_id"]])
                return states[context["run_id"]]
            pulled = context["ti"].xcom_pull(task_ids=sorted(self.upstream_task_ids))
            return [self.task_id, context["params"].get("flag"), pulled]
        finally:
            with Step.lock:
                Step.active -= 1


def make_dag(outcomes: dict[str, str], delay: float = 0.0) -> DAG:
    """plan -> {x, y, z}; x -> top; y -> top; z independent; all -> report (all_done)."""
    dag = DAG("d", schedule=None, params={"flag": "default"})
    plan = Step(task_id="plan", outcome=outcomes.get("plan", "ok"), dag=dag)
    tasks = {
        name: Step(
            task_id=name,
            outcome=outcomes.get(name, "ok"),
            delay=delay,
            trigger_rule="none_failed",
            dag=dag,
        )
        for name in ("x", "y", "z", "top")
    }
    report = Step(task_id="report", outcome="states", trigger_rule="all_done", dag=dag)
    plan >> [tasks["x"], tasks["y"], tasks["z"]]
    [tasks["x"], tasks["y"]] >> tasks["top"]
    [tasks["top"], tasks["z"]] >> report
    return dag


def test_everything_succeeds_and_xcom_flows():
    run = LocalRun(make_dag({}), {"flag": "set"}, max_parallel=2)
    states = run.run()
    assert set(states.values()) == {"success"}
    top = run.xcom.get("top", "return_value")
    assert top[0] == "top" and top[1] == "set"
    assert [v[0] for v in top[2]] == ["x", "y"]


def test_failure_marks_dependents_upstream_failed_and_spares_independent_tasks():
    events = []
    run = LocalRun(make_dag({"x": "fail"}), {}, max_parallel=2, on_event=events.append)
    states = run.run()
    assert states["x"] == "failed"
    assert states["top"] == "upstream_failed"
    assert states["y"] == "success" and states["z"] == "success"
    assert states["report"] == "success"  # all_done runs anyway
    report_saw = run.xcom.get("report", "return_value")
    assert report_saw["x"] == "failed" and report_saw["top"] == "upstream_failed"
    failed = [e for e in events if e.task_id == "x" and e.state == "failed"]
    assert failed and "x failed" in failed[0].message


def test_skipped_upstream_lets_none_failed_tasks_run():
    states = LocalRun(make_dag({"x": "skip"}), {}, max_parallel=2).run()
    assert states["x"] == "skipped" and states["top"] == "success"


def test_failed_plan_stops_every_package():
    states = LocalRun(make_dag({"plan": "fail"}), {}, max_parallel=2).run()
    assert states["plan"] == "failed"
    assert {states[t] for t in ("x", "y", "z", "top")} == {"upstream_failed"}
    assert states["report"] == "success"


def test_parallelism_is_bounded():
    Step.peak = 0
    LocalRun(make_dag({}, delay=0.2), {}, max_parallel=2).run()
    assert Step.peak == 2
    Step.peak = 0
    LocalRun(make_dag({}, delay=0.05), {}, max_parallel=1).run()
    assert Step.peak == 1
