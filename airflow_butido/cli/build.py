"""`butido build NAME [VERSION] -I IMAGE`: build a package and its dependencies right here.

The plan is made first, as the plan task makes it (airflow_butido.run_steps). Then the
plan's package tasks run in this process (airflow_butido.local_build): the work of the DAG's
package tasks (airflow_butido.package_build) scheduled by a small in-process loop instead of
Airflow's scheduler, packages in parallel up to the endpoints' ``maxjobs``. Last, the command
reports and records the run as the report task does. Airflow is never imported, and no
Airflow service or metadata database is needed; the build database is the configured one (an
embedded SQLite file by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from airflow_butido.cli.common import add_run_flags, database_url_for
from airflow_butido.errors import ButidoError
from airflow_butido.object_store import url_of
from airflow_butido.run_inputs import env_pairs

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airflow_butido.local_build import LocalRun, TaskEvent
    from airflow_butido.manifest import Manifest
    from airflow_butido.plan import Plan, RunRequest
    from airflow_butido.report import RunReport
    from airflow_butido.run_steps import PlannedRun

_log = logging.getLogger("airflow_butido.build")


PREPARING_AHEAD = 2  # package tasks beyond the endpoints' slots (see _build)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a package and its dependencies locally",
        description=(
            "Build NAME (VERSION, exactly; required when NAME has several versions) and every "
            "package it depends on, in Docker containers on the configured endpoints. Runs "
            "the package tasks of the image's DAG in this process; no Airflow is needed."
        ),
    )
    p.add_argument("name")
    p.add_argument("version", nargs="?")
    add_run_flags(p)
    p.add_argument(
        "--parallel",
        type=_positive_int,
        metavar="N",
        help="package tasks at a time (default: the endpoints' maxjobs summed, plus up to "
        f"{PREPARING_AHEAD} preparing while the others build)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="stream the build logs")
    p.add_argument("--no-verify", action="store_true", help="do not check the sources' hashes")
    p.add_argument(
        "--no-lint", action="store_true", help="do not run the configured script_linter first"
    )
    p.add_argument(
        "--staging-dir",
        metavar="DIR",
        help="build into this existing <staging>/<submit uuid> directory (continue a submit)",
    )
    p.add_argument(
        "--shebang", metavar="BANG", help="first line of every script (default: config shebang)"
    )
    p.add_argument(
        "-L",
        "--write-log",
        metavar="FILE",
        type=Path,
        help="write every package's build log to FILE, each line prefixed by the package",
    )
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    # stdout is for the results: anything a library prints goes to stderr with the logs
    stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        return _build(args, stdout)
    finally:
        sys.stdout = stdout


def _build(args: argparse.Namespace, stdout: TextIO) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    from airflow_butido import parse_cache
    from airflow_butido.local_build import SKIPPED, TaskEvent, new_run_id
    from airflow_butido.manifest import Manifest, is_manifest
    from airflow_butido.package_build import FAILURE_XCOM_KEY
    from airflow_butido.plan import PLAN_TASK_ID, REPORT_TASK_ID, RunRequest
    from airflow_butido.report import report_json
    from airflow_butido.run_steps import dag_id_of, failure_summary
    from airflow_butido.stores import artifact_file

    repo_root = Path(args.repo).resolve()
    loaded = parse_cache.load(repo_root)
    config = loaded.repo.config
    image = config.resolve_image(args.image)
    loaded.graphs.get(image)  # a repository that does not resolve stops here, as the DAG would
    spec = f"{args.name} {args.version}" if args.version else args.name
    request = RunRequest(
        (spec,),
        env_pairs(args.env),
        args.force_rebuild,
        lint=not args.no_lint,
        verify=not args.no_verify,
        shebang=args.shebang,
        staging_dir=_staging_dir_arg(args.staging_dir),
    )
    url = database_url_for(args, config, use_airflow=False)
    slots = sum(e.maxjobs for e in config.docker.endpoints)
    parallel = args.parallel or max(1, slots)
    # a task also loads, checks and looks up its build before it takes a slot: a few more
    # tasks than slots keep every slot busy (a released slot wakes a waiting task at once)
    tasks = args.parallel or parallel + min(parallel, PREPARING_AHEAD)
    run = _Run(str(repo_root), image, url, dag_id_of(config, image), new_run_id())
    planned_labels: dict[str, str] = {}
    reused_up_front: set[str] = set()

    def show(event: TaskEvent) -> None:
        bookkeeping = event.task_id in (PLAN_TASK_ID, REPORT_TASK_ID)
        if not bookkeeping and event.task_id not in planned_labels:
            return  # outside the requested closure, or no plan at all
        text = event.state
        if not bookkeeping and event.state == "success" and is_manifest(event.value):
            text = Manifest.from_json(event.value).outcome
        elif not bookkeeping and event.task_id in reused_up_front:
            text, event = "reused up front", replace(event, message="")
        if event.message and event.state != "success":
            first, *rest = event.message.splitlines()
            text += f": {first}" + "".join(
                f"\n    {line}" for line in rest if event.task_id == PLAN_TASK_ID
            )
        print(f"[{event.elapsed:7.1f}s] {event.task_id}: {text}", file=out, flush=True)

    def emit(task_id: str, state: str, message: str = "") -> None:
        show(TaskEvent(task_id, state, time.monotonic() - started, message))

    # progress goes to stderr when stdout is for a machine (--json / --csv)
    out = sys.stderr if (args.json or args.csv) else stdout
    print(f"building {spec} in {image} ({run.dag_id}, up to {parallel} at a time)", file=out)
    log_file = _open_log(args.write_log) if args.write_log else None
    states: dict[str, str | None]
    try:
        started = time.monotonic()
        emit(PLAN_TASK_ID, "running")
        planned = _plan(run, request, config.airflow.default_packages)
        if isinstance(planned, _PlanFailed):
            emit(PLAN_TASK_ID, "failed", planned.message)
            # what the report task does when the plan failed; no package task starts
            emit(REPORT_TASK_ID, "running")
            emit(REPORT_TASK_ID, "failed", run.plan_failed(planned))
            return 1
        plan = planned.plan
        planned_labels.update(plan.labels)
        reused_up_front.update(plan.reused)
        emit(PLAN_TASK_ID, "success")
        xcom: Callable[[str, str], Any] = _no_xcom
        if planned.to_run:
            with _sigterm_interrupts():
                local = _run_packages(run, request, planned, tasks, show, log_file, started)
            states, xcom = dict(local.states), local.xcom.get
        else:  # every package reused up front: nothing starts
            states = {PLAN_TASK_ID: "success", **dict.fromkeys(planned.skipped, SKIPPED)}
            for task_id in planned.skipped:
                emit(task_id, SKIPPED, "skipped by the plan")
    finally:
        if log_file is not None:
            log_file.close()

    values = {t: xcom(t, "return_value") for t in plan.packages}
    manifests = {t: Manifest.from_json(v) for t, v in values.items() if is_manifest(v)}
    failures = {t: xcom(t, FAILURE_XCOM_KEY) for t in plan.packages}
    emit(REPORT_TASK_ID, "running")
    report = run.report(plan, states, manifests, failures)
    emit(
        REPORT_TASK_ID,
        "success" if report.ok else "failed",
        "" if report.ok else failure_summary(report),
    )
    manifests.update(plan.reused)
    paths = sorted(
        (url_of(artifact_file(config, a)) for m in manifests.values() for a in m.artifacts),
        key=str.lower,
    )
    if args.json or args.csv:
        from airflow_butido.cli.output import print_table

        if args.json:
            result = {**report_json(report), "paths": paths}
            print(json.dumps(result, indent=2), file=stdout)
        else:
            rows = [(o.label, o.outcome, o.message) for o in report.outcomes]
            print_table(("package", "outcome", "message"), rows, as_csv=True, out=stdout)
        return 0 if report.ok else 1
    print(f"\n{report.format()}", file=stdout)
    if paths:
        print("\nPackages created:", file=stdout)
        for path in paths:
            print(path, file=stdout)
    return 0 if report.ok else 1


def _no_xcom(task_id: str, key: str) -> Any:
    return None


@dataclass(frozen=True)
class _PlanFailed:
    message: str  # as the plan task fails with it
    failure: str | None  # what it publishes for the report (for a ButidoError)


@dataclass(frozen=True)
class _Run:
    """One ``butido build``: where it records, under which DAG and run id."""

    repo_root: str
    image: str
    database_url: str
    dag_id: str
    run_id: str

    def plan_failed(self, failed: _PlanFailed) -> str:
        """The report of a run whose plan failed: jobs left running by an earlier try are
        marked failed; returns the report task's failure message."""
        self.record_end(keep=())
        message = failed.failure or "see its log"
        for line in f"the plan task failed, nothing was built:\n{message}".splitlines():
            _log.error("%s", line)
        return f"the plan task failed: {message.splitlines()[0]}"

    def report(
        self,
        plan: Plan,
        states: Mapping[str, str | None],
        manifests: Mapping[str, Manifest],
        failures: Mapping[str, Any],
    ) -> RunReport:
        """What the report task does once every package task has finished: summarize,
        record how every package ended, log the report."""
        from airflow_butido.report import summarize

        report = summarize(plan, states, manifests, failures)
        self.record_end(keep=(), plan=plan, report=report)
        for line in report.format().splitlines():
            _log.info("%s", line)
        return report

    def record_end(self, **kwargs: Any) -> None:
        from airflow_butido.run_steps import RunEnd

        with RunEnd(_log, self.repo_root, self.database_url) as end:
            end.record(self.dag_id, self.run_id, **kwargs)


