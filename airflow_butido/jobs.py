"""One package job, end to end, without Airflow: the operator and a local runner share it.

Steps: check the image and the environment, render the script, gather the inputs (sources,
patches, dependency artifacts), compute the build key, reuse an earlier build with that key
when its artifacts are intact (no container at all), else lease a slot on an endpoint, run
the container, decide the outcome with butido's log protocol, extract ``/outputs`` into the
staging store, record.

Failures come in two kinds: ``InfrastructureError`` (endpoint, Docker API, database; worth a
retry, possibly elsewhere) and ``BuildError`` (the script, the recipe, the outputs; a retry
would fail the same way). A script failure raises ``ScriptFailed`` carrying the JobResult.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from airflow_butido.container import (
    BuildContainer,
    ContainerSpec,
    InputFile,
    ScriptOutcome,
    container_name,
    job_labels,
)
from airflow_butido.endpoints import (
    Candidate,
    SlotLeaser,
    base_url,
    lease_endpoint,
    usable_endpoints,
)
from airflow_butido.errors import BuildError, ConfigError, InfrastructureError
from airflow_butido.recipes.config import Config
from airflow_butido.recipes.package import Package
from airflow_butido.sources import SourceError, source_path, verify_source
from airflow_butido.stores import (
    Artifact,
    OutputsError,
    extract_outputs,
    hash_artifact,
    staging_dir,
)

if TYPE_CHECKING:
    from airflow_butido.db.reuse import BuildKeyInputs, ReuseCandidate

log = logging.getLogger(__name__)

Env = tuple[tuple[str, str], ...]
LineCallback = Callable[[str, Any], None]  # (raw line, logproto item)

SUCCESS = "success"
FAILED = "failed"
REUSED = "reused"


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
    force_rebuild: bool = False  # build even when an earlier build could be reused
    # sha256 of each of dependency_artifacts (same order); the files are hashed when None
    dependency_sha256: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BuildKey:
    """The build key of a job, the inputs it was computed from, and the image digest."""

    key: str
    inputs: BuildKeyInputs
    image_digest: str


@dataclass(frozen=True)
class ReusedBuild:
    """The earlier job whose artifacts a job reused instead of building, and why."""

    job_uuid: str
    submit_uuid: str  # where its artifacts live: <staging>/<submit_uuid>/ or a release store
    reason: str
    artifacts: tuple[Artifact, ...] = ()  # paths relative to that submit's staging dir
    # (path, release store name) of the artifacts no longer staged but found in a release store
    released: tuple[tuple[str, str], ...] = ()

    def store_of(self, path: str) -> str | None:
        """The release store holding ``path`` when its staged copy is gone, else None."""
        return dict(self.released).get(path)


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
    build_key: str | None = None
    reused_from: ReusedBuild | None = None  # set when state == "reused"


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
    build_key: BuildKey | None = None


@dataclass(frozen=True)
class JobReused:
    """A job satisfied without a container by an earlier build's artifacts."""

    job_uuid: str
    submit_uuid: str
    package_name: str
    package_version: str
    image: str
    script: str
    env: Env
    build_key: BuildKey
    reused: ReusedBuild


