"""The story of one job (``run_job``) with a fake container runtime, recorder and cache: the
central logic, fast. The same story on a real Docker engine is tests/integration/test_jobs.py.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_butido.container import ContainerSpec, InputFile, ScriptOutcome, fold_log
from airflow_butido.endpoints import Candidate, LocalSlots
from airflow_butido.errors import BuildError, InfrastructureError
from airflow_butido.jobs import (
    FAILED,
    REUSED,
    SUCCESS,
    BuildKey,
    JobRequest,
    JobReused,
    JobStarted,
    ReusedBuild,
    ScriptFailed,
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

    def run_script(self, *, tail_lines: int, on_line: Any = None) -> ScriptOutcome:
        if self.fail_on == "run":
            raise InfrastructureError("endpoint fake went away")
        return fold_log(
            iter(self.lines),
            exit_code=lambda: self.exit_code,
            tail_lines=tail_lines,
            on_line=on_line,
        )

    def outputs(self) -> Any:
        return None if self.outputs_data is None else iter([self.outputs_data])

    def remove(self) -> None:
        self.removed = True


@dataclass
class FakeRuntime:
    lines: Sequence[str] = ("building", "#BUTIDO:STATE:OK")
    exit_code: int = 0
    outputs_data: bytes | None = field(default_factory=lambda: outputs_tar({"p-1.pkg": b"p\n"}))
    fail_on: str | None = None
    containers: list[FakeContainer] = field(default_factory=list)
    api: FakeApi = field(default_factory=FakeApi)

    def endpoints(self, config: Any, image: str, names: Any) -> tuple[list[Candidate], str]:
        return [Candidate(config.endpoints[0], self.api)], DIGEST

    def container(self, candidate: Candidate, spec: ContainerSpec) -> FakeContainer:
        made = FakeContainer(spec, self.lines, self.exit_code, self.outputs_data, self.fail_on)
        self.containers.append(made)
        return made


@dataclass
class FakeRecorder:
    events: list[tuple[str, Any]] = field(default_factory=list)

    def job_started(self, job: JobStarted) -> None:
        self.events.append(("started", job))

    def job_reused(self, job: JobReused) -> None:
        self.events.append(("reused", job))

    def job_finished(self, job_uuid: str, **values: Any) -> None:
        log = values.get("log")
        values["log_text"] = log.read() if log is not None else None
        self.events.append(("finished", values))

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
    assert [f.container_path for f in container.copied] == ["/script"]


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