def _plan(
    run: _Run, request: RunRequest, default_packages: Sequence[str]
) -> PlannedRun | _PlanFailed:
    """The plan task's work, here in the command: Airflow is not imported for it."""
    from airflow_butido.plan import parse_run_conf
    from airflow_butido.run_steps import log_plan, plan_run

    try:
        planned = plan_run(
            run.repo_root,
            run.image,
            parse_run_conf(request.to_conf()),
            default_packages=default_packages,
            database_url=run.database_url,
            dag_id=run.dag_id,
            run_id=run.run_id,
        )
    except ButidoError as exc:
        return _PlanFailed(f"the run cannot start:\n{exc}", str(exc))
    except Exception as exc:  # as the task runner reports an unexpected error
        return _PlanFailed(f"{type(exc).__name__}: {exc}", None)
    log_plan(_log, planned.plan)
    return planned


def _run_packages(
    run: _Run,
    request: RunRequest,
    planned: PlannedRun,
    parallel: int,
    show: Callable[[TaskEvent], None],
    log_file: _BuildLog | None,
    started: float,
) -> LocalRun:
    """Run the plan's package tasks in this process, the plan taken as done."""
    from airflow_butido.jobs import ContainerRemovals
    from airflow_butido.local_build import SUCCESS, LocalDag, LocalRun
    from airflow_butido.package_build import LocalPackageTask
    from airflow_butido.plan import PLAN_TASK_ID, label_key

    plan = planned.plan
    settings = planned.repo.config.airflow
    phase_records = _PhaseRecords(run.database_url)
    removals = ContainerRemovals(record=phase_records.record)
    tasks = []
    for task_id in plan.packages:
        name, version = label_key(plan.labels[task_id])
        task = LocalPackageTask(
            task_id=task_id,
            upstream=(PLAN_TASK_ID, *plan.direct_dependencies_of(task_id)),
            retries=settings.retries,
            retry_delay=timedelta(seconds=settings.retry_delay),
            repo_path=run.repo_root,
            package_name=name,
            package_version=version,
            database_url=run.database_url,
        )
        task.container_removals = removals
        if log_file is not None:
            task.line_sink = log_file.write_line
        tasks.append(task)
    local = LocalRun(
        LocalDag(run.dag_id, tasks, {}),
        request.to_conf(),
        max_parallel=parallel,
        on_event=show,
        run_id=run.run_id,
        started=started,
    )
    plan_json = plan.to_json()
    local.finished(PLAN_TASK_ID, SUCCESS, xcom={"return_value": plan_json}, skips=planned.skipped)
    try:
        local.run()
    finally:
        removals.close()  # every build container is gone before the command goes on
        phase_records.close()
    return local


