"""The story of one job (``run_job``) with a fake container runtime, recorder and cache: the
central logic, fast. The same story on a real Docker engine is tests/integration/test_jobs.py.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_butido.container import (
    INLINE_SCRIPT_MAX,
    ContainerSpec,
    InputFile,
    ScriptOutcome,
    fold_log,
    inline_script,
)
from airflow_butido.endpoints import Candidate, LocalSlots
from airflow_butido.errors import BuildError, InfrastructureError
from airflow_butido.jobs import (
    FAILED,
    REUSED,
    SUCCESS,
    BuildKey,
    ContainerRemovals,
    JobRequest,
    JobReused,
    JobStarted,
    PhaseTimer,
    ReusedBuild,
    ScriptFailed,
    format_phases,
    run_job,
)
from airflow_butido.recipes.repository import load_repository
from airflow_butido.stores import Artifact
from tests.unit._repos import IMAGE_ONE, IMAGE_TWO, write_repo

DIGEST = "sha256:" + "1" * 64


def outputs_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"outputs/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class FakeApi:
    closed = False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeContainer:
    spec: ContainerSpec
    lines: Sequence[str]
    exit_code: int
    outputs_data: bytes | None
    fail_on: str | None = None  # "run" makes the script stream break like a lost endpoint
    endpoint_name: str = "fake"
    endpoint_url: str = "unix:///fake.sock"
    id: str | None = None
    copied: list[InputFile] = field(default_factory=list)
    removed: bool = False
    on_remove: Any = None  # called when removed

    def __enter__(self) -> FakeContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def create(self) -> str:
        self.id = "c0ffee"
        return self.id

    def put_files(self, files: Sequence[InputFile]) -> None:
        self.copied.extend(files)

    def start(self) -> None:
        pass

    def run_script(
        self, *, tail_lines: int, on_line: Any = None, redact: Any = None
    ) -> ScriptOutcome:
        if self.fail_on == "run":
            raise InfrastructureError("endpoint fake went away")
        return fold_log(
            iter(self.lines),
            exit_code=lambda: self.exit_code,
            tail_lines=tail_lines,
            on_line=on_line,
            redact=redact,
        )

    def outputs(self) -> Any:
        return None if self.outputs_data is None else iter([self.outputs_data])

    def remove(self) -> None:
        if self.on_remove is not None:
            self.on_remove()
        self.removed = True


@dataclass
class FakeRuntime:
    lines: Sequence[str] = ("building", "#BUTIDO:STATE:OK")
    exit_code: int = 0
    outputs_data: bytes | None = field(default_factory=lambda: outputs_tar({"p-1.pkg": b"p\n"}))
    fail_on: str | None = None
    containers: list[FakeContainer] = field(default_factory=list)
    api: FakeApi = field(default_factory=FakeApi)
    forgotten: bool = False

    def endpoints(self, config: Any, image: str, names: Any) -> tuple[list[Candidate], str]:
        return [Candidate(config.endpoints[0], self.api)], DIGEST

    def container(self, candidate: Candidate, spec: ContainerSpec) -> FakeContainer:
        made = FakeContainer(spec, self.lines, self.exit_code, self.outputs_data, self.fail_on)
        self.containers.append(made)
        return made

    def forget(self) -> None:
        self.forgotten = True


@dataclass
class FakeRecorder:
    events: list[tuple[str, Any]] = field(default_factory=list)
    phases: list[tuple[str, dict[str, float]]] = field(default_factory=list)

    def job_started(self, job: JobStarted) -> None:
        self.events.append(("started", job))

    def job_reused(self, job: JobReused) -> None:
        self.events.append(("reused", job))

    def job_finished(self, job_uuid: str, **values: Any) -> None:
        log = values.get("log")
        values["log_text"] = log.read() if log is not None else None
        self.events.append(("finished", values))

    def job_phases(self, job_uuid: str, phases: Any) -> None:
        self.phases.append((job_uuid, dict(phases)))

    def finished(self) -> dict[str, Any]:
        (values,) = [v for kind, v in self.events if kind == "finished"]
        return values


@dataclass
class FakeCache:
    reuse: ReusedBuild | None = None
    claims: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def claim_or_reuse(self, name: str, version: str, key: BuildKey, job_uuid: str) -> Any:
        self.claims.append(key.key)
        return self.reuse

    def release(self, key: BuildKey, job_uuid: str) -> None:
        self.released.append(key.key)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(
        tmp_path / "repo",
        {"p/1": "", "only/1": f'allowed_images = ["{IMAGE_TWO}"]'},
        check_env_names=True,
        allowed_env=("FOO",),
    )


def request_for(repo: Path, name: str = "p", **changes: Any) -> JobRequest:
    repository = load_repository(repo)
    values: dict[str, Any] = {
        "package": repository.get(name, "1"),
        "config": repository.config,
        "repo_root": repo,
        "image": IMAGE_ONE,
        "submit_uuid": str(uuid.uuid4()),
        "job_uuid": str(uuid.uuid4()),
        "git_env": (),
    }
    values.update(changes)
    return JobRequest(**values)


def request_script(request: JobRequest) -> str:
    from airflow_butido.jobs import render

    return render(request.package, request.config, request.shebang)


def test_a_successful_build_records_start_then_success_with_its_artifacts(repo: Path):
    runtime, recorder = FakeRuntime(), FakeRecorder()
    request = request_for(repo, env=(("FOO", "bar"),))
    result = run_job(request, slots=LocalSlots(), recorder=recorder, runtime=runtime)
    assert result.state == SUCCESS
    assert [a.path for a in result.artifacts] == ["p-1.pkg"]
    assert (repo / "staging" / request.submit_uuid / "p-1.pkg").read_bytes() == b"p\n"
    assert [kind for kind, _ in recorder.events] == ["started", "finished"]
    finished = recorder.finished()
    assert finished["state"] == SUCCESS and finished["failure_class"] is None
    assert [a.path for a in finished["artifacts"]] == ["p-1.pkg"]
    assert finished["log_text"] == "building\n#BUTIDO:STATE:OK"
    (container,) = runtime.containers
    assert container.removed and runtime.api.closed
    assert container.spec.environment == (("FOO", "bar"),)
    # the script is all it copies in: it travels in the container's command
    assert container.copied == [] and container.spec.script == request_script(request)


def test_a_script_error_is_a_script_failure_with_the_readable_tail(repo: Path):
    runtime = FakeRuntime(lines=("#BUTIDO:PHASE:build", "oops", "#BUTIDO:STATE:ERR:broken"))
    recorder = FakeRecorder()
    with pytest.raises(ScriptFailed) as info:
        run_job(request_for(repo), slots=LocalSlots(), recorder=recorder, runtime=runtime)
    assert info.value.failure_class == "script"
    result = info.value.result
    assert result.state == FAILED and result.failed_phase == "build"
    assert result.log_tail == ("[butido] phase: build", "oops", "[butido] state: ERR broken")
    assert "reported an error: 'broken' in phase 'build'" in str(info.value)
    assert recorder.finished()["failure_class"] == "script"


@pytest.mark.parametrize("lines", [(), ("#BUTIDO:STATE:ERR:broken",)])
def test_the_slot_is_given_back_before_the_job_is_recorded_as_finished(repo: Path, lines):
    """Recording is the database's work: the endpoint slot is free again by then, whether
    the script succeeded or failed, while the job's start was recorded holding it."""
    slots = LocalSlots()

    class SlotWatcher(FakeRecorder):
        held_at: dict[str, dict[str, int]] = {}

        def job_started(self, job: JobStarted) -> None:
            self.held_at["started"] = slots.in_use()
            super().job_started(job)

        def job_finished(self, job_uuid: str, **values: Any) -> None:
            self.held_at["finished"] = slots.in_use()
            super().job_finished(job_uuid, **values)

    recorder = SlotWatcher()
    with contextlib.suppress(ScriptFailed):
        run_job(request_for(repo), slots=slots, recorder=recorder, runtime=FakeRuntime(lines=lines))
    assert sum(recorder.held_at["started"].values()) == 1
    assert sum(recorder.held_at["finished"].values()) == 0