class JobRecorder(Protocol):
    """Where the build record goes (the database; nothing for a dry local run)."""

    def job_started(self, job: JobStarted) -> None: ...

    def job_reused(self, job: JobReused) -> None: ...

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

    def job_reused(self, job: JobReused) -> None:
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
        self.extra: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "try_number": try_number,
            "build_key": build_key,
            "build_key_inputs": build_key_inputs,
        }

    def _key_values(self, key: BuildKey | None) -> dict[str, Any]:
        values = dict(self.extra)
        if key is not None:
            values.update(
                build_key=key.key, build_key_inputs=key.inputs, image_digest=key.image_digest
            )
        return values

    def _job_values(self, job: JobStarted | JobReused) -> dict[str, Any]:
        """The columns a started and a reused job both record."""
        return {
            "uuid": job.job_uuid,
            "submit_uuid": job.submit_uuid,
            "package_name": job.package_name,
            "package_version": job.package_version,
            "image": job.image,
            "script": job.script,
            "env": dict(job.env),
            **self._key_values(job.build_key),
        }

    def job_started(self, job: JobStarted) -> None:
        from airflow_butido.db.records import record_job_start

        record_job_start(
            self.engine,
            endpoint=job.endpoint,
            container_id=job.container_id,
            **self._job_values(job),
        )
        self._record_inputs(job.job_uuid)

    def job_reused(self, job: JobReused) -> None:
        from airflow_butido.db.records import record_reused_job

        record_reused_job(
            self.engine,
            reused_job_uuid=job.reused.job_uuid,
            reason=job.reused.reason,
            **self._job_values(job),
        )
        self._record_inputs(job.job_uuid)

    def _record_inputs(self, job_uuid: str) -> None:
        if self.inputs:
            from airflow_butido.db.records import record_inputs

            missing = record_inputs(self.engine, job_uuid, self.inputs)
            for ref in missing:
                log.warning("input %s of job %s has no artifact record", ref.path, job_uuid)

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


class BuildCache(Protocol):
    """Where earlier builds are looked up by build key, one build per key at a time."""

    def claim_or_reuse(
        self, package_name: str, package_version: str, key: BuildKey, job_uuid: str
    ) -> ReusedBuild | None:
        """An earlier build to reuse, or None: then this job holds the claim on the key,
        builds, and calls ``release`` afterwards (success or failure)."""
        ...

    def release(self, key: BuildKey, job_uuid: str) -> None: ...


