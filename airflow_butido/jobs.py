"""One package job, end to end, without Airflow: the package task and ``butido build`` share it.

The story of a job: check the image and the environment, render the script, gather the inputs
(sources, patches, dependency artifacts), compute the build key, reuse an earlier build with
that key when its artifacts are intact (no container at all), else lease a slot on an
endpoint, run the container, decide the outcome with butido's log protocol, extract
``/outputs`` into the staging store, record.

Failures come in two kinds: ``InfrastructureError`` (endpoint, Docker API, database; worth a
retry, possibly elsewhere) and ``BuildError`` (the script, the recipe, the outputs; a retry
would fail the same way). A failed build raises ``ScriptFailed`` carrying the JobResult.

Where the record goes (``JobRecorder``), where earlier builds are found (``BuildCache``) and
where containers run (``ContainerRuntime``) are passed in: the database and Docker in real
runs (:mod:`airflow_butido.db.recorder`, :mod:`airflow_butido.db.build_cache`,
:class:`DockerRuntime`), fakes in unit tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from airflow_butido.build_key import (
    BuildKeyInputs,
    Env,
    container_environment,
    git_environment,
    key_inputs,
)
from airflow_butido.container import (
    SCRIPT_PATH,
    BuildContainer,
    ContainerSpec,
    InputFile,
    ScriptOutcome,
    container_name,
    inline_script,
    job_labels,
    remove_dead_containers,
    script_command,
    start_failure,
)
from airflow_butido.endpoints import Candidate, SlotLeaser, base_url, lease_endpoint
from airflow_butido.errors import BuildError, ConfigError, InfrastructureError
from airflow_butido.object_store import StorePath, store_root, url_of
from airflow_butido.recipes.config import Config
from airflow_butido.recipes.package import Package
from airflow_butido.recipes.paths import confine
from airflow_butido.run_inputs import disallowed_env_names, masked_env, redactor
from airflow_butido.sources import SourceError, source_path, verify_source
from airflow_butido.stores import (
    Artifact,
    OutputsError,
    discard_artifacts,
    extract_outputs,
    hash_artifact,
    remove_stale_parts,
    staging_dir,
)

log = logging.getLogger(__name__)

LineCallback = Callable[[str, Any], None]  # (raw line, logproto item)

SUCCESS = "success"
FAILED = "failed"
REUSED = "reused"

# The phases of a job, in the order they happen (see PhaseTimer).
PHASES = (
    "endpoints",  # connecting to the endpoints, the image's ID
    "prepare",  # checks, the script, verifying sources, the build key
    "reuse_check",  # looking up an earlier build with the same key
    "slot_wait",  # waiting for a free slot on an endpoint (and clearing it of dead builds)
    "create",  # creating the container
    "copy_in",  # the inputs into the container
    "start",  # starting it
    "run",  # the script, its log streamed
    "outputs",  # /outputs extracted into the staging store
    "record",  # writing the job, its log and artifacts to the build database
    "remove",  # removing the container, after the record and outside the slot
)


class PhaseTimer:
    """Wall-clock seconds per phase of one job, to tell where a build's time goes.

    ``with timer.phase("run"):`` adds the block's duration to that phase (a phase may be
    entered more than once); ``seconds()`` includes the phase still running.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._done: dict[str, float] = {}
        self._open: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._open.append((name, self._clock()))
        try:
            yield
        finally:
            _, started = self._open.pop()
            self._done[name] = self._done.get(name, 0.0) + self._clock() - started

    def seconds(self) -> dict[str, float]:
        """Seconds per phase so far (phases not entered are left out), in PHASES order."""
        now = self._clock()
        found = dict(self._done)
        for name, started in self._open:
            found[name] = found.get(name, 0.0) + now - started
        order = {name: i for i, name in enumerate(PHASES)}
        return {
            name: round(found[name], 4)
            for name in sorted(found, key=lambda n: (order.get(n, len(order)), n))
        }


