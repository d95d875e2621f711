"""One package task's work without Airflow: what the Airflow operator and ``butido build`` run.

:class:`PackageBuild` holds the steps of a package task: read the plan, decide where the
run's settings come from, gather the dependencies' artifacts, run the job (butido's container
protocol, :mod:`airflow_butido.jobs`) and return its :class:`~airflow_butido.manifest.Manifest`.
It needs of its task context only what both runners give: ``ti.xcom_pull``/``xcom_push``,
``ti.dag_id``, ``ti.try_number``, ``run_id``, ``dag``, ``dag_run.conf`` and ``params``.

Failures are butido's exceptions: :class:`~airflow_butido.errors.InfrastructureError` is
worth another try (possibly on another endpoint), any other
:class:`~airflow_butido.errors.ButidoError` is final, :class:`NotInRun` means the task has
nothing to do. The Airflow operator (:mod:`airflow_butido.operators.build`) turns them into
Airflow's exceptions; :class:`LocalPackageTask` is the same work for ``butido build``, which
thereby never imports Airflow.

Reuse: unless ``force_rebuild``, a job whose build key equals that of an earlier successful
build with intact artifacts starts no container; its manifest's outcome is ``reused`` and its
artifacts name the earlier build's submit and job, so dependents find the files.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_butido.errors import BuildError, ButidoError, InfrastructureError
from airflow_butido.manifest import (
    BUILT,
    FAILURE_XCOM_KEY,
    REUSED,
    ArtifactRef,
    Manifest,
    ReusedFrom,
    is_manifest,
)
from airflow_butido.plan import PLAN_TASK_ID, Plan

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airflow_butido.build_key import Env
    from airflow_butido.container import BuildContainer
    from airflow_butido.endpoints import SlotLeaser
    from airflow_butido.jobs import (
        BuildCache,
        ContainerRemovals,
        JobRecorder,
        JobRequest,
        JobResult,
    )
    from airflow_butido.object_store import StorePath
    from airflow_butido.recipes.config import Config
    from airflow_butido.recipes.package import Package
    from airflow_butido.recipes.repository import Repository

RETURN_VALUE = "return_value"  # the XCom key of a task's result: its manifest
_SUBMIT_NAMESPACE = uuid.UUID("5b7e2a8e-6c1d-4f0e-9a55-6275746964f0")

Context = Mapping[str, Any]


class NotInRun(ButidoError):
    """The plan leaves this package out of the run: the task skips itself."""


@dataclass(frozen=True)
class RunSettings:
    """Where this run's submit, image, env and dependency artifacts come from."""

    submit_uuid: str
    image: str
    env: Env
    force_rebuild: bool
    plan: Plan | None  # the plan of the run, when the DAG has a plan task
    # direct dependencies that ran: their manifests name their artifacts and forward what
    # they received, which is the rest of this package's inputs
    upstream: tuple[str, ...]
    # transitive dependencies the plan reused up front: their manifests come with the plan
    planned: tuple[Manifest, ...] = ()
    # the other transitive dependencies, built (or reused) in this run: the build database
    # has their artifacts
    built: tuple[str, ...] = ()


def with_secrets(
    plan: Plan, context: Context, mask: Callable[[str, str], None] = lambda _v, _n: None
) -> Env:
    """The plan's env with the secret values (masked in the plan) from the run conf, which
    the package task reads itself; ``mask(value, name)`` is told about each of them (the
    operator hands them to Airflow's log masking)."""
    if not plan.secret_names:
        return plan.env
    given = dict((context.get("params") or {}).get("env") or {})
    given.update((getattr(context.get("dag_run"), "conf", None) or {}).get("env") or {})
    missing = [name for name in plan.secret_names if name not in given]
    if missing:
        raise BuildError(f"secret variable(s) {', '.join(missing)}: no value in the run conf")
    for name in plan.secret_names:
        mask(str(given[name]), name)
    secret = set(plan.secret_names)
    return tuple((k, str(given[k]) if k in secret else v) for k, v in plan.env)


def failure_record(exc: BaseException) -> dict[str, Any]:
    """What the report shows about a failed package: the message and the log tail (of the
    ScriptFailed behind the task's exception, which may be raised ``from None``)."""
    cause: BaseException | None = exc
    result = None
    while cause is not None and result is None:
        result = getattr(cause, "result", None)
        cause = cause.__cause__ or cause.__context__
    tail = getattr(result, "log_tail", None) or ()
    message = getattr(result, "failure_message", None) or str(exc) or type(exc).__name__
    return {"message": str(message).splitlines()[0][:500], "log_tail": [str(t) for t in tail]}


