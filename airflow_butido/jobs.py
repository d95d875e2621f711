"""One package job, end to end, without Airflow: the operator and a local runner share it.

Steps: check the image and the environment, render the script, gather the inputs (sources,
patches, dependency artifacts), lease a slot on an endpoint, run the container, decide the
outcome with butido's log protocol, extract ``/outputs`` into the staging store, record.

Failures come in two kinds: ``InfrastructureError`` (endpoint, Docker API, database; worth a
retry, possibly elsewhere) and ``BuildError`` (the script, the recipe, the outputs; a retry
would fail the same way). A script failure raises ``ScriptFailed`` carrying the JobResult.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from airflow_butido.container import (
    BuildContainer,
    ContainerSpec,
    InputFile,
    ScriptOutcome,
    container_name,
    job_labels,
)
from airflow_butido.endpoints import SlotLeaser, base_url, lease_endpoint, usable_endpoints
from airflow_butido.errors import BuildError, ConfigError, InfrastructureError
from airflow_butido.recipes.config import Config
from airflow_butido.recipes.package import Package
from airflow_butido.sources import SourceError, source_path, verify_source
from airflow_butido.stores import Artifact, OutputsError, extract_outputs, staging_dir

log = logging.getLogger(__name__)

Env = tuple[tuple[str, str], ...]
LineCallback = Callable[[str, Any], None]  # (raw line, logproto item)

SUCCESS = "success"
FAILED = "failed"


@dataclass(frozen=True)
class JobRequest:
    """Everything one job needs; ``script`` and ``git_env`` are computed when None."""

    package: Package
    config: Config
    repo_root: Path
    image: str  # full or short name
    submit_uuid: str
    job_uuid: str
    env: Env = ()  # the submit's -E variables, in order
    dependency_artifacts: tuple[Path, ...] = ()  # files in a store, all transitive deps
    script: str | None = None
    shebang: str | None = None
    git_env: Env | None = None
    dag_run: str | None = None  # "<dag_id>/<run_id>", a container label
    endpoint_names: tuple[str, ...] | None = None  # restrict to these endpoints


@dataclass(frozen=True)
class JobResult:
    job_uuid: str
    package_name: str
    package_version: str
    image: str
    state: str  # "success" | "failed"
    exit_code: int | None
    artifacts: tuple[Artifact, ...]
    staging_dir: Path
    failure_message: str | None
    failed_phase: str | None
    log_tail: tuple[str, ...]
    endpoint: str
    container_id: str
    env: Env = field(default=())


class ScriptFailed(BuildError):
    """The build script failed (or its outputs were refused): not worth a retry."""

    def __init__(self, result: JobResult) -> None:
        self.result = result
        super().__init__(result.failure_message or "build failed")


@dataclass(frozen=True)
class JobStarted:
    job_uuid: str
    submit_uuid: str
    package_name: str
    package_version: str
    image: str
    endpoint: str
    container_id: str
    script: str
    env: Env


class JobRecorder(Protocol):
    """Where the build record goes (the database; nothing for a dry local run)."""

    def job_started(self, job: JobStarted) -> None: ...

    def job_finished(
        self,
        job_uuid: str,
        *,
        state: str,
        exit_code: int | None,
        failure_class: str | None,
        log: IO[str] | None,
    ) -> None: ...

    def artifacts_stored(self, job_uuid: str, artifacts: Sequence[Artifact]) -> None: ...


class NullRecorder:
    def job_started(self, job: JobStarted) -> None:
        pass

    def job_finished(self, job_uuid: str, **_: Any) -> None:
        pass

    def artifacts_stored(self, job_uuid: str, artifacts: Sequence[Artifact]) -> None:
        pass


class DatabaseRecorder:
    """Writes jobs, logs and artifacts through ``airflow_butido.db.records``.

    The submit row must exist already (the plan step records it).
    """

    def __init__(
        self,
        engine: Any,
        *,
        dag_id: str | None = None,
        run_id: str | None = None,
        try_number: int | None = None,
        build_key: str | None = None,
        build_key_inputs: Any = None,
        inputs: Sequence[Any] = (),
    ) -> None:
        self.engine = engine
        self.inputs = tuple(inputs)  # db.records.InputRef: the artifacts the job consumes
        self.extra = {
            "dag_id": dag_id,
            "run_id": run_id,
            "try_number": try_number,
            "build_key": build_key,
            "build_key_inputs": build_key_inputs,
        }

    def job_started(self, job: JobStarted) -> None:
        from airflow_butido.db.records import record_job_start

        record_job_start(
            self.engine,
            uuid=job.job_uuid,
            submit_uuid=job.submit_uuid,
            package_name=job.package_name,
            package_version=job.package_version,
            image=job.image,
            endpoint=job.endpoint,
            container_id=job.container_id,
            script=job.script,
            env=dict(job.env),
            **self.extra,
        )
        if self.inputs:
            from airflow_butido.db.records import record_inputs

            missing = record_inputs(self.engine, job.job_uuid, self.inputs)
            for ref in missing:
                log.warning("input %s of job %s has no artifact record", ref.path, job.job_uuid)

    def job_finished(
        self,
        job_uuid: str,
        *,
        state: str,
        exit_code: int | None,
        failure_class: str | None,
        log: IO[str] | None,
    ) -> None:
        from airflow_butido.db.records import record_job_finish

        record_job_finish(
            self.engine,
            uuid=job_uuid,
            state=state,
            exit_status=exit_code,
            failure_class=failure_class,
            log=log,
        )

    def artifacts_stored(self, job_uuid: str, artifacts: Sequence[Artifact]) -> None:
        from airflow_butido.db.records import ArtifactRecord, record_artifacts

        records = [ArtifactRecord(a.path, a.sha256, a.size) for a in artifacts]
        record_artifacts(self.engine, job_uuid, records)


# -- preparation (pure apart from reading files and git) ------------------------------------


def git_environment(config: Config, repo_root: Path) -> Env:
    """``<git_author>=<user.name>`` and ``<git_commit_hash>=<HEAD>`` when configured."""
    containers = config.containers
    pairs: list[tuple[str, str]] = []
    if containers.git_author:
        pairs.append((containers.git_author, _git(repo_root, "config", "user.name")))
    if containers.git_commit_hash:
        pairs.append((containers.git_commit_hash, _git(repo_root, "rev-parse", "HEAD")))
    return tuple(pairs)


def _git(repo_root: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo_root), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"{repo_root}: git {' '.join(args)} failed: {exc}") from exc
    return done.stdout.strip()


def container_environment(package: Package, cli_env: Env, git_env: Env) -> Env:
    """butido's order (reference 4.3): -E variables, git variables, package environment."""
    return (*cli_env, *git_env, *(package.environment or ()))