def format_phases(seconds: Mapping[str, float]) -> str:
    """``phases: endpoints 0.012 s, prepare 0.004 s, … (total 1.234 s)``."""
    if not seconds:
        return "phases: none recorded"
    parts = ", ".join(f"{name} {value:.3f} s" for name, value in seconds.items())
    return f"phases: {parts} (total {sum(seconds.values()):.3f} s)"


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
    dependency_artifacts: tuple[StorePath, ...] = ()  # files in a store, all transitive deps
    script: str | None = None
    shebang: str | None = None
    git_env: Env | None = None
    dag_run: str | None = None  # "<dag_id>/<run_id>", a container label
    endpoint_names: tuple[str, ...] | None = None  # restrict to these endpoints
    force_rebuild: bool = False  # build even when an earlier build could be reused
    # sha256 of each of dependency_artifacts (same order); the files are hashed when None
    dependency_sha256: tuple[str, ...] | None = None
    verify_sources: bool = True  # False: sources must exist, their hashes are not checked


@dataclass(frozen=True)
class BuildKey:
    """The build key of a job and the inputs it was computed from."""

    key: str
    inputs: BuildKeyInputs

    @property
    def image_digest(self) -> str:
        return self.inputs.image_digest


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
    state: str  # "success" | "failed" | "reused"
    exit_code: int | None
    artifacts: tuple[Artifact, ...]
    staging_dir: StorePath
    failure_message: str | None
    failed_phase: str | None
    log_tail: tuple[str, ...]
    endpoint: str
    container_id: str
    env: Env = field(default=())
    build_key: str | None = None
    reused_from: ReusedBuild | None = None  # set when state == "reused"
    phase_seconds: Mapping[str, float] = field(default_factory=dict)  # see PhaseTimer


class ScriptFailed(BuildError):
    """The build script failed (or its outputs were refused): not worth a retry.

    ``failure_class`` is what the record says: ``script`` or ``outputs``.
    """

    def __init__(self, result: JobResult, failure_class: str = "script") -> None:
        self.result = result
        self.failure_class = failure_class
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
    phase_seconds: Mapping[str, float] = field(default_factory=dict)


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
        artifacts: Sequence[Artifact] = (),
        phases: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        """The end of a job: ``success`` with its artifacts, or ``failed`` with a class.
        ``phases()``, read as late as possible, gives the seconds of each phase."""
        ...

    def job_phases(self, job_uuid: str, phases: Mapping[str, float]) -> None:
        """The seconds of each phase again, once the container is gone (its removal
        comes after the record, outside the slot)."""
        ...


class NullRecorder:
    def job_started(self, job: JobStarted) -> None:
        pass

    def job_reused(self, job: JobReused) -> None:
        pass

    def job_finished(self, job_uuid: str, **_: object) -> None:
        pass

    def job_phases(self, job_uuid: str, phases: Mapping[str, float]) -> None:
        pass


class BuildCache(Protocol):
    """Where earlier builds are looked up by build key, one build per key at a time."""

    def claim_or_reuse(
        self, package_name: str, package_version: str, key: BuildKey, job_uuid: str
    ) -> ReusedBuild | None:
        """An earlier build to reuse, or None: then this job holds the claim on the key,
        builds, and calls ``release`` afterwards (success or failure)."""
        ...

    def release(self, key: BuildKey, job_uuid: str) -> None: ...


class ContainerRuntime(Protocol):
    """Where build containers run: the Docker endpoints of config.toml."""

    def endpoints(
        self, config: Config, image: str, names: Sequence[str] | None
    ) -> tuple[list[Candidate], str]:
        """The usable endpoints holding ``image`` (all with the same copy), and its ID."""
        ...

    def container(self, candidate: Candidate, spec: ContainerSpec) -> BuildContainer: ...

    def forget(self) -> None:
        """An endpoint failed: the next job checks the endpoints afresh."""
        ...


# (run, image, endpoint names asked for, endpoints) -> (usable endpoints, image ID, API versions)
_EndpointsKey = tuple[str, str, tuple[str, ...] | None, tuple[tuple[str, str], ...]]
_checked_endpoints: dict[_EndpointsKey, tuple[tuple[str, ...], str, dict[str, str]]] = {}
_CHECKED_ENDPOINTS_KEPT = 64