def test_refused_outputs_are_an_outputs_failure(repo: Path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("outputs/evil")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    recorder = FakeRecorder()
    runtime = FakeRuntime(outputs_data=buffer.getvalue())
    with pytest.raises(ScriptFailed, match="symbolic link") as info:
        run_job(request_for(repo), slots=LocalSlots(), recorder=recorder, runtime=runtime)
    assert info.value.failure_class == "outputs"
    assert recorder.finished()["failure_class"] == "outputs"


def test_missing_outputs_fail_the_build(repo: Path):
    with pytest.raises(ScriptFailed, match="created no /outputs directory"):
        run_job(request_for(repo), slots=LocalSlots(), runtime=FakeRuntime(outputs_data=None))


def test_a_lost_endpoint_is_an_infrastructure_failure_recorded_once(repo: Path):
    recorder, slots = FakeRecorder(), LocalSlots()
    with pytest.raises(InfrastructureError):
        run_job(
            request_for(repo), slots=slots, recorder=recorder, runtime=FakeRuntime(fail_on="run")
        )
    assert recorder.finished()["failure_class"] == "infrastructure"
    assert recorder.finished()["log_text"] is None
    assert slots.in_use() == {}  # the slot was given back


def test_a_reusable_build_starts_no_container(repo: Path):
    earlier = ReusedBuild("job-0", "submit-0", "same key", (Artifact("p-1.pkg", "a" * 64, 2),))
    runtime, recorder, cache = FakeRuntime(), FakeRecorder(), FakeCache(reuse=earlier)
    result = run_job(
        request_for(repo), slots=LocalSlots(), recorder=recorder, cache=cache, runtime=runtime
    )
    assert result.state == REUSED and result.reused_from == earlier
    assert result.staging_dir == repo / "staging" / "submit-0"
    assert runtime.containers == [] and cache.released == []
    assert [kind for kind, _ in recorder.events] == ["reused"]


def test_a_claimed_key_is_released_after_the_build(repo: Path):
    cache = FakeCache()
    run_job(request_for(repo), slots=LocalSlots(), cache=cache, runtime=FakeRuntime())
    assert cache.claims == cache.released and len(cache.claims) == 1


def test_force_rebuild_skips_the_cache(repo: Path):
    cache = FakeCache(reuse=ReusedBuild("job-0", "submit-0", "same key"))
    result = run_job(
        request_for(repo, force_rebuild=True),
        slots=LocalSlots(),
        cache=cache,
        runtime=FakeRuntime(),
    )
    assert result.state == SUCCESS and cache.claims == []


def test_the_build_key_names_the_image_digest_and_the_inputs(repo: Path):
    first = run_job(request_for(repo), slots=LocalSlots(), runtime=FakeRuntime())
    again = run_job(request_for(repo), slots=LocalSlots(), runtime=FakeRuntime())
    other_env = run_job(
        request_for(repo, env=(("FOO", "x"),)), slots=LocalSlots(), runtime=FakeRuntime()
    )
    assert first.build_key == again.build_key != other_env.build_key


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"env": (("BAR", "1"),)}, "not allowed by containers.allowed_env: BAR"),
        ({"image": IMAGE_ONE, "package_name": "only"}, "may not be built in image"),
    ],
)
def test_checks_fail_before_any_container(repo: Path, changes: dict[str, Any], message: str):
    name = changes.pop("package_name", "p")
    runtime = FakeRuntime()
    with pytest.raises(BuildError, match=message):
        run_job(request_for(repo, name, **changes), slots=LocalSlots(), runtime=runtime)
    assert runtime.containers == []