class DatabaseBuildCache:
    """Reuse through the build database (``airflow_butido.db.reuse``): an earlier
    successful job of the package with the same key whose artifact files are present in
    the staging store or a release store with their recorded sha256. While another job
    holds the claim on the key, wait for it and look again.

    A claim lives ``claim_ttl_seconds`` and is renewed every ``claim_ttl_seconds / 5``
    while the build runs (every 24 s by default), so the claim of a killed task frees
    itself within two minutes.
    """

    def __init__(
        self,
        engine: Any,
        staging_root: Path,
        release_store_dirs: Sequence[Path] = (),
        *,
        poll_seconds: float = 2.0,
        timeout_seconds: float | None = None,
        claim_ttl_seconds: float = 120.0,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.cancelled = cancelled  # polled while waiting for another job's claim
        self.staging_root = Path(staging_root)
        self.release_store_dirs = tuple(Path(d) for d in release_store_dirs)
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.claim_ttl_seconds = claim_ttl_seconds
        self._heartbeats: dict[tuple[str, str], threading.Event] = {}

    def claim_or_reuse(
        self, package_name: str, package_version: str, key: BuildKey, job_uuid: str
    ) -> ReusedBuild | None:
        from airflow_butido.db import reuse

        exists = reuse.store_checker(self.staging_root, self.release_store_dirs)
        looks = 0

        def find() -> ReuseCandidate | None:
            nonlocal looks
            if self.cancelled is not None and self.cancelled():
                raise BuildError(
                    f"{package_name} {package_version}: cancelled while waiting for job "
                    f"{reuse.claim_holder(self.engine, key.key)} building the same inputs"
                )
            looks += 1
            if looks == 2:
                log.info(
                    "%s %s: job %s is building the same inputs (key %s); waiting to reuse it",
                    package_name,
                    package_version,
                    reuse.claim_holder(self.engine, key.key),
                    key.key[:12],
                )
            return reuse.find_reusable(self.engine, package_name, package_version, key.key, exists)

        kwargs: dict[str, Any] = {
            "poll_seconds": self.poll_seconds,
            "ttl_seconds": self.claim_ttl_seconds,
        }
        if self.timeout_seconds is not None:
            kwargs["timeout_seconds"] = self.timeout_seconds
        found = reuse.claim_or_reuse(self.engine, key.key, job_uuid, find, **kwargs)
        if found is None:
            self._start_heartbeat(key.key, job_uuid)
            return None
        reason = (
            f"build key {key.key[:12]} equals that of job {found.job_uuid} "
            f"(submit {found.submit_uuid}); its {len(found.artifacts)} artifact(s) are "
            "present with their recorded sha256"
        )
        artifacts = tuple(
            Artifact(a.path, a.sha256, a.size if a.size is not None else 0) for a in found.artifacts
        )
        released = tuple(
            (a.path, store)
            for a in artifacts
            if (store := self._release_store_of(found.submit_uuid, a.path)) is not None
        )
        return ReusedBuild(found.job_uuid, found.submit_uuid, reason, artifacts, released)

    def _release_store_of(self, submit_uuid: str, path: str) -> str | None:
        if (self.staging_root / submit_uuid / path).is_file():
            return None
        return next((d.name for d in self.release_store_dirs if (d / path).is_file()), None)

    def release(self, key: BuildKey, job_uuid: str) -> None:
        from airflow_butido.db.reuse import release_build_key

        stop = self._heartbeats.pop((key.key, job_uuid), None)
        if stop is not None:
            stop.set()
        release_build_key(self.engine, key.key, job_uuid)

    def _start_heartbeat(self, key: str, job_uuid: str) -> None:
        from airflow_butido.db.reuse import renew_build_key

        stop = threading.Event()
        self._heartbeats[(key, job_uuid)] = stop
        every = max(self.claim_ttl_seconds / 5, 0.1)

        def beat() -> None:
            while not stop.wait(every):
                try:
                    renew_build_key(self.engine, key, job_uuid, ttl_seconds=self.claim_ttl_seconds)
                except Exception as exc:  # a missed beat is not fatal; the next may work
                    log.warning("renewing the build claim of job %s failed: %s", job_uuid, exc)

        threading.Thread(target=beat, name=f"claim-{job_uuid[:8]}", daemon=True).start()


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
    cache: BuildCache | None = None,
) -> JobResult:
    """Build one package, or reuse an earlier build of the same key; return its result or
    raise ScriptFailed / InfrastructureError.

    With a ``cache`` and without ``request.force_rebuild``, an earlier build with the same
    build key whose artifacts are intact is reused: no slot, no container, state
    ``reused``, and the result's artifacts are the earlier ones (in the staging directory
    of ``result.reused_from.submit_uuid`` or a release store). ``on_container`` is told the
    container once it exists and ``None`` once it is gone, so a caller can remove it from
    another thread when the job is killed.
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
        candidates, digest = _same_image(candidates, image)
        key = job_build_key(request, script, git_env, digest)
        claimed = False
        if cache is not None and not request.force_rebuild:
            reused = cache.claim_or_reuse(package.name, package.version, key, request.job_uuid)
            if reused is not None:
                return _reuse(request, image, env, script, key, reused, recorder)
            claimed = True
        try:
            return _build(
                request,
                candidates,
                image,
                env,
                script,
                inputs,
                dest,
                key,
                slots=slots,
                recorder=recorder,
                on_line=on_line,
                on_container=on_container,
                on_wait=on_wait,
                max_wait=max_wait,
            )
        finally:
            if claimed:
                assert cache is not None
                cache.release(key, request.job_uuid)
    finally:
        for candidate in candidates:
            candidate.api.close()


def job_build_key(request: JobRequest, script: str, git_env: Env, image_digest: str) -> BuildKey:
    """The build key, computed by the same function as ``butido find-artifact``."""
    from airflow_butido.db.build_inputs import current_build_inputs
    from airflow_butido.db.reuse import build_key

    inputs = current_build_inputs(
        request.package,
        request.config,
        request.repo_root,
        image_digest=image_digest,
        env=request.env,
        dependency_artifacts=dependency_hashes(request),
        script=script,
        git_env=git_env,
    )
    return BuildKey(build_key(inputs), inputs, image_digest)


def dependency_hashes(request: JobRequest) -> tuple[str, ...]:
    """sha256 of every dependency artifact the job receives (given, or read from the files)."""
    given = request.dependency_sha256
    if given is not None:
        if len(given) != len(request.dependency_artifacts):
            raise ValueError("dependency_sha256 must name one hash per dependency artifact")
        return tuple(given)
    return tuple(hash_artifact(Path(path)) for path in request.dependency_artifacts)


def _same_image(candidates: list[Candidate], image: str) -> tuple[list[Candidate], str]:
    """The image ID the build key names, and the endpoints holding exactly that image.

    Endpoints whose copy of the image differs from the first endpoint's are not used for
    this job: the key must name the image the job really runs in.
    """
    import docker.errors
    import requests

    from airflow_butido.db.build_inputs import endpoint_image_digest

    digests: list[tuple[Candidate, str]] = []
    for candidate in candidates:
        try:
            digests.append((candidate, endpoint_image_digest(candidate.api, image)))
        except (docker.errors.DockerException, requests.RequestException) as exc:
            log.warning(
                "endpoint %s skipped: reading image %s: %s", candidate.endpoint.name, image, exc
            )
    if not digests:
        raise InfrastructureError(f"no endpoint could report the ID of image {image}")
    digest = digests[0][1]
    kept = [c for c, d in digests if d == digest]
    for candidate, other in digests:
        if other != digest:
            log.warning(
                "endpoint %s skipped: its image %s is %s, not %s as on endpoint %s",
                candidate.endpoint.name,
                image,
                other[:19],
                digest[:19],
                kept[0].endpoint.name,
            )
    for candidate in candidates:
        if candidate not in kept:
            candidate.api.close()
    return kept, digest


def _reuse(
    request: JobRequest,
    image: str,
    env: Env,
    script: str,
    key: BuildKey,
    reused: ReusedBuild,
    recorder: JobRecorder,
) -> JobResult:
    package = request.package
    log.debug(  # the caller reports the reuse (the operator's first log line)
        "%s: reusing the artifacts of job %s: %s", package.label, reused.job_uuid, reused.reason
    )
    recorder.job_reused(
        JobReused(
            request.job_uuid,
            request.submit_uuid,
            package.name,
            package.version,
            image,
            script,
            env,
            key,
            reused,
        )
    )
    return JobResult(
        job_uuid=request.job_uuid,
        package_name=package.name,
        package_version=package.version,
        image=image,
        state=REUSED,
        exit_code=None,
        artifacts=reused.artifacts,
        staging_dir=staging_dir(request.config.staging, reused.submit_uuid),
        failure_message=None,
        failed_phase=None,
        log_tail=(),
        endpoint="",
        container_id="",
        env=env,
        build_key=key.key,
        reused_from=reused,
    )


def _build(
    request: JobRequest,
    candidates: list[Candidate],
    image: str,
    env: Env,
    script: str,
    inputs: list[InputFile],
    dest: Path,
    key: BuildKey,
    *,
    slots: SlotLeaser,
    recorder: JobRecorder,
    on_line: LineCallback | None,
    on_container: Callable[[BuildContainer | None], None] | None,
    on_wait: Callable[[float], None] | None,
    max_wait: float | None,
) -> JobResult:
    package = request.package
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
                    key,
                    recorder,
                    on_line,
                    on_container,
                )
            finally:
                if on_container is not None:
                    on_container(None)


def _run_in_container(
    request: JobRequest,
    container: BuildContainer,
    endpoint: str,
    image: str,
    env: Env,
    script: str,
    inputs: list[InputFile],
    dest: Path,
    key: BuildKey,
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
            key,
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
            build_key=key.key,
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