class DockerRuntime:
    """Containers on the configured Docker endpoints, through the Docker SDK.

    With a ``run`` (the submit), the endpoint checks (the engine answers, runs an allowed
    Docker version, holds the image) and the image's ID are done by the run's first job
    in this process and reused by the others, until an endpoint fails (``forget``): the
    jobs of one ``butido build`` run in one image, the ID their build keys name.
    """

    def __init__(self, run: str | None = None) -> None:
        self.run = run

    def _key(self, config: Config, image: str, names: Sequence[str] | None) -> _EndpointsKey:
        endpoints = tuple((e.name, base_url(e)) for e in config.endpoints)
        return (self.run or "", image, None if names is None else tuple(names), endpoints)

    def endpoints(
        self, config: Config, image: str, names: Sequence[str] | None
    ) -> tuple[list[Candidate], str]:
        from airflow_butido.endpoints import connect, same_image_endpoints, usable_endpoints

        key = self._key(config, image, names)
        known = _checked_endpoints.get(key) if self.run else None
        if known is not None:
            usable, digest, versions = known
            chosen = [e for e in config.endpoints if e.name in usable]
            return [Candidate(e, connect(e, version=versions[e.name])) for e in chosen], digest
        candidates, digest = same_image_endpoints(
            usable_endpoints(config, image, names=names), image
        )
        if self.run:
            if len(_checked_endpoints) >= _CHECKED_ENDPOINTS_KEPT:
                _checked_endpoints.clear()
            _checked_endpoints[key] = (
                tuple(c.endpoint.name for c in candidates),
                digest,
                {c.endpoint.name: str(c.api.api_version) for c in candidates},
            )
        return candidates, digest

    def forget(self) -> None:
        for key in [k for k in _checked_endpoints if k[0] == (self.run or "")]:
            _checked_endpoints.pop(key, None)

    def container(self, candidate: Candidate, spec: ContainerSpec) -> BuildContainer:
        endpoint = candidate.endpoint
        return BuildContainer(
            candidate.api, spec, endpoint_name=endpoint.name, endpoint_url=base_url(endpoint)
        )


# -- removing containers ---------------------------------------------------------------------


class ContainerRemovals:
    """Build containers removed in the background once their jobs have left their slots.

    The engine takes a few tenths of a second to remove a container. A job hands its
    container over here instead of waiting for that, so its endpoint slot and the thread
    running it go to the next job at once. ``close()`` returns once every container handed
    over is gone: a run calls it before it ends, and no container is left behind (one left
    by a killed process stops by itself and the next job on its endpoint removes it, see
    ``remove_dead_containers``). ``record`` is told each job's phases, ``remove`` included.
    """

    def __init__(
        self,
        record: Callable[[str, Mapping[str, float]], None] | None = None,
        *,
        workers: int = 2,
    ) -> None:
        self.record = record
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="remove")
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def submit(
        self, job_uuid: str, container: BuildContainer, timer: PhaseTimer, done: Callable[[], None]
    ) -> None:
        """Remove ``container`` soon, then call ``done`` (closes its endpoint's client);
        at once when closed already (a job outliving its run)."""
        try:
            future = self._pool.submit(self._remove, job_uuid, container, timer, done)
        except RuntimeError:  # shut down
            self._remove(job_uuid, container, timer, done)
            return
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _remove(
        self, job_uuid: str, container: BuildContainer, timer: PhaseTimer, done: Callable[[], None]
    ) -> None:
        try:
            _remove_timed(container, timer)
            if self.record is not None:
                _record_phases(self.record, job_uuid, timer)
        finally:
            done()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Wait until every container handed over is removed."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ContainerRemovals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove_timed(container: BuildContainer, timer: PhaseTimer) -> None:
    with timer.phase("remove"):
        try:
            container.remove()  # logs what failed; the job's outcome stands
        except Exception as exc:
            log.warning("removing container %s failed: %s", container.spec.name, exc)


def _record_phases(
    record: Callable[[str, Mapping[str, float]], None], job_uuid: str, timer: PhaseTimer
) -> None:
    try:
        record(job_uuid, timer.seconds())
    except Exception as exc:  # a timing annotation: the job is recorded already
        log.warning("recording the phases of job %s failed: %s", job_uuid, exc)


# -- preparation (pure apart from reading files and git) ------------------------------------


def check_env_names(config: Config, package: Package, env: Env) -> None:
    bad = disallowed_env_names((name for name, _ in env), config.containers)
    if bad:
        raise BuildError(
            f"{package.path}: {package.label}: environment variable name(s) not allowed by "
            f"containers.allowed_env: {', '.join(bad)}"
        )


