"""``PackageBuildOperator``: one package build as an Airflow task.

It is a ``DockerOperator`` so that ``docker_url``, the TLS settings, templating and
``on_kill`` look familiar, but it runs butido's container protocol (``airflow_butido.jobs``)
instead of ``docker run``: the endpoint is chosen at run time from config.toml (a slot
lease in the build database keeps ``maxjobs`` across all tasks and runs), inputs are
copied in, the log streams line by line into the task log, ``/outputs`` lands in the
staging store, and the return value (XCom) is a JSON manifest of the artifacts.

What ``execute`` reads from the context (each step is a method a subclass may override):

* ``ti.xcom_pull(task_ids=plan_task_id)``: the run's plan (``airflow_butido.plan.Plan``
  JSON) if the DAG has a plan task: ``submit_uuid``, ``env`` and ``dependencies`` (the
  task ids whose artifacts this package receives, transitively);
* without a plan: ``submit_uuid`` / ``env`` given to the operator, else a submit UUID
  derived from the DAG run, and the manifests of the upstream build tasks (each carries
  its own ``artifacts`` and the ``inputs`` it received, so the closure arrives);
* ``run_id`` and ``dag_run`` for the container's ``io.butido.dag_run`` label;
* ``force_rebuild``: the operator argument, else the plan's flag, else the run conf's.

Reuse: unless ``force_rebuild``, a job whose build key (``airflow_butido.db.reuse``) equals
that of an earlier successful build with intact artifacts starts no container; it is
recorded as reused and returns a manifest with ``"reused": true`` whose artifacts name the
earlier build's submit and job, so dependents find the files. A job building a key holds a
claim on it, so a concurrent run needing the same key waits and then reuses.

Failures: a script failure (``BuildError``, bad recipe or config) raises
``AirflowFailException`` (no retries); an endpoint or Docker failure raises
``AirflowException`` so the task is retried, possibly on another endpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.docker.operators.docker import DockerOperator

from airflow_butido.errors import BuildError, ButidoError, InfrastructureError
from airflow_butido.operators.links import PACKAGE_TASK_LINKS

if TYPE_CHECKING:
    from airflow_butido.container import BuildContainer
    from airflow_butido.endpoints import SlotLeaser
    from airflow_butido.jobs import BuildCache, JobRecorder, JobRequest, JobResult
    from airflow_butido.recipes.config import Config
    from airflow_butido.recipes.package import Package

MANIFEST_KIND = "butido.artifacts/v1"
_SUBMIT_NAMESPACE = uuid.UUID("5b7e2a8e-6c1d-4f0e-9a55-6275746964f0")


class PackageBuildOperator(DockerOperator):
    """Build ``package_name package_version`` from the repository at ``repo_path``."""

    template_fields: Sequence[str] = (
        *DockerOperator.template_fields,
        "repo_path",
        "package_name",
        "package_version",
        "submit_uuid",
    )
    ui_color = "#e8d8b0"
    operator_extra_links = PACKAGE_TASK_LINKS

    def __init__(
        self,
        *,
        repo_path: str | Path,
        package_name: str,
        package_version: str,
        image: str,
        submit_uuid: str | None = None,
        env: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        plan_task_id: str | None = "plan",
        endpoint_names: Sequence[str] | None = None,
        max_slot_wait: float | None = None,
        database_url: str | None = None,
        force_rebuild: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mount_tmp_dir", False)
        super().__init__(image=image, **kwargs)
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
        self._build_container: BuildContainer | None = None
        self._building: JobRequest | None = None
        self._killed = False
        self._inputs: list[tuple[dict[str, Any], Path]] = []

    # -- execute, in small steps ----------------------------------------------------------

    def execute(self, context: Any) -> dict[str, Any]:  # type: ignore[override]
        try:
            config = self.load_config()
            package = self.load_package(config)
            plan = self.read_plan(context)
            request = self.job_request(context, config, package, plan)
            engine = self.database_engine(config)
            try:
                result = self.run_build(
                    request,
                    slots=self.slot_leaser(engine),
                    recorder=self.recorder(context, engine, plan),
                    cache=self.build_cache(engine, config),
                )
            finally:
                engine.dispose()
        except InfrastructureError as exc:
            from airflow.sdk.exceptions import AirflowException, AirflowFailException

            if self._killed:  # the container went away because the task was killed
                raise AirflowFailException(f"the task was killed: {exc}") from exc
            raise AirflowException(f"infrastructure failure (will retry): {exc}") from exc
        except (BuildError, ButidoError) as exc:
            from airflow.sdk.exceptions import AirflowFailException

            self.log.error("%s", exc)
            raise AirflowFailException(str(exc)) from exc
        manifest = self.manifest(result, request)
        self.announce(context, manifest)
        return manifest

    def load_config(self) -> Config:
        from airflow_butido.recipes.config import load_config

        return load_config(Path(self.repo_path))

    def load_package(self, config: Config) -> Package:
        from airflow_butido.recipes.repository import load_repository

        repo = load_repository(Path(self.repo_path), config=config)
        package = repo.get(self.package_name, self.package_version)
        if package is None:
            raise BuildError(
                f"{self.repo_path}: no package {self.package_name} {self.package_version}"
            )
        return package

    def read_plan(self, context: Any) -> Mapping[str, Any] | None:
        if not self.plan_task_id:
            return None
        ti = context.get("ti") or context.get("task_instance")
        if ti is None:
            return None
        plan = ti.xcom_pull(task_ids=self.plan_task_id)
        return plan if isinstance(plan, Mapping) else None

    def job_request(
        self,
        context: Any,
        config: Config,
        package: Package,
        plan: Mapping[str, Any] | None,
    ) -> JobRequest:
        from airflow_butido.jobs import JobRequest
        from airflow_butido.stores import hash_artifact

        submit = self.submit_uuid or (plan or {}).get("submit_uuid") or self.derived_submit(context)
        self._inputs = self.dependency_inputs(context, config, plan)
        env = self.build_env or tuple(dict((plan or {}).get("env") or {}).items())
        return JobRequest(
            package=package,
            config=config,
            repo_root=Path(self.repo_path),
            image=(plan or {}).get("image") or self.image,
            submit_uuid=str(submit),
            job_uuid=str(uuid.uuid4()),
            env=tuple((str(k), str(v)) for k, v in env),
            dependency_artifacts=tuple(path for _, path in self._inputs),
            dependency_sha256=tuple(
                str(entry.get("sha256") or hash_artifact(path)) for entry, path in self._inputs
            ),
            dag_run=self.dag_run_label(context),
            endpoint_names=self.endpoint_names,
            force_rebuild=self.force_rebuild_wanted(context, plan),
        )

    def force_rebuild_wanted(self, context: Any, plan: Mapping[str, Any] | None) -> bool:
        """Build even when an earlier build could be reused: the operator argument, the
        plan's ``force_rebuild``, or (without a plan) the run conf's / params'."""
        if self.force_rebuild:
            return True
        if plan is not None:
            return plan.get("force_rebuild") is True
        dag_run = context.get("dag_run")
        conf = getattr(dag_run, "conf", None) or {}
        params = context.get("params") or {}
        return conf.get("force_rebuild", params.get("force_rebuild")) is True

    @staticmethod
    def derived_submit(context: Any) -> str:
        """One submit per DAG run when no plan says otherwise (stable across retries)."""
        dag_id = getattr(context.get("dag"), "dag_id", "") or ""
        return str(uuid.uuid5(_SUBMIT_NAMESPACE, f"{dag_id}/{context.get('run_id', '')}"))

    @staticmethod
    def dag_run_label(context: Any) -> str | None:
        run_id = context.get("run_id")
        dag_id = getattr(context.get("dag"), "dag_id", None)
        if not run_id:
            return None
        return f"{dag_id}/{run_id}" if dag_id else str(run_id)

    def dependency_manifests(
        self, context: Any, plan: Mapping[str, Any] | None
    ) -> list[Mapping[str, Any]]:
        ti = context.get("ti") or context.get("task_instance")
        if ti is None:
            return []
        if plan is not None:
            task_ids = list((plan.get("dependencies") or {}).get(self.task_id, ()))
        else:
            task_ids = sorted(getattr(self, "upstream_task_ids", ()) or ())
        if not task_ids:
            return []
        pulled = ti.xcom_pull(task_ids=task_ids)
        if isinstance(pulled, Mapping):
            pulled = [pulled]
        return [
            m for m in pulled or () if isinstance(m, Mapping) and m.get("kind") == MANIFEST_KIND
        ]

    def dependency_inputs(
        self, context: Any, config: Config, plan: Mapping[str, Any] | None
    ) -> list[tuple[dict[str, Any], Path]]:
        """Every artifact the upstream manifests name (theirs and what they received),
        with its file found in the stores; an artifact in no store fails the build."""
        from airflow_butido.stores import find_artifact, release_dirs, staging_dir

        releases = release_dirs(config.releases_root, config.release_stores)
        found: dict[tuple[str, str], tuple[dict[str, Any], Path]] = {}
        for manifest in self.dependency_manifests(context, plan):
            # With a plan every transitive producer is pulled directly; without one, each
            # upstream manifest forwards what it received.
            forwarded = manifest.get("inputs", ()) if plan is None else ()
            for raw in [*forwarded, *manifest.get("artifacts", ())]:
                entry = dict(raw)
                if not entry.get("store"):
                    entry.setdefault("submit_uuid", manifest.get("submit_uuid"))
                entry.setdefault("job_uuid", manifest.get("job_uuid"))
                key = (str(entry.get("store") or entry.get("submit_uuid")), entry["path"])
                if key in found:
                    continue
                submit = entry.get("submit_uuid")
                store = entry.get("store")
                stagings = [staging_dir(config.staging, submit)] if submit else []
                stores = [Path(config.releases_root) / store] if store else releases
                path = find_artifact(entry["path"], entry.get("sha256"), stagings, stores)
                if path is None:
                    raise BuildError(
                        f"artifact {entry['path']} of {manifest.get('package')} "
                        f"{manifest.get('version')} is in no store (or was changed since)"
                    )
                found[key] = (entry, path)
        return list(found.values())

    def database_engine(self, config: Config) -> Any:
        from airflow_butido.db.migrate import open_database

        return open_database(config, url=self.database_url, repo_root=Path(self.repo_path))

    def build_cache(self, engine: Any, config: Config) -> BuildCache | None:
        """Where earlier builds are looked up: the build database and the stores."""
        from airflow_butido.jobs import DatabaseBuildCache
        from airflow_butido.stores import release_dirs

        return DatabaseBuildCache(
            engine,
            config.staging,
            release_dirs(config.releases_root, config.release_stores),
            cancelled=lambda: self._killed,
        )

    def slot_leaser(self, engine: Any) -> SlotLeaser:
        from airflow_butido.endpoints import DatabaseSlots

        return DatabaseSlots(engine)

    def recorder(self, context: Any, engine: Any, plan: Mapping[str, Any] | None) -> JobRecorder:
        """Record in the database when a plan task recorded the submit; else nothing."""
        from airflow_butido.jobs import DatabaseRecorder, NullRecorder

        if plan is None:
            return NullRecorder()
        from airflow_butido.db.records import InputRef, mark_earlier_tries_failed

        ti = context.get("ti")
        dag_id = getattr(context.get("dag"), "dag_id", None)
        try_number = getattr(ti, "try_number", None)
        if dag_id and context.get("run_id") and isinstance(try_number, int) and try_number > 1:
            orphans = mark_earlier_tries_failed(
                engine, dag_id=dag_id, run_id=context["run_id"], package_name=self.package_name,
                package_version=self.package_version, try_number=try_number,
            )  # fmt: skip
            if orphans:
                self.log.warning("marked %d job(s) of earlier tries as failed", orphans)
        return DatabaseRecorder(
            engine,
            dag_id=dag_id,
            run_id=context.get("run_id"),
            try_number=try_number,
            inputs=[
                InputRef(entry["path"], entry.get("sha256"), entry.get("job_uuid"))
                for entry, _ in self._inputs
            ],
        )

    def run_build(
        self,
        request: JobRequest,
        *,
        slots: SlotLeaser,
        recorder: JobRecorder,
        cache: BuildCache | None = None,
    ) -> JobResult:
        from airflow_butido.jobs import run_job

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
        )
        if result.reused_from is not None:
            reused = result.reused_from
            self.log.info(
                "REUSED from job %s (submit %s, run %s): %s",
                reused.job_uuid,
                reused.submit_uuid,
                _run_of_job(cache, reused.job_uuid),
                reused.reason,
            )
        for artifact in result.artifacts:
            self.log.info(
                "Artifact %s (%d bytes, sha256 %s)", artifact.path, artifact.size, artifact.sha256
            )
        return result

    def log_line(self, line: str, item: Any) -> None:
        """One script output line into the task log; protocol lines become events."""
        kind = type(item).__name__
        if kind == "PhaseMarker":
            self.log.info("[butido] phase: %s", getattr(item, "name", line))
        elif kind == "Progress":
            self.log.info("[butido] progress: %s%%", getattr(item, "n", "?"))
        elif kind == "State":
            if getattr(item, "ok", False):
                self.log.info("[butido] state: OK")
            else:
                self.log.error("[butido] state: ERR %s", getattr(item, "message", "") or "")
        else:
            self.log.info("%s", line)

    def manifest(self, result: JobResult, request: JobRequest) -> dict[str, Any]:
        """The XCom value: paths and hashes, never bytes.

        Each artifact names the submit and job that produced it: for a reused build those
        of the earlier build, whose staging directory holds the file, or ``store``: the
        release store holding it when the staged copy is gone.
        """
        reused = result.reused_from
        producer_submit = reused.submit_uuid if reused else request.submit_uuid
        producer_job = reused.job_uuid if reused else result.job_uuid

        def located(artifact: Any) -> dict[str, Any]:
            entry = {**artifact.to_dict(), "submit_uuid": producer_submit, "job_uuid": producer_job}
            store = reused.store_of(artifact.path) if reused else None
            if store:
                entry["store"] = store  # staged copy gone; the release store holds it
            return entry

        manifest: dict[str, Any] = {
            "kind": MANIFEST_KIND,
            "job_uuid": result.job_uuid,
            "submit_uuid": request.submit_uuid,
            "package": result.package_name,
            "version": result.package_version,
            "image": result.image,
            "endpoint": result.endpoint,
            "reused": reused is not None,
            "outcome": "reused" if reused is not None else "built",
            "build_key": result.build_key,
            "artifacts": [located(a) for a in result.artifacts],
            "inputs": [entry for entry, _ in self._inputs],
        }
        if reused is not None:
            manifest["reused_from"] = {
                "job_uuid": reused.job_uuid,
                "submit_uuid": reused.submit_uuid,
                "reason": reused.reason,
            }
        return manifest

    def announce(self, context: Any, manifest: dict[str, Any]) -> None:
        """New artifacts update the task's assets (``outlets``), the manifest as the event's
        ``extra``; a reuse updates nothing, so DAGs scheduled on a package's asset run after
        real rebuilds only (Airflow emits events for the outlets the task holds when it ends).
        """
        if not self.outlets:
            return
        if manifest["reused"] or not manifest["artifacts"]:
            self.outlets = []
            return
        events = context.get("outlet_events")
        if events is None:
            return
        for outlet in self.outlets:
            events[outlet].extra = dict(manifest)

    # -- the container, for on_kill ---------------------------------------------------------

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
            self.container = {"Id": container.id}
            self.docker_url = container.endpoint_url or self.docker_url
            self.log.info(
                "Container %s (%s) on endpoint %s",
                container.spec.name,
                container.id[:12],
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


def _run_of_job(cache: Any, job_uuid: str) -> str:
    """``dag_id/run_id`` of an earlier job, from the build database when there is one."""
    engine = getattr(cache, "engine", None)
    if engine is None:
        return "unknown"
    from airflow_butido.db.queries import job_detail

    detail = job_detail(engine, job_uuid, with_log=False)
    if detail is None or not detail.run_id:
        return "outside Airflow"
    return f"{detail.dag_id}/{detail.run_id}"
