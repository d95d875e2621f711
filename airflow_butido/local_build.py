"""Run a build DAG in this process, without Airflow services: what ``butido build`` does.

``butido build`` gives it a :class:`LocalDag` of the plan's package tasks
(:class:`~airflow_butido.package_build.LocalPackageTask`, the work of the Airflow DAG's
package tasks without Airflow); an Airflow ``DAG`` runs the same way. What this module
replaces is the scheduler: XCom is a dict, task states follow the trigger rules
(``none_failed`` for packages, ``all_done`` for a report), and tasks run in a thread pool as
soon as their upstream tasks are done, as many at a time as asked (the endpoint leases of the
build database keep ``maxjobs`` exact).

A task fails for good with a :class:`~airflow_butido.errors.ButidoError` (or Airflow's
``AirflowFailException``), is retried after any other exception, an
:class:`~airflow_butido.errors.InfrastructureError` included, and skips itself with
:class:`~airflow_butido.package_build.NotInRun` (or ``AirflowSkipException``).

Why not ``dag.test()``: it runs one task at a time after ~12 s of start-up, and
``dag.test(use_executor=True)`` hands tasks to an executor whose workers talk to an Airflow
API server, which is the service this command avoids.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow_butido.errors import ButidoError, InfrastructureError
from airflow_butido.package_build import NotInRun

SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED = "success", "failed", "skipped", "upstream_failed"
FINISHED = frozenset({SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED})


@dataclass(frozen=True)
class TaskEvent:
    """A task changed state: ``running``, or a finished state with its message."""

    task_id: str
    state: str
    elapsed: float
    message: str = ""
    value: Any = None


@dataclass
class LocalDag:
    """The part of a DAG :class:`LocalRun` reads: its id, params and tasks (each with a
    ``task_id``, ``upstream_task_ids``, a ``trigger_rule``, ``retries``, ``retry_delay``,
    ``execute(context)`` and ``on_kill()``)."""

    dag_id: str
    tasks: list[Any]
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        self._by_id = {t.task_id: t for t in self.tasks}

    @property
    def task_ids(self) -> list[str]:
        return list(self._by_id)

    def get_task(self, task_id: str) -> Any:
        return self._by_id[task_id]


def _call_execute(task: Any, context: dict[str, Any]) -> Any:
    """``task.execute`` the way the task runner calls it: an Airflow operator marked as the
    running task (Airflow warns about operators executed from inside other operators)."""
    if "airflow.sdk" not in sys.modules:  # no Airflow operator could exist
        return task.execute(context)
    from airflow.sdk.bases.operator import ExecutorSafeguard

    ctx = contextvars.copy_context()
    ctx.run(ExecutorSafeguard.tracker.set, task)
    return ctx.run(task.execute, context)


def _airflow_outcome(exc: BaseException) -> tuple[str, str, list[str]] | None:
    """The state an Airflow exception gives its task (with the message and the tasks it
    skips), None when it is retried; only when Airflow is loaded can a task raise one."""
    module = sys.modules.get("airflow.sdk.exceptions")
    if module is None:
        return None
    if isinstance(exc, module.DownstreamTasksSkipped):  # the task succeeded and skips others
        return SUCCESS, "", [t if isinstance(t, str) else t[0] for t in exc.tasks]
    if isinstance(exc, module.AirflowSkipException):
        return SKIPPED, str(exc), []
    if isinstance(exc, module.AirflowFailException):
        return FAILED, str(exc), []
    return None


def _what_failed(exc: BaseException) -> str:
    """A retried failure, as its task's log line says it: an endpoint, the Docker API or
    the database (InfrastructureError), or an unexpected exception, named."""
    if isinstance(exc, InfrastructureError):
        return f"infrastructure failure: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _retry_delay(task: Any) -> float:
    """The task's ``retry_delay`` in seconds, as Airflow would wait before the next try."""
    delay = getattr(task, "retry_delay", None)
    if isinstance(delay, timedelta):
        return max(0.0, delay.total_seconds())
    if isinstance(delay, int | float):
        return max(0.0, float(delay))
    return 0.0