def job_inputs(
    package: Package,
    config: Config,
    repo_root: Path,
    dependency_artifacts: Sequence[StorePath],
    script: str,
    *,
    verify: bool = True,
) -> list[InputFile]:
    """The files to copy in: sources (hash-checked when ``verify``), dependency artifacts,
    patches, and the script, executable: it runs through its own shebang line."""
    files: list[InputFile] = []
    for source in package.sources:
        path = source_path(store_root(config, "source_cache"), package, source)
        try:
            if verify:
                verify_source(path, source)
            elif not path.is_file():
                raise SourceError(f"{path}: source file missing")
        except SourceError as exc:
            raise BuildError(f"{package.label}: source {source.name}: {exc}") from exc
        files.append(InputFile(f"/inputs/{path.name}", source=path))
    by_name: dict[str, StorePath] = {}
    for artifact in dependency_artifacts:
        if not artifact.is_file():
            raise BuildError(
                f"{package.label}: dependency artifact {url_of(artifact)} does not exist"
            )
        if artifact.name in by_name and by_name[artifact.name] != artifact:
            raise BuildError(
                f"{package.label}: dependency artifacts {url_of(by_name[artifact.name])} and "
                f"{url_of(artifact)} would both be /inputs/{artifact.name}"
            )
        by_name[artifact.name] = artifact
    files.extend(InputFile(f"/inputs/{name}", source=path) for name, path in by_name.items())
    for patch in package.patches:
        path = confine(repo_root, patch, what=f"{package.path}: patch {patch}")
        if not path.is_file():
            raise BuildError(f"{package.path}: patches: {patch} does not exist")
        files.append(InputFile(f"/patches/{patch}", source=path))
    files.append(InputFile(SCRIPT_PATH, data=script.encode("utf-8"), mode=0o755))
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


def failure_message(
    package: Package, outcome: ScriptOutcome, tail_lines: int, script: str = ""
) -> str:
    """The ERR message (or the exit status), the phase, and the last log lines; or, when the
    script could not be started at all, why and what to do."""
    cannot_start = start_failure(outcome)
    if cannot_start is not None:
        head = f"{package.label}: {not_started_message(cannot_start, script)}"
        return _with_tail(head, outcome.tail, tail_lines)
    if outcome.error_message is not None:
        head = f"{package.label}: the script reported an error: '{outcome.error_message}'"
    elif outcome.exit_code != 0:
        head = f"{package.label}: the script exited with status {outcome.exit_code}"
    else:
        head = f"{package.label}: the build failed"
    phase = outcome.failed_phase or outcome.last_phase
    head += f" in phase '{phase}'" if phase else " (no phase announced)"
    return _with_tail(head, outcome.tail, tail_lines)


def not_started_message(reason: str, script: str) -> str:
    """Why the image cannot run the script, and what to change (a recipe or image problem:
    retrying elsewhere would fail the same way)."""
    first = script.split("\n", 1)[0]
    if reason == "no interpreter":
        return (
            f"the script cannot start: its interpreter {first.removeprefix('#!').strip()!r} "
            f"(shebang line {first!r}) does not exist in the image; set `shebang` in "
            'config.toml or pass --shebang (run conf "shebang") to an interpreter the '
            "image has, e.g. '#!/bin/sh', or build in an image that has this one"
        )
    return (
        f"the script cannot start: its first line {first!r} is not a shebang line the image "
        'can execute; set `shebang` in config.toml or pass --shebang (run conf "shebang"), '
        "e.g. '#!/bin/bash'"
    )


def _with_tail(head: str, tail: Sequence[str], tail_lines: int) -> str:
    if not tail or tail_lines <= 0:
        return head
    shown = list(tail)[-tail_lines:]
    return f"{head}\nLast {len(shown)} log lines:\n" + "\n".join(shown)


def dependency_hashes(request: JobRequest) -> tuple[str, ...]:
    """sha256 of every dependency artifact the job receives (given, or read from the files)."""
    given = request.dependency_sha256
    if given is not None:
        if len(given) != len(request.dependency_artifacts):
            raise ValueError("dependency_sha256 must name one hash per dependency artifact")
        return tuple(given)
    return tuple(hash_artifact(path) for path in request.dependency_artifacts)