@dataclass
class LeftValues:
    """What a package task leaves in XCom (its manifest, or its failure), also kept on the
    task: Airflow asks the task's extra links for their URLs in the same process right
    after it ends, and reading each value back would be a request to the API server."""

    run_id: str
    task_id: str
    values: dict[str, Any] = field(default_factory=dict)

    def keep(self, key: str, value: Any) -> Any:
        self.values[key] = value
        return value

    def push(self, context: Context, key: str, value: Any) -> None:
        context["ti"].xcom_push(key=key, value=value)
        self.values[key] = value

    def of(self, ti_key: Any) -> Mapping[str, Any] | None:
        """The values, when they are those of the task instance ``ti_key`` names."""
        named = (getattr(ti_key, "run_id", None), getattr(ti_key, "task_id", None))
        same = named == (self.run_id, self.task_id)
        return self.values if same else None


@dataclass(frozen=True)
class LocatedInput:
    """A dependency artifact and the file that holds it."""

    ref: ArtifactRef
    path: StorePath


class PackageBuild:
    """The steps of building ``package_name package_version`` from the repository at
    ``repo_path``; a runner's task class mixes it in and calls :meth:`configure`.

    The runner's class provides ``task_id``, ``upstream_task_ids``, ``image`` (the
    operator's default image, used without a plan) and ``log``.
    """

    task_id: str
    image: str
    log: Any
    repo_path: str
    package_name: str
    package_version: str
    submit_uuid: str | None
    build_env: Env
    plan_task_id: str | None
    endpoint_names: tuple[str, ...] | None
    max_slot_wait: float | None
    database_url: str | None
    force_rebuild: bool
    from_parse_cache: bool
    line_sink: Callable[[str, str], None] | None
    container_removals: ContainerRemovals | None
    upstream_task_ids: set[str]
    # the dependencies' artifacts from the build database, which has them all in two
    # queries, rather than from their XComs, a request to the API server each
    upstream_from_database = True

    def configure(
        self,
        *,
        repo_path: str | Path,
        package_name: str,
        package_version: str,
        submit_uuid: str | None = None,
        env: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        plan_task_id: str | None = PLAN_TASK_ID,
        endpoint_names: Sequence[str] | None = None,
        max_slot_wait: float | None = None,
        database_url: str | None = None,
        force_rebuild: bool = False,
        from_parse_cache: bool = False,
    ) -> None:
        self.repo_path = str(repo_path)
        self.package_name = package_name
        self.package_version = package_version
        self.submit_uuid = submit_uuid
        self.build_env = tuple((dict(env) if isinstance(env, Mapping) else dict(env or ())).items())
        self.plan_task_id = plan_task_id
        self.endpoint_names = tuple(endpoint_names) if endpoint_names else None
        self.max_slot_wait = max_slot_wait
        self.database_url = database_url
        self.force_rebuild = force_rebuild
        # the repository as the DAG file loaded it (a planned task) or read afresh
        self.from_parse_cache = from_parse_cache
        self._build_container: BuildContainer | None = None
        self._building: JobRequest | None = None
        self._killed = False
        # also given every raw script line with its package (``butido build -L``)
        self.line_sink = None
        # removes the build container in the background after the slot (``butido build``,
        # which waits for it before it ends); None: the task removes it itself
        self.container_removals = None
        self.left_values: LeftValues | None = None  # set by build_planned

    # -- the plan's verdict ---------------------------------------------------------------

    def build_planned(
        self, context: Context, plan: Plan | None, build: Callable[[Any, Plan], Any]
    ) -> Any:
        """What the plan says of this package: not in the run (NotInRun), reused up front
        (its manifest), failing (BuildError with the plan's message), else ``build``. A
        failure leaves its message and log tail for the report (XCom ``failure``)."""
        left = self.left_values = LeftValues(str(context.get("run_id")), self.task_id)
        if plan is None:
            raise BuildError("no plan: the plan task did not succeed")
        if not plan.includes(self.task_id):
            raise NotInRun(f"{self.task_id} is not part of this run")
        if self.task_id in plan.reused:  # cleared and run again: the plan's answer stands
            manifest = plan.reused[self.task_id]
            if manifest.reused_from is not None:
                self.log_reuse(manifest.reused_from)
            return left.keep(RETURN_VALUE, manifest.to_json())
        if self.task_id in plan.failures:
            message = plan.failures[self.task_id]
            self.log.error("%s", message)
            left.push(context, FAILURE_XCOM_KEY, {"message": message})
            raise BuildError(message)
        try:
            return left.keep(RETURN_VALUE, build(context, plan))
        except Exception as exc:
            left.push(context, FAILURE_XCOM_KEY, failure_record(exc))
            raise

    # -- the build, in small steps --------------------------------------------------------

    def build_manifest(self, context: Context, plan: Plan | None) -> dict[str, Any]:
        """Build (or reuse) the package; its manifest as JSON."""
        try:
            config = self.load_config()
            package = self.load_package(config)
            run = self.run_settings(context, plan)
            engine = self.database_engine(config)
            try:
                refs = self.upstream_artifacts(context, run, engine)
                inputs = self.locate_inputs(config, refs)
                request = self.job_request(context, config, package, run, inputs)
                result = self.run_build(
                    request,
                    slots=self.slot_leaser(engine),
                    recorder=self.recorder(context, engine, run, inputs),
                    cache=self.build_cache(engine, config),
                )
            finally:
                engine.dispose()
        except InfrastructureError as exc:
            if self._killed:  # the container went away because the task was killed
                raise BuildError(f"the task was killed: {exc}") from None
            raise
        return self.manifest(result, request, run, inputs).to_json()

    def _repository(self) -> Repository:
        if self.from_parse_cache:  # the DAG file's import (or the plan) has just loaded it
            from airflow_butido import parse_cache

            return parse_cache.load(self.repo_path).repo
        from airflow_butido.recipes.repository import load_repository

        return load_repository(Path(self.repo_path))

    def load_config(self) -> Config:
        if self.from_parse_cache:
            return self._repository().config
        from airflow_butido.recipes.config import load_config

        return load_config(Path(self.repo_path))

    def load_package(self, config: Config) -> Package:
        if self.from_parse_cache:
            repo = self._repository()
        else:
            from airflow_butido.recipes.repository import load_repository

            repo = load_repository(Path(self.repo_path), config=config)
        package = repo.get(self.package_name, self.package_version)
        if package is None:
            raise BuildError(
                f"{self.repo_path}: no package {self.package_name} {self.package_version}"
            )
        return package

    def read_plan(self, context: Context) -> Plan | None:
        """The run's plan (``return_value`` of the plan task), or None without a plan task."""
        if not self.plan_task_id:
            return None
        data = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        return Plan.from_json(data) if isinstance(data, Mapping) else None

    def mask_secret(self, value: str, name: str) -> None:
        """Hide ``value`` in the logs (the operator tells Airflow; locally nothing to do)."""

    def run_settings(self, context: Context, plan: Plan | None) -> RunSettings:
        """The one place that decides between the plan and the task's own settings."""
        if plan is not None:
            dependencies = plan.dependencies_of(self.task_id)
            return RunSettings(
                submit_uuid=self.submit_uuid or plan.submit_uuid,
                image=plan.image,
                env=self.build_env or with_secrets(plan, context, self.mask_secret),
                force_rebuild=self.force_rebuild or plan.force_rebuild,
                plan=plan,
                upstream=tuple(
                    t for t in plan.direct_dependencies_of(self.task_id) if t not in plan.reused
                ),
                planned=tuple(plan.reused[t] for t in dependencies if t in plan.reused),
                built=tuple(t for t in dependencies if t not in plan.reused),
            )
        conf = getattr(context.get("dag_run"), "conf", None) or {}
        params = context.get("params") or {}
        return RunSettings(
            submit_uuid=self.submit_uuid or self.derived_submit(context),
            image=self.image,
            env=self.build_env,
            force_rebuild=self.force_rebuild
            or conf.get("force_rebuild", params.get("force_rebuild")) is True,
            plan=None,
            upstream=tuple(sorted(self.upstream_task_ids)),
        )

    @staticmethod
    def derived_submit(context: Context) -> str:
        """One submit per DAG run when no plan says otherwise (stable across retries)."""
        dag_id = getattr(context.get("dag"), "dag_id", "") or ""
        return str(uuid.uuid5(_SUBMIT_NAMESPACE, f"{dag_id}/{context.get('run_id', '')}"))

    @staticmethod
    def dag_run_label(context: Context) -> str | None:
        run_id = context.get("run_id")
        dag_id = getattr(context.get("dag"), "dag_id", None)
        if not run_id:
            return None
        return f"{dag_id}/{run_id}" if dag_id else str(run_id)

    def upstream_manifests(self, context: Context, run: RunSettings) -> list[Manifest]:
        """The plan's manifests of ``run.planned`` and the XCom of ``run.upstream``.

        Only direct dependencies are pulled (one request each in the Task SDK), never the
        whole transitive closure: each manifest forwards the inputs its package received,
        so the closure costs a few requests whatever its size, not hundreds of manifests
        that each list hundreds of inputs.
        """
        manifests = list(run.planned)
        if run.upstream:
            pulled = context["ti"].xcom_pull(task_ids=list(run.upstream))
            values = [pulled] if isinstance(pulled, Mapping) else list(pulled or ())
            manifests += [Manifest.from_json(v) for v in values if is_manifest(v)]
        return manifests

    def upstream_artifacts(
        self, context: Context, run: RunSettings, engine: Engine | None = None
    ) -> list[ArtifactRef]:
        """Every artifact this package receives, once each: its dependencies' artifacts and
        what they received in turn.

        With a plan, those its dependencies built (or reused) in this run are read from the
        build database that recorded them, all at once (:meth:`recorded_upstream`); from
        their manifests in XCom, a request each, when the database cannot tell.
        """
        recorded = self.recorded_upstream(run, engine)
        manifests = (
            list(run.planned) if recorded is not None else self.upstream_manifests(context, run)
        )
        found: dict[tuple[str, str], ArtifactRef] = {}
        for manifest in manifests:
            for ref in (*manifest.inputs, *manifest.artifacts):
                found.setdefault(ref.location, ref)
        for ref in recorded or ():
            found.setdefault(ref.location, ref)
        return list(found.values())

    def recorded_upstream(
        self, run: RunSettings, engine: Engine | None
    ) -> list[ArtifactRef] | None:
        """The artifacts of every dependency the plan did not reuse (transitively: nothing
        is forwarded here), as the build database recorded their jobs in this run; None
        without a plan or a database, or when the database cannot tell."""
        plan = run.plan
        if plan is None or engine is None or not self.upstream_from_database:
            return None
        from sqlalchemy.exc import SQLAlchemyError

        from airflow_butido.db.queries import delivered_artifacts
        from airflow_butido.plan import label_key

        if not run.built:
            return []
        try:
            return delivered_artifacts(
                engine, run.submit_uuid, [label_key(plan.labels[t]) for t in run.built]
            )
        except SQLAlchemyError as exc:  # the manifests in XCom tell the same
            self.log.warning("reading the dependencies' artifacts from the database: %s", exc)
            return None

    def locate_inputs(self, config: Config, refs: Sequence[ArtifactRef]) -> list[LocatedInput]:
        """The file of every artifact, found in the stores; one in no store fails the build."""
        from airflow_butido.object_store import store_root
        from airflow_butido.stores import (
            find_artifact,
            release_dirs,
            release_store_of,
            staging_dir,
        )

        staging, releases_root = store_root(config, "staging"), store_root(config, "releases_root")
        releases = release_dirs(releases_root, config.release_stores)
        located = []
        for ref in refs:
            stagings = [staging_dir(staging, ref.submit_uuid)] if ref.submit_uuid else []
            stores = release_dirs(releases_root, [ref.store]) if ref.store else releases
            path = find_artifact(ref.path, ref.sha256, stagings, stores)
            if path is None:
                raise BuildError(
                    f"artifact {ref.path} of job {ref.job_uuid} is in no store "
                    "(or was changed since)"
                )
            if ref.store is None and (store := release_store_of(path, ref.path, stores)):
                ref = replace(ref, store=store)  # the manifest names where it was found
            located.append(LocatedInput(ref, path))
        return located

    def job_request(
        self,
        context: Context,
        config: Config,
        package: Package,
        run: RunSettings,
        inputs: Sequence[LocatedInput],
    ) -> JobRequest:
        from airflow_butido.jobs import JobRequest

        return JobRequest(
            package=package,
            config=config,
            repo_root=Path(self.repo_path),
            image=run.image,
            submit_uuid=run.submit_uuid,
            job_uuid=str(uuid.uuid4()),
            env=run.env,
            dependency_artifacts=tuple(i.path for i in inputs),
            dependency_sha256=tuple(i.ref.sha256 for i in inputs),
            dag_run=self.dag_run_label(context),
            endpoint_names=self.endpoint_names,
            force_rebuild=run.force_rebuild,
            shebang=run.plan.shebang if run.plan is not None else None,
            verify_sources=run.plan.verify if run.plan is not None else True,
        )

    def database_engine(self, config: Config) -> Engine:
        from airflow_butido.db.migrate import open_database

        return open_database(config, url=self.database_url, repo_root=Path(self.repo_path))

    def build_cache(self, engine: Engine, config: Config) -> BuildCache:
        """Where earlier builds are looked up: the build database and the stores."""
        from airflow_butido.db.build_cache import DatabaseBuildCache
        from airflow_butido.object_store import store_root
        from airflow_butido.stores import release_dirs

        return DatabaseBuildCache(
            engine,
            store_root(config, "staging"),
            release_dirs(store_root(config, "releases_root"), config.release_stores),
            cancelled=lambda: self._killed,
        )

    def slot_leaser(self, engine: Engine) -> SlotLeaser:
        from airflow_butido.endpoints import DatabaseSlots

        return DatabaseSlots(engine)

    def recorder(
        self, context: Context, engine: Engine, run: RunSettings, inputs: Sequence[LocatedInput]
    ) -> JobRecorder:
        """Record in the database when a plan task recorded the submit; else nothing."""
        from airflow_butido.jobs import NullRecorder

        if run.plan is None:
            return NullRecorder()
        from airflow_butido.db.recorder import DatabaseRecorder
        from airflow_butido.db.records import InputRef, mark_earlier_tries_failed

        ti = context["ti"]
        dag_id = ti.dag_id
        run_id = context.get("run_id")
        try_number = ti.try_number
        if run_id and try_number > 1:
            orphans = mark_earlier_tries_failed(
                engine, dag_id=dag_id, run_id=run_id, package_name=self.package_name,
                package_version=self.package_version, try_number=try_number,
            )  # fmt: skip
            if orphans:
                self.log.warning("marked %d job(s) of earlier tries as failed", orphans)
        return DatabaseRecorder(
            engine,
            dag_id=dag_id,
            run_id=run_id,
            try_number=try_number,
            inputs=[InputRef(i.ref.path, i.ref.sha256, i.ref.job_uuid) for i in inputs],
        )

    def run_build(
        self,
        request: JobRequest,
        *,
        slots: SlotLeaser,
        recorder: JobRecorder,
        cache: BuildCache | None = None,
    ) -> JobResult:
        from airflow_butido.jobs import format_phases, run_job

        self._building = request  # announced when its container starts: a reuse starts none
        result = run_job(
            request,
            slots=slots,
            recorder=recorder,
            on_line=self.log_line,
            on_container=self._track_container,
            on_wait=self._waiting_for_slot,
            max_wait=self.max_slot_wait,
            cache=cache,
            removals=self.container_removals,
        )
        if result.reused_from is not None:
            reused = result.reused_from
            self.log_reuse(
                ReusedFrom(
                    reused.job_uuid,
                    reused.submit_uuid,
                    reused.reason,
                    _run_of_job(cache, reused.job_uuid),
                )
            )
        for artifact in result.artifacts:
            self.log.info(
                "Artifact %s (%d bytes, sha256 %s)", artifact.path, artifact.size, artifact.sha256
            )
        self.log.info("%s", format_phases(result.phase_seconds))  # where the time went
        return result

    def log_reuse(self, origin: ReusedFrom) -> None:
        """The first line of a reused package's log: what it reused, from where, why."""
        self.log.info(
            "REUSED from job %s (submit %s, run %s): %s",
            origin.job_uuid,
            origin.submit_uuid,
            origin.run or "unknown",
            origin.reason,
        )

    def log_line(self, line: str, item: Any) -> None:
        """One script output line into the task log; protocol lines become events."""
        from airflow_butido.scripts import logproto

        if isinstance(item, logproto.State) and not item.ok:
            self.log.error("%s", logproto.readable(item))
        else:
            self.log.info("%s", logproto.readable(item))
        if self.line_sink is not None:
            self.line_sink(f"{self.package_name} {self.package_version}", line)

    def manifest(
        self,
        result: JobResult,
        request: JobRequest,
        run: RunSettings,
        inputs: Sequence[LocatedInput],
    ) -> Manifest:
        """Each artifact names the submit and job that produced it: for a reused build those
        of the earlier build, whose staging directory holds the file, or the release store
        holding it when the staged copy is gone."""
        reused = result.reused_from
        producer_submit = reused.submit_uuid if reused else request.submit_uuid
        producer_job = reused.job_uuid if reused else result.job_uuid
        artifacts = tuple(
            ArtifactRef(
                a.path,
                a.sha256,
                a.size,
                producer_submit,
                producer_job,
                reused.store_of(a.path) if reused else None,
            )
            for a in result.artifacts
        )
        return Manifest(
            package=result.package_name,
            version=result.package_version,
            image=result.image,
            submit_uuid=run.submit_uuid,
            job_uuid=result.job_uuid,
            outcome=REUSED if reused else BUILT,
            artifacts=artifacts,
            inputs=tuple(i.ref for i in inputs),
            endpoint=result.endpoint,
            build_key=result.build_key,
            reused_from=(
                ReusedFrom(reused.job_uuid, reused.submit_uuid, reused.reason) if reused else None
            ),
        )

    # -- the container, for on_kill -------------------------------------------------------

    def _waiting_for_slot(self, waited: float) -> None:
        if self._killed:
            raise BuildError("the task was killed while waiting for an endpoint slot")
        self.log.info("All endpoints are busy; waiting for a slot (%.0f s)", waited)

    def _track_container(self, container: BuildContainer | None) -> None:
        # A plain assignment: on_kill may read it from a signal handler at any time.
        self._build_container = container
        if container is not None and self._killed:
            # killed before the container existed: the job removes it on the way out
            raise BuildError(f"the task was killed; container {container.spec.name} removed")
        request, self._building = self._building, None
        if container is not None and request is not None:
            self.log.info(
                "Building %s %s in %s (submit %s, job %s, %d input artifact(s))",
                request.package.name,
                request.package.version,
                request.config.resolve_image(request.image),
                request.submit_uuid,
                request.job_uuid,
                len(request.dependency_artifacts),
            )
        if container is not None and container.id:
            self.container_started(container)

    def container_started(self, container: BuildContainer) -> None:
        self.log.info(
            "Container %s (%s) on endpoint %s",
            container.spec.name,
            (container.id or "")[:12],
            container.endpoint_name,
        )

    def on_kill(self) -> None:
        """Stop and remove the build container; the job then fails and frees its slot.

        Airflow calls this from the task process's SIGTERM handler and sends SIGKILL a few
        seconds later, so a job killed before its container exists must not start one.
        """
        self._killed = True
        container = self._build_container
        if container is None:
            self.log.info("No build container to stop")
            return
        self.log.info("Removing build container %s", container.spec.name)
        container.remove()