class _XComStore:
    def __init__(self) -> None:
        self._values: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def push(self, task_id: str, key: str, value: Any) -> None:
        with self._lock:
            self._values[(task_id, key)] = value

    def get(self, task_id: str, key: str) -> Any:
        with self._lock:
            return self._values.get((task_id, key))


def new_run_id() -> str:
    """A run id like Airflow's, unique to this build."""
    return f"local__{time.strftime('%Y-%m-%dT%H:%M:%S')}_{uuid.uuid4().hex[:8]}"


class LocalTaskInstance:
    """The slice of Airflow's runtime task instance that butido's operators use."""

    def __init__(self, run: LocalRun, task_id: str, try_number: int = 1) -> None:
        self._run = run
        self.task_id = task_id
        self.dag_id = run.dag.dag_id
        self.run_id = run.run_id
        self.try_number = try_number
        self.map_index = -1

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        if task_ids is None:
            task_ids = self.task_id
        if isinstance(task_ids, str):
            return self._run.xcom.get(task_ids, key)
        return [self._run.xcom.get(t, key) for t in task_ids]

    def xcom_push(self, key: str, value: Any) -> None:
        self._run.xcom.push(self.task_id, key, value)

    def get_task_states(self, dag_id: str, run_ids: Any = None, **_: Any) -> dict[str, Any]:
        return {self.run_id: dict(self._run.states)}


@dataclass
class _DagRun:
    dag_id: str
    run_id: str
    conf: dict[str, Any]