def job_build_key(request: JobRequest, script: str, git_env: Env, image_digest: str) -> BuildKey:
    inputs = key_inputs(
        request.package,
        request.config,
        request.repo_root,
        image_digest=image_digest,
        env=request.env,
        dependency_sha256=dependency_hashes(request),
        script=script,
        git_env=git_env,
    )
    return BuildKey(inputs.key, inputs)


@dataclass(frozen=True)
class _Prepared:
    """A job checked and ready: what it runs in, with what, from which files."""

    image: str
    env: Env
    git_env: Env
    script: str
    inputs: list[InputFile]
    dest: StorePath
    stored_env: Env  # env with the values of secret variables masked: what records keep
    command: tuple[str, ...]  # the script's shebang interpreter, its argument, /script
    inline_script: str | None = None  # /script, given in the container's command


def _prepare(request: JobRequest) -> _Prepared:
    package, config = request.package, request.config
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
    command = script_command(script)
    if command is None:
        raise BuildError(f"{package.path}: {package.label}: {not_started_message('', script)}")
    inputs = job_inputs(
        package,
        config,
        request.repo_root,
        request.dependency_artifacts,
        script,
        verify=request.verify_sources,
    )
    dest = staging_dir(store_root(config, "staging"), request.submit_uuid)
    stored_env = masked_env(env, config.secret_env)
    inline, inputs = inline_script(inputs)
    return _Prepared(image, env, git_env, script, inputs, dest, stored_env, command, inline)


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
    runtime: ContainerRuntime | None = None,
    removals: ContainerRemovals | None = None,
) -> JobResult:
    """Build one package, or reuse an earlier build of the same key; return its result or
    raise ScriptFailed / InfrastructureError.

    With a ``cache`` and without ``request.force_rebuild``, an earlier build with the same
    build key whose artifacts are intact is reused: no slot, no container, state
    ``reused``, and the result's artifacts are the earlier ones (in the staging directory
    of ``result.reused_from.submit_uuid`` or a release store). ``on_container`` is told the
    container once it exists and ``None`` once the job is done with it, so a caller can
    remove it from another thread when the job is killed.

    The container is removed after the job has been recorded and has left its slot (and
    its build key): right away, or by ``removals`` in the background when given.
    """
    timer = PhaseTimer()
    runtime = runtime or DockerRuntime(run=request.submit_uuid)
    rec = recorder or NullRecorder()
    job = _Job(request, rec, runtime, on_line, _database_of(slots), timer)
    candidates: list[Candidate] = []
    try:
        result = _run_job(job, slots, on_container, on_wait, max_wait, cache, candidates)
    except ScriptFailed as exc:
        _remove_container(job, candidates, removals)
        exc.result = dataclasses.replace(exc.result, phase_seconds=timer.seconds())
        raise
    except BaseException:
        _remove_container(job, candidates, removals)
        raise
    _remove_container(job, candidates, removals)
    return dataclasses.replace(result, phase_seconds=timer.seconds())


def _remove_container(
    job: _Job, candidates: Sequence[Candidate], removals: ContainerRemovals | None
) -> None:
    """Remove the job's container (or hand it to ``removals``); close the endpoints' clients."""
    container, api = job.container, job.container_api
    kept = api if container is not None and removals is not None else None
    for candidate in candidates:
        if candidate.api is not kept:
            candidate.api.close()
    if container is None:
        return
    if removals is not None:
        removals.submit(job.request.job_uuid, container, job.timer, api.close)
        return
    _remove_timed(container, job.timer)
    _record_phases(job.recorder.job_phases, job.request.job_uuid, job.timer)


def _run_job(
    job: _Job,
    slots: SlotLeaser,
    on_container: Callable[[BuildContainer | None], None] | None,
    on_wait: Callable[[float], None] | None,
    max_wait: float | None,
    cache: BuildCache | None,
    candidates: list[Candidate],
) -> JobResult:
    request, timer = job.request, job.timer
    with timer.phase("prepare"):
        prepared = _prepare(request)
        # left by extractions killed outright
        remove_stale_parts(store_root(request.config, "staging"))
    with timer.phase("endpoints"):
        found, digest = job.runtime.endpoints(
            request.config, prepared.image, request.endpoint_names
        )
        candidates.extend(found)
    try:
        with timer.phase("prepare"):
            key = job_build_key(request, prepared.script, prepared.git_env, digest)
        with _claimed(cache, request, key, timer) as reused:
            if reused is not None:
                return job.reuse(prepared, key, reused)
            with contextlib.ExitStack() as held:
                with timer.phase("slot_wait"):
                    chosen = held.enter_context(
                        lease_endpoint(
                            slots, request.job_uuid, candidates, max_wait=max_wait, on_wait=on_wait
                        )
                    )
                    _remove_dead_containers(slots, chosen)
                job.leave_slot = held.close  # after the outputs; again on the way out: no-op
                return job.build(prepared, key, chosen, on_container)
    except InfrastructureError:
        job.runtime.forget()
        raise