def check_env_names(config: Config, package: Package, env: Env) -> None:
    containers = config.containers
    if not containers.check_env_names:
        return
    allowed = set(containers.allowed_env)
    bad = sorted({name for name, _ in env if name not in allowed})
    if bad:
        raise BuildError(
            f"{package.path}: {package.label}: environment variable name(s) not allowed by "
            f"containers.allowed_env: {', '.join(bad)}"
        )


def job_inputs(
    package: Package,
    config: Config,
    repo_root: Path,
    dependency_artifacts: Sequence[Path],
    script: str,
) -> list[InputFile]:
    """The files to copy in: sources, dependency artifacts, patches, the script."""
    files: list[InputFile] = []
    for source in package.sources:
        path = source_path(config.source_cache, package, source)
        try:
            verify_source(path, source)
        except SourceError as exc:
            raise BuildError(f"{package.label}: source {source.name}: {exc}") from exc
        files.append(InputFile(f"/inputs/{path.name}", source=path))
    by_name: dict[str, Path] = {}
    for artifact in dependency_artifacts:
        artifact = Path(artifact)
        if not artifact.is_file():
            raise BuildError(f"{package.label}: dependency artifact {artifact} does not exist")
        if artifact.name in by_name and by_name[artifact.name] != artifact:
            log.warning(
                "%s: dependency artifacts %s and %s share the name /inputs/%s; the later wins",
                package.label,
                by_name[artifact.name],
                artifact,
                artifact.name,
            )
        by_name[artifact.name] = artifact
    files.extend(InputFile(f"/inputs/{name}", source=path) for name, path in by_name.items())
    for patch in package.patches:
        path = Path(repo_root) / patch
        if not path.is_file():
            raise BuildError(f"{package.path}: patches: {patch} does not exist")
        files.append(InputFile(f"/patches/{patch}", source=path))
    files.append(InputFile("/script", data=script.encode("utf-8")))
    return files


def render(package: Package, config: Config, shebang: str | None) -> str:
    from airflow_butido.errors import ButidoError
    from airflow_butido.scripts.render import render_script

    try:
        return render_script(package, config, shebang=shebang)
    except (BuildError, ConfigError):
        raise
    except ButidoError as exc:
        raise BuildError(f"{package.path}: rendering the script failed: {exc}") from exc


def failure_message(package: Package, outcome: ScriptOutcome, tail_lines: int) -> str:
    """The ERR message (or the exit status), the phase, and the last log lines."""
    if outcome.error_message is not None:
        head = f"{package.label}: the script reported an error: '{outcome.error_message}'"
    elif outcome.exit_code != 0:
        head = f"{package.label}: the script exited with status {outcome.exit_code}"
    else:
        head = f"{package.label}: the build failed"
    phase = outcome.failed_phase or outcome.last_phase
    head += f" in phase '{phase}'" if phase else " (no phase announced)"
    return _with_tail(head, outcome.tail, tail_lines)


def _with_tail(head: str, tail: Sequence[str], tail_lines: int) -> str:
    if not tail or tail_lines <= 0:
        return head
    shown = list(tail)[-tail_lines:]
    return f"{head}\nLast {len(shown)} log lines:\n" + "\n".join(shown)


# -- running ---------------------------------------------------------------------------------