class LocalPackageTask(PackageBuild):
    """A planned package task of ``butido build``: the same work as the DAG's package task,
    run by :class:`~airflow_butido.local_build.LocalRun` without Airflow.

    A build failure raises :class:`BuildError` with its first line (the whole message, with
    the log tail, goes to the log); an infrastructure failure is retried ``retries`` times,
    ``retry_delay`` apart, as the DAG's task is.
    """

    trigger_rule = "none_failed"
    upstream_from_database = False  # the run's XComs are in this process's memory

    def __init__(
        self,
        *,
        task_id: str,
        upstream: Sequence[str],
        retries: int = 0,
        retry_delay: timedelta = timedelta(0),
        **settings: Any,
    ) -> None:
        self.task_id = task_id
        self.image = ""  # a planned task builds in the plan's image
        self.log = logging.getLogger(f"airflow_butido.task.{task_id}")
        self.upstream_task_ids = set(upstream)
        self.retries = retries
        self.retry_delay = retry_delay
        self.configure(from_parse_cache=True, **settings)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = self.build_planned(
                context, self.read_plan(context), self.build_manifest
            )
        except (InfrastructureError, NotInRun):
            raise
        except ButidoError as exc:
            first, *rest = str(exc).splitlines() or [type(exc).__name__]
            if rest:
                self.log.error("%s", exc)
            raise BuildError(first) from None
        return manifest


def _run_of_job(cache: Any, job_uuid: str) -> str | None:
    """``dag_id/run_id`` of an earlier job, from the build database when there is one."""
    engine = getattr(cache, "engine", None)
    if engine is None:
        return None
    from airflow_butido.db.queries import job_detail

    detail = job_detail(engine, job_uuid, with_log=False)
    if detail is None or not detail.run_id:
        return "outside Airflow"
    return f"{detail.dag_id}/{detail.run_id}"