def _database_of(slots: SlotLeaser) -> str | None:
    """The identity of the build database holding the slots, when they are shared."""
    database_id = getattr(slots, "database_id", None)
    return str(database_id()) if callable(database_id) else None


def _remove_dead_containers(slots: SlotLeaser, chosen: Candidate) -> None:
    """Clean the endpoint of what killed builds of this build database left (only where
    the slots are shared, so every job alive anywhere is known by its lease)."""
    live_jobs = getattr(slots, "live_jobs", None)
    database = _database_of(slots)
    try:
        live = live_jobs() if callable(live_jobs) else None
        if live is None or database is None:
            return
        for name in remove_dead_containers(chosen.api, database, live):
            log.info("removed container %s left by a dead build", name)
    except Exception as exc:  # housekeeping: the job itself goes on
        log.warning("looking for containers of dead builds failed: %s", exc)


@contextlib.contextmanager
def _claimed(
    cache: BuildCache | None, request: JobRequest, key: BuildKey, timer: PhaseTimer
) -> Iterator[ReusedBuild | None]:
    """An earlier build to reuse, or None while this job holds the claim on its key."""
    if cache is None or request.force_rebuild:
        yield None
        return
    package = request.package
    with timer.phase("reuse_check"):
        reused = cache.claim_or_reuse(package.name, package.version, key, request.job_uuid)
    if reused is not None:
        yield reused
        return
    try:
        yield None
    finally:
        cache.release(key, request.job_uuid)