class LocalRun:
    """One run of ``dag`` with ``conf``; :meth:`run` returns the final task states."""

    def __init__(
        self,
        dag: Any,
        conf: Mapping[str, Any],
        *,
        max_parallel: int,
        on_event: Callable[[TaskEvent], None] | None = None,
        run_id: str | None = None,
        started: float | None = None,
    ) -> None:
        self.dag = dag
        self.conf = dict(conf)
        self.run_id = run_id or new_run_id()
        self.max_parallel = max(1, max_parallel)
        self.on_event = on_event or (lambda _event: None)
        self.xcom = _XComStore()
        self.states: dict[str, str | None] = {t: None for t in dag.task_ids}
        self._skip_requests: list[str] = []  # tasks a finished task skipped (SkipMixin)
        self._lock = threading.Lock()
        self._started = time.monotonic() if started is None else started

    def finished(
        self, task_id: str, state: str, *, xcom: Mapping[str, Any] | None = None,
        skips: Sequence[str] = (),
    ) -> None:  # fmt: skip
        """Take ``task_id`` as already run (``butido build`` runs the plan before the DAG
        exists): its state, its XComs and the tasks it skipped; no event is sent."""
        self.states[task_id] = state
        for key, value in (xcom or {}).items():
            self.xcom.push(task_id, key, value)
        with self._lock:
            self._skip_requests.extend(skips)

    # -- one task ----------------------------------------------------------------------------

    def _context(self, task: Any, ti: LocalTaskInstance) -> dict[str, Any]:
        params = {**dict(self.dag.params), **self.conf}
        return {
            "ti": ti,
            "task_instance": ti,
            "task": task,
            "dag": self.dag,
            "run_id": self.run_id,
            "dag_run": _DagRun(self.dag.dag_id, self.run_id, self.conf),
            "params": params,
        }

    def _execute(self, task_id: str) -> tuple[str, str, Any]:
        task = self.dag.get_task(task_id)
        attempts = 1 + max(0, int(getattr(task, "retries", 0) or 0))
        for attempt in range(1, attempts + 1):
            ti = LocalTaskInstance(self, task_id, attempt)
            try:
                value = _call_execute(task, self._context(task, ti))
            except NotInRun as exc:
                return SKIPPED, str(exc), None
            except ButidoError as exc:
                if not isinstance(exc, InfrastructureError):
                    return FAILED, str(exc), None
                failure: BaseException = exc
            except Exception as exc:
                outcome = _airflow_outcome(exc)
                if outcome is not None:
                    state, message, skips = outcome
                    with self._lock:
                        self._skip_requests.extend(skips)
                    value = self.xcom.get(task_id, "return_value") if state == SUCCESS else None
                    return state, message, value
                failure = exc
            else:
                if value is not None:
                    self.xcom.push(task_id, "return_value", value)
                return SUCCESS, "", value
            # retried like Airflow would, then failed
            if attempt < attempts:
                self._emit(task_id, "up_for_retry", f"{_what_failed(failure)} (will retry)")
                time.sleep(_retry_delay(task))
                continue
            return FAILED, _what_failed(failure), None
        raise AssertionError("unreachable")

    def _emit(self, task_id: str, state: str, message: str = "", value: Any = None) -> None:
        self.on_event(TaskEvent(task_id, state, time.monotonic() - self._started, message, value))

    # -- scheduling --------------------------------------------------------------------------

    def _ready_state(self, task: Any) -> str | None:
        """What the trigger rule makes of a task whose upstream tasks are all finished:
        "run", a state to set without running, or None while upstream is still busy."""
        upstream = [self.states[u] for u in task.upstream_task_ids]
        if any(s not in FINISHED for s in upstream):
            return None
        rule = getattr(task.trigger_rule, "value", task.trigger_rule)
        if rule == "all_done":
            return "run"
        if any(s in (FAILED, UPSTREAM_FAILED) for s in upstream):
            return UPSTREAM_FAILED
        if rule == "none_failed":
            return "run"
        return SKIPPED if any(s == SKIPPED for s in upstream) else "run"

    def run(self) -> dict[str, str | None]:
        running: dict[Future[tuple[str, str, Any]], str] = {}
        self._apply_skips()  # of tasks taken as already run
        pending = list(self.dag.tasks)
        with ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="build") as pool:
            while True:
                progressed = False
                pending = [t for t in pending if self.states[t.task_id] is None]
                for task in pending:
                    verdict = self._ready_state(task)
                    if verdict is None:
                        continue
                    progressed = True
                    if verdict == "run":
                        if len(running) >= self.max_parallel:
                            progressed = False
                            break
                        self.states[task.task_id] = "running"
                        self._emit(task.task_id, "running")
                        running[pool.submit(self._execute, task.task_id)] = task.task_id
                    else:
                        self.states[task.task_id] = verdict
                        self._emit(task.task_id, verdict)
                if not running and not progressed:
                    break
                if running and not progressed:
                    try:
                        done, _ = wait(running, return_when=FIRST_COMPLETED)
                    except KeyboardInterrupt:
                        self._kill(running.values(), pool)
                        raise
                    for future in done:
                        task_id = running.pop(future)
                        state, message, value = future.result()
                        self.states[task_id] = state
                        self._emit(task_id, state, message, value)
                    self._apply_skips()
        return dict(self.states)

    def _apply_skips(self) -> None:
        """Tasks a finished task skipped (the plan) become skipped without running."""
        with self._lock:
            requested, self._skip_requests = self._skip_requests, []
        for task_id in requested:
            if self.states.get(task_id, "") is None:
                self.states[task_id] = SKIPPED
                self._emit(task_id, SKIPPED, "skipped by the plan")

    def _kill(self, task_ids: Any, pool: ThreadPoolExecutor) -> None:
        """Ctrl-C: stop the running tasks as Airflow would (``on_kill`` removes a build's
        container, which ends its thread), start nothing new."""
        pool.shutdown(wait=False, cancel_futures=True)
        for task_id in list(task_ids):
            try:
                self.dag.get_task(task_id).on_kill()
            except Exception as exc:  # keep stopping the others
                self._emit(task_id, "kill failed", str(exc))