# -- phase timings -----------------------------------------------------------------------------


class TickingClock:
    """A clock that moves one second per reading: every phase's length is predictable."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_the_phase_timer_adds_up_repeated_phases_and_orders_them():
    timer = PhaseTimer(clock=TickingClock())
    with timer.phase("record"):  # 1 -> 2
        pass
    with timer.phase("create"):  # 3 -> 4
        pass
    with timer.phase("record"):  # 5 -> 6
        pass
    assert timer.seconds() == {"create": 1.0, "record": 2.0}
    assert list(timer.seconds()) == ["create", "record"]  # PHASES order, not entry order


def test_the_phase_timer_counts_the_running_phase_and_failures():
    timer = PhaseTimer(clock=TickingClock())
    with pytest.raises(RuntimeError), timer.phase("run"):  # 1 -> 2
        raise RuntimeError("boom")
    with timer.phase("record"):  # 3, read at 4
        assert timer.seconds() == {"run": 1.0, "record": 1.0}


def test_format_phases_names_each_phase_and_the_total():
    text = format_phases({"create": 0.25, "run": 1.5})
    assert text == "phases: create 0.250 s, run 1.500 s (total 1.750 s)"
    assert format_phases({}) == "phases: none recorded"


def test_a_build_reports_every_phase_in_its_result_and_its_record(repo: Path):
    recorder = FakeRecorder()
    result = run_job(
        request_for(repo),
        slots=LocalSlots(),
        recorder=recorder,
        cache=FakeCache(),
        runtime=FakeRuntime(),
    )
    built = ("endpoints", "prepare", "reuse_check", "slot_wait", "create", "copy_in", "start")
    assert list(result.phase_seconds) == [*built, "run", "outputs", "record", "remove"]
    assert all(seconds >= 0 for seconds in result.phase_seconds.values())
    recorded = recorder.finished()["phases"]()  # read late: record included
    assert list(recorded) == list(result.phase_seconds)
    ((job, again),) = recorder.phases  # once the container is gone
    assert job == result.job_uuid and again == dict(result.phase_seconds)


def test_a_failed_build_records_its_phases_too(repo: Path):
    recorder = FakeRecorder()
    with pytest.raises(ScriptFailed):
        run_job(
            request_for(repo),
            slots=LocalSlots(),
            recorder=recorder,
            runtime=FakeRuntime(lines=("#BUTIDO:STATE:ERR:broken",)),
        )
    assert "run" in recorder.finished()["phases"]()
    assert "outputs" in recorder.finished()["phases"]()


def test_a_reused_job_records_its_phases_without_container_phases(repo: Path):
    earlier = ReusedBuild("job-0", "submit-0", "same key", (Artifact("p-1.pkg", "a" * 64, 2),))
    recorder = FakeRecorder()
    result = run_job(
        request_for(repo),
        slots=LocalSlots(),
        recorder=recorder,
        cache=FakeCache(reuse=earlier),
        runtime=FakeRuntime(),
    )
    ((_, job),) = recorder.events
    assert set(job.phase_seconds) == {"endpoints", "prepare", "reuse_check", "record"}
    assert "create" not in result.phase_seconds


# -- endpoint checks once per run --------------------------------------------------------------


def test_the_endpoint_checks_and_image_id_are_read_once_per_run(repo: Path, monkeypatch):
    from airflow_butido import endpoints
    from airflow_butido.jobs import DockerRuntime

    config = load_repository(repo).config
    checks: list[str] = []
    connected: list[str | None] = []

    class Api(FakeApi):
        api_version = "1.45"

    def usable(config: Any, image: str, names: Any = None) -> list[Candidate]:
        checks.append(image)
        return [Candidate(e, Api()) for e in config.endpoints]

    def connect(endpoint: Any, *, version: str | None = None, **_: Any) -> Api:
        connected.append(version)
        return Api()

    monkeypatch.setattr(endpoints, "usable_endpoints", usable)
    monkeypatch.setattr(endpoints, "same_image_endpoints", lambda c, image: (c, DIGEST))
    monkeypatch.setattr(endpoints, "connect", connect)
    run = DockerRuntime(run=str(uuid.uuid4()))
    first, digest = run.endpoints(config, IMAGE_ONE, None)
    again, digest_again = DockerRuntime(run=run.run).endpoints(config, IMAGE_ONE, None)
    assert checks == [IMAGE_ONE] and digest == digest_again == DIGEST
    assert [c.endpoint.name for c in again] == [c.endpoint.name for c in first]
    assert connected == ["1.45"] * len(first)  # a client without the version query
    DockerRuntime(run=str(uuid.uuid4())).endpoints(config, IMAGE_ONE, None)
    assert checks == [IMAGE_ONE] * 2  # another run checks for itself
    run.forget()
    run.endpoints(config, IMAGE_ONE, None)
    assert checks == [IMAGE_ONE] * 3  # after a failure, afresh
    DockerRuntime().endpoints(config, IMAGE_ONE, None)
    DockerRuntime().endpoints(config, IMAGE_ONE, None)
    assert checks == [IMAGE_ONE] * 5  # without a run, every time


def test_an_infrastructure_failure_forgets_the_endpoint_checks(repo: Path):
    runtime = FakeRuntime(fail_on="run")
    with pytest.raises(InfrastructureError):
        run_job(request_for(repo), slots=LocalSlots(), runtime=runtime)
    assert runtime.forgotten
    ok = FakeRuntime()
    run_job(request_for(repo), slots=LocalSlots(), runtime=ok)
    assert not ok.forgotten


@pytest.mark.parametrize(
    ("lines", "code", "reason"),
    [
        (["airflow-butido: cannot start the script: /bin/bash: not found"], 127, "no interpreter"),
        (
            ["airflow-butido: cannot start the script: /bin/ash: not executable"],
            126,
            "not executable",
        ),
        (["bash: cc: command not found"], 127, None),  # the script ran and failed
        (["airflow-butido: cannot start the script: /bin/bash: not found"], 0, None),
        (["airflow-butido: cannot start the script: /bin/bash: not found"], 1, None),
        (
            ['#BUTIDO:STATE:ERR:"x"', "airflow-butido: cannot start the script: /x: not found"],
            127,
            None,
        ),
    ],
)
def test_start_failure_tells_a_script_that_never_started(lines, code, reason) -> None:
    from airflow_butido.container import fold_log, start_failure

    outcome = fold_log(lines, exit_code=lambda: code, tail_lines=5)
    assert start_failure(outcome) == reason


def test_a_missing_interpreter_message_says_what_to_do() -> None:
    from airflow_butido.jobs import not_started_message

    text = not_started_message("no interpreter", "#!/bin/bash\necho\n")
    assert "'/bin/bash'" in text and "shebang" in text and "--shebang" in text


@pytest.mark.parametrize(
    ("first_line", "command"),
    [
        ("#!/bin/bash", ("/bin/bash", "/script")),
        ("#! /bin/sh ", ("/bin/sh", "/script")),
        ("#!/usr/bin/env bash", ("/usr/bin/env", "bash", "/script")),
        ("#!/bin/bash -e -x", ("/bin/bash", "-e -x", "/script")),  # one argument, as Linux
        ("#!", None),
        ("echo no shebang", None),
    ],
)
def test_script_command_is_what_the_kernel_runs(first_line, command) -> None:
    from airflow_butido.container import script_command

    assert script_command(f"{first_line}\necho\n") == command


def test_the_script_runs_through_its_shebang_and_without_one_never_starts(repo: Path):
    runtime = FakeRuntime()
    run_job(request_for(repo, shebang="#!/bin/sh"), slots=LocalSlots(), runtime=runtime)
    (container,) = runtime.containers
    assert container.spec.command == ("/bin/sh", "/script")
    assert container.spec.script is not None and container.spec.script.startswith("#!/bin/sh\n")

    with pytest.raises(BuildError, match="is not a shebang line") as info:
        run_job(request_for(repo, script="echo no shebang\n"), slots=LocalSlots(), runtime=runtime)
    assert not isinstance(info.value, ScriptFailed)
    assert len(runtime.containers) == 1  # no container for it


def test_a_missing_interpreter_is_a_script_failure_saying_what_to_do(repo: Path):
    runtime = FakeRuntime(
        lines=("airflow-butido: cannot start the script: /bin/bash: not found",), exit_code=127
    )
    recorder = FakeRecorder()
    with pytest.raises(ScriptFailed) as info:
        run_job(request_for(repo), slots=LocalSlots(), recorder=recorder, runtime=runtime)
    assert info.value.failure_class == "script"
    assert "'/bin/bash'" in str(info.value) and "does not exist in the image" in str(info.value)
    assert recorder.finished()["failure_class"] == "script"


def test_the_container_is_removed_after_the_record_and_outside_the_slot(repo: Path):
    slots, recorder = LocalSlots(), FakeRecorder()
    runtime = FakeRuntime()
    seen: list[tuple[dict[str, int], list[str]]] = []

    def container(candidate: Candidate, spec: ContainerSpec) -> FakeContainer:
        made = FakeRuntime.container(runtime, candidate, spec)
        made.on_remove = lambda: seen.append((slots.in_use(), [k for k, _ in recorder.events]))
        return made

    runtime.container = container  # type: ignore[method-assign]
    result = run_job(request_for(repo), slots=slots, recorder=recorder, runtime=runtime)
    assert seen == [({}, ["started", "finished"])]  # slot free, job recorded
    assert result.phase_seconds["remove"] >= 0 and runtime.api.closed

    with pytest.raises(ScriptFailed) as info:  # a failed build too
        run_job(
            request_for(repo),
            slots=slots,
            recorder=recorder,
            runtime=FakeRuntime(lines=("#BUTIDO:STATE:ERR:no",)),
        )
    assert "remove" in info.value.result.phase_seconds


def test_removals_take_the_container_in_the_background_and_close_waits_for_them(repo: Path):
    import threading

    release = threading.Event()
    recorded: list[tuple[str, dict[str, float]]] = []
    runtime, recorder = FakeRuntime(), FakeRecorder()
    made = runtime.container

    def container(candidate: Candidate, spec: ContainerSpec) -> FakeContainer:
        found = made(candidate, spec)
        found.on_remove = lambda: release.wait(10)
        return found

    runtime.container = container  # type: ignore[method-assign]
    removals = ContainerRemovals(record=lambda job, phases: recorded.append((job, dict(phases))))
    slots = LocalSlots()
    result = run_job(
        request_for(repo), slots=slots, recorder=recorder, runtime=runtime, removals=removals
    )
    (box,) = runtime.containers
    assert result.state == SUCCESS and slots.in_use() == {}
    assert not box.removed and not runtime.api.closed and removals.pending() == 1
    assert recorder.phases == []  # the removals record the phases, not the job
    release.set()
    removals.close()
    assert box.removed and runtime.api.closed and removals.pending() == 0
    ((job, phases),) = recorded
    assert job == result.job_uuid and phases["remove"] >= 0 and "record" in phases

    late = FakeRuntime()  # a job outliving its run: removed at once
    run_job(request_for(repo), slots=slots, runtime=late, removals=removals)
    assert late.containers[0].removed


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"StatusCode": 3}, 3),
        ({"StatusCode": 0, "Error": None}, 0),
        ({"StatusCode": 137, "Error": {"Message": ""}}, 137),  # what engines send for none
        ({"StatusCode": -1, "Error": {"Message": "container gone"}}, None),
        ({"Error": None}, None),
    ],
)
def test_the_exit_status_comes_from_the_engines_wait(answer, status) -> None:
    from airflow_butido.container import BuildContainer

    class WaitApi:
        def wait(self, container_id: str, timeout: float) -> dict[str, Any]:
            assert container_id == "c1"
            return answer

    container = BuildContainer(WaitApi(), ContainerSpec(name="butido-x", image="i"))
    container.id = "c1"
    if status is None:
        with pytest.raises(InfrastructureError, match="no exit status for the script in butido-x"):
            container.wait()
    else:
        assert container.wait() == status
    container.id = None  # removed meanwhile
    with pytest.raises(InfrastructureError, match="removed while the script ran"):
        container.wait()


def test_only_a_lone_short_text_script_travels_in_the_command(tmp_path: Path):
    script = InputFile("/script", data=b"#!/bin/sh\necho \xc3\xbc\n", mode=0o755)
    assert inline_script([script]) == ("#!/bin/sh\necho \u00fc\n", [])
    source = tmp_path / "src"
    source.write_bytes(b"x")
    with_source = [InputFile("/inputs/src", source=source), script]
    assert inline_script(with_source) == (None, with_source)  # one upload for all of them
    for data in (b"#!/bin/sh\n" + b"x" * INLINE_SCRIPT_MAX, b"#!/bin/sh\n\0", b"#!/bin/sh\n\xff"):
        big = InputFile("/script", data=data, mode=0o755)
        assert inline_script([big]) == (None, [big])