@dataclass
class _Job:
    request: JobRequest
    recorder: JobRecorder
    runtime: ContainerRuntime
    on_line: LineCallback | None
    database: str | None = None  # the build database holding the slots, a container label
    timer: PhaseTimer = field(default_factory=PhaseTimer)
    container: BuildContainer | None = None  # once made; removed after the slot is left
    container_api: Any = None  # the client of the container's endpoint
    # gives the endpoint slot back once the container is done with (outputs collected):
    # recording the job is the build database's work, not the endpoint's
    leave_slot: Callable[[], None] = lambda: None

    def result(self, prepared: _Prepared, key: BuildKey, **values: Any) -> JobResult:
        package = self.request.package
        fields: dict[str, Any] = {
            "job_uuid": self.request.job_uuid,
            "package_name": package.name,
            "package_version": package.version,
            "image": prepared.image,
            "exit_code": None,
            "artifacts": (),
            "staging_dir": prepared.dest,
            "failure_message": None,
            "failed_phase": None,
            "log_tail": (),
            "endpoint": "",
            "container_id": "",
            "env": prepared.stored_env,
            "build_key": key.key,
        }
        fields.update(values)
        fields["phase_seconds"] = self.timer.seconds()
        return JobResult(**fields)

    def reuse(self, prepared: _Prepared, key: BuildKey, reused: ReusedBuild) -> JobResult:
        request, package = self.request, self.request.package
        log.debug(  # the caller reports the reuse (the operator's first log line)
            "%s: reusing the artifacts of job %s: %s", package.label, reused.job_uuid, reused.reason
        )
        with self.timer.phase("record"):
            self.recorder.job_reused(
                JobReused(
                    request.job_uuid,
                    request.submit_uuid,
                    package.name,
                    package.version,
                    prepared.image,
                    prepared.script,
                    prepared.stored_env,
                    key,
                    reused,
                    self.timer.seconds(),
                )
            )
        return self.result(
            prepared,
            key,
            state=REUSED,
            artifacts=reused.artifacts,
            staging_dir=staging_dir(store_root(request.config, "staging"), reused.submit_uuid),
            reused_from=reused,
        )

    def build(
        self,
        prepared: _Prepared,
        key: BuildKey,
        chosen: Candidate,
        on_container: Callable[[BuildContainer | None], None] | None,
    ) -> JobResult:
        request, package = self.request, self.request.package
        spec = ContainerSpec(
            name=container_name(package.name, package.version, request.job_uuid),
            image=prepared.image,
            command=prepared.command,
            script=prepared.inline_script,
            environment=prepared.env,
            labels=job_labels(
                package.name,
                package.version,
                request.job_uuid,
                request.submit_uuid,
                request.dag_run,
                self.database,
            ),
            network_mode=chosen.endpoint.network_mode,
        )
        phase = self.timer.phase
        self.container_api = chosen.api
        container = self.container = self.runtime.container(chosen, spec)
        try:
            with phase("create"):
                container_id = container.create()
            if on_container is not None:
                on_container(container)
            with phase("copy_in"):
                container.put_files(prepared.inputs)
            with phase("start"):
                container.start()
            with phase("record"):
                self.recorder.job_started(
                    JobStarted(
                        request.job_uuid,
                        request.submit_uuid,
                        package.name,
                        package.version,
                        prepared.image,
                        chosen.endpoint.name,
                        container_id,
                        prepared.script,
                        prepared.stored_env,
                        key,
                    )
                )
            return self.run(prepared, key, container, chosen.endpoint.name, container_id)
        finally:
            if on_container is not None:
                on_container(None)

    def run(
        self,
        prepared: _Prepared,
        key: BuildKey,
        container: BuildContainer,
        endpoint: str,
        container_id: str,
    ) -> JobResult:
        """Run the script, collect ``/outputs``, and record how the job ended (once)."""
        request, config = self.request, self.request.config
        outcome: ScriptOutcome | None = None
        phase = self.timer.phase
        try:
            with phase("run"):
                outcome = container.run_script(
                    tail_lines=config.build_error_lines,
                    on_line=self.on_line,
                    redact=redactor(prepared.env, config.secret_env),
                )
            built = dict(
                exit_code=outcome.exit_code,
                failed_phase=outcome.failed_phase or outcome.last_phase,
                log_tail=outcome.tail,
                endpoint=endpoint,
                container_id=container_id,
            )
            with phase("outputs"):
                artifacts = self.outputs(prepared, key, container, outcome, built)
            try:
                self.leave_slot()
                with phase("record"):
                    self.recorder.job_finished(
                        request.job_uuid,
                        state=SUCCESS,
                        exit_code=outcome.exit_code,
                        failure_class=None,
                        log=outcome.log,
                        artifacts=artifacts,
                        phases=self.timer.seconds,
                    )
            except BaseException:
                # files nothing records would be orphans in the staging store
                discard_artifacts(prepared.dest, artifacts)
                raise
            return self.result(prepared, key, state=SUCCESS, artifacts=artifacts, **built)
        except (ScriptFailed, InfrastructureError) as exc:
            self.leave_slot()
            with phase("record"):
                self.recorder.job_finished(
                    request.job_uuid,
                    state=FAILED,
                    exit_code=outcome.exit_code if outcome is not None else None,
                    failure_class=getattr(exc, "failure_class", "infrastructure"),
                    log=outcome.log if outcome is not None else None,
                    phases=self.timer.seconds,
                )
            raise
        finally:
            if outcome is not None:
                outcome.log.close()

    def outputs(
        self,
        prepared: _Prepared,
        key: BuildKey,
        container: BuildContainer,
        outcome: ScriptOutcome,
        built: dict[str, Any],
    ) -> tuple[Artifact, ...]:
        """The artifacts of a successful script, or ScriptFailed."""
        package, config = self.request.package, self.request.config
        if not outcome.succeeded or start_failure(outcome) is not None:
            message = failure_message(package, outcome, config.build_error_lines, prepared.script)
            failed = self.result(prepared, key, state=FAILED, failure_message=message, **built)
            raise ScriptFailed(failed, "script")
        try:
            stream = container.outputs()
            if stream is None:
                raise OutputsError(
                    f"{package.label}: the script succeeded but created no /outputs directory"
                )
            return tuple(extract_outputs(stream, prepared.dest, owner=package.label))
        except OutputsError as exc:
            message = _with_tail(str(exc), outcome.tail, config.build_error_lines)
            failed = self.result(prepared, key, state=FAILED, failure_message=message, **built)
            raise ScriptFailed(failed, "outputs") from exc