class _PhaseRecords:
    """The build containers of a run removed in the background, after their slots; the
    time each removal took is added to its job's phases in the build database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def record(self, job_uuid: str, phases: Mapping[str, float]) -> None:
        from airflow_butido.db.engine import make_engine
        from airflow_butido.db.records import record_phase_seconds

        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.url)
            engine = self._engine
        record_phase_seconds(engine, job_uuid, phases)

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


class _BuildLog:
    """``-L FILE``: the script output of every package, as it arrives, one line each,
    prefixed with ``<name> <version>: `` (packages build in parallel)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write_line(self, package: str, line: str) -> None:
        with self._lock:
            self._stream.write(f"{package}: {line}\n")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._stream.close()


def _open_log(path: Path) -> _BuildLog:
    from airflow_butido.errors import ButidoError

    try:
        return _BuildLog(path.open("w", encoding="utf-8"))
    except OSError as exc:
        raise ButidoError(f"--write-log {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a cancelled CI job, ``kill``) stops the build as Ctrl-C does: the running
    tasks are killed, so their containers are removed instead of left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _staging_dir_arg(value: str | None) -> str | None:
    """``--staging-dir``: a local directory made absolute, or a store URL as given."""
    if value is None:
        return None
    return value if "://" in value else str(Path(value).absolute())