def run_job(
    request: JobRequest,
    *,
    slots: SlotLeaser,
    recorder: JobRecorder | None = None,
    on_line: LineCallback | None = None,
    on_container: Callable[[BuildContainer | None], None] | None = None,
    on_wait: Callable[[float], None] | None = None,
    max_wait: float | None = None,
) -> JobResult:
    """Build one package; return its result or raise ScriptFailed / InfrastructureError.

    ``on_container`` is told the container once it exists and ``None`` once it is gone,
    so a caller can remove it from another thread when the job is killed.
    """
    package, config = request.package, request.config
    recorder = recorder or NullRecorder()
    image = config.resolve_image(request.image)
    if not package.image_allowed(image):
        raise BuildError(f"{package.path}: {package.label} may not be built in image {image}")
    git_env = (
        request.git_env
        if request.git_env is not None
        else git_environment(config, request.repo_root)
    )
    env = container_environment(package, request.env, git_env)
    check_env_names(config, package, env)
    script = (
        request.script if request.script is not None else render(package, config, request.shebang)
    )
    inputs = job_inputs(package, config, request.repo_root, request.dependency_artifacts, script)
    dest = staging_dir(config.staging, request.submit_uuid)

    candidates = usable_endpoints(config, image, names=request.endpoint_names)
    try:
        with lease_endpoint(
            slots, request.job_uuid, candidates, max_wait=max_wait, on_wait=on_wait
        ) as chosen:
            spec = ContainerSpec(
                name=container_name(package.name, package.version, request.job_uuid),
                image=image,
                environment=env,
                labels=job_labels(
                    package.name,
                    package.version,
                    request.job_uuid,
                    request.submit_uuid,
                    request.dag_run,
                ),
                network_mode=chosen.endpoint.network_mode,
            )
            url = base_url(chosen.endpoint)
            with BuildContainer(
                chosen.api, spec, endpoint_name=chosen.endpoint.name, endpoint_url=url
            ) as container:
                try:
                    return _run_in_container(
                        request,
                        container,
                        chosen.endpoint.name,
                        image,
                        env,
                        script,
                        inputs,
                        dest,
                        recorder,
                        on_line,
                        on_container,
                    )
                finally:
                    if on_container is not None:
                        on_container(None)
    finally:
        for candidate in candidates:
            candidate.api.close()


def _run_in_container(
    request: JobRequest,
    container: BuildContainer,
    endpoint: str,
    image: str,
    env: Env,
    script: str,
    inputs: list[InputFile],
    dest: Path,
    recorder: JobRecorder,
    on_line: LineCallback | None,
    on_container: Callable[[BuildContainer | None], None] | None,
) -> JobResult:
    package, config = request.package, request.config
    container_id = container.create()
    if on_container is not None:
        on_container(container)
    container.put_files(inputs)
    container.start()
    recorder.job_started(
        JobStarted(
            request.job_uuid,
            request.submit_uuid,
            package.name,
            package.version,
            image,
            endpoint,
            container_id,
            script,
            env,
        )
    )
    try:
        outcome = container.run_script(tail_lines=config.build_error_lines, on_line=on_line)
    except InfrastructureError:
        recorder.job_finished(
            request.job_uuid, state=FAILED, exit_code=None, failure_class="infrastructure", log=None
        )
        raise

    def result(state: str, artifacts: tuple[Artifact, ...], message: str | None) -> JobResult:
        return JobResult(
            job_uuid=request.job_uuid,
            package_name=package.name,
            package_version=package.version,
            image=image,
            state=state,
            exit_code=outcome.exit_code,
            artifacts=artifacts,
            staging_dir=dest,
            failure_message=message,
            failed_phase=outcome.failed_phase or outcome.last_phase,
            log_tail=outcome.tail,
            endpoint=endpoint,
            container_id=container_id,
            env=env,
        )

    with outcome.log:
        if not outcome.succeeded:
            failed = result(FAILED, (), failure_message(package, outcome, config.build_error_lines))
            recorder.job_finished(
                request.job_uuid,
                state=FAILED,
                exit_code=outcome.exit_code,
                failure_class="script",
                log=outcome.log,
            )
            raise ScriptFailed(failed)
        try:
            stream = container.outputs()
            if stream is None:
                raise OutputsError(
                    f"{package.label}: the script succeeded but created no /outputs directory"
                )
            artifacts = tuple(extract_outputs(stream, dest))
        except OutputsError as exc:
            failed = result(
                FAILED, (), _with_tail(str(exc), outcome.tail, config.build_error_lines)
            )
            recorder.job_finished(
                request.job_uuid,
                state=FAILED,
                exit_code=outcome.exit_code,
                failure_class="outputs",
                log=outcome.log,
            )
            raise ScriptFailed(failed) from exc
        except InfrastructureError:
            recorder.job_finished(
                request.job_uuid,
                state=FAILED,
                exit_code=outcome.exit_code,
                failure_class="infrastructure",
                log=outcome.log,
            )
            raise
        recorder.job_finished(
            request.job_uuid,
            state=SUCCESS,
            exit_code=outcome.exit_code,
            failure_class=None,
            log=outcome.log,
        )
        recorder.artifacts_stored(request.job_uuid, artifacts)
        return result(SUCCESS, artifacts, None)
