"""``run_job`` end to end on the real Docker engine with the offline Debian image."""

from __future__ import annotations

import hashlib
import logging
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from airflow_butido.endpoints import DatabaseSlots, LocalSlots
from airflow_butido.errors import InfrastructureError
from airflow_butido.jobs import JobRequest, JobResult, ScriptFailed, run_job
from airflow_butido.recipes.config import load_config
from airflow_butido.recipes.repository import load_repository
from tests.support import DOCKER_SOCKET, config_toml, make_dirs, overlay_toml, write_files

pytestmark = pytest.mark.docker


def write_repo(
    root: Path,
    image: str,
    packages: dict[str, str],
    *,
    endpoints: dict[str, int] | None = None,
    extra_config: str = "",
    phases: tuple[str, ...] = ("build",),
) -> Path:
    """A package repository in ``root``: config.toml (local endpoint(s), the test image,
    stores under ``root``) and one ``<dir>/pkg.toml`` per entry of ``packages``."""
    make_dirs(root)
    config = config_toml(
        images=[(image, "test")],
        endpoints=endpoints or {"local": 4},
        uri=DOCKER_SOCKET,
        phases=phases,
        check_env_names=True,
        allowed_env=("FOO", "PKGVAR"),
        extra="build_error_lines = 5\n" + extra_config,
    )
    files = {str(Path(d, "pkg.toml")): textwrap.dedent(text) for d, text in packages.items()}
    return write_files(root, {"config.toml": config, **files})


def pkg_toml(
    name: str, version: str, script: str, *, patches: tuple[str, ...] = (), extra: str = ""
) -> str:
    """A leaf pkg.toml with one ``build`` phase; ``extra`` holds further TOML tables."""
    body = textwrap.indent(textwrap.dedent(script).strip("\n"), "    ")
    return (
        f'name = "{name}"\nversion = "{version}"\nversion_is_semver = false\n'
        f"patches = {list(patches)!r}\n\n[dependencies]\nbuild = []\nruntime = []\n\n"
        f"{extra or '[sources]'}\n\n[phases]\nbuild.script = '''\n{body}\n'''\n"
    )


def request_for(repo_root: Path, name: str, version: str, **kw: object) -> JobRequest:
    config = load_config(repo_root, environ={})
    repo = load_repository(repo_root, config=config)
    defaults: dict[str, object] = {
        "package": repo.get(name, version),
        "config": config,
        "repo_root": repo_root,
        "image": "test",
        "submit_uuid": str(uuid.uuid4()),
        "job_uuid": str(uuid.uuid4()),
        "git_env": (),
    }
    defaults.update(kw)
    return JobRequest(**defaults)  # type: ignore[arg-type]


def job_containers(docker_client, job_uuid: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"io.butido.job={job_uuid}"})


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_single_package_build_gets_inputs_env_and_stores_outputs(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    source = b"the source\n"
    digest = hashlib.sha256(source).hexdigest()
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "a": pkg_toml(
                "a",
                "1.0",
                """
                set -e
                {{phase "check"}}
                test "$(cat /inputs/src.source)" = "the source"
                test "$(cat /patches/a/fix.patch)" = "patch body"
                echo "FOO=$FOO PKGVAR=$PKGVAR"
                {{phase "build"}}
                mkdir -p /outputs/sub
                echo "{{this.name}}-{{this.version}}" > /outputs/a-1.0.pkg
                printf 'x' > /outputs/sub/extra.bin
                {{state "OK"}}
                """,
                patches=("fix.patch",),
                extra=(
                    '[environment]\nPKGVAR = "from-pkg"\n\n'
                    '[sources.src]\nurl = "https://example.com/a"\nhash.type = "sha256"\n'
                    f'hash.hash = "{digest}"'
                ),
            ),
        },
    )
    (repo / "a" / "fix.patch").write_text("patch body\n")
    (repo / "sources" / "a-1.0").mkdir()
    (repo / "sources" / "a-1.0" / "src.source").write_bytes(source)
    request = request_for(repo, "a", "1.0", env=(("FOO", "cli"),))
    lines: list[str] = []

    result = run_job(request, slots=LocalSlots(), on_line=lambda line, item: lines.append(line))

    assert result.state == "success"
    assert result.exit_code == 0
    assert "FOO=cli PKGVAR=from-pkg" in lines
    assert result.env == (("FOO", "cli"), ("PKGVAR", "from-pkg"))
    staging = repo / "staging" / request.submit_uuid
    assert result.staging_dir == staging
    assert [a.path for a in result.artifacts] == ["a-1.0.pkg", "sub/extra.bin"]
    assert (staging / "a-1.0.pkg").read_text() == "a-1.0\n"
    assert result.artifacts[0].sha256 == hashlib.sha256(b"a-1.0\n").hexdigest()
    assert result.artifacts[1].size == 1
    assert result.endpoint == "local"
    assert job_containers(docker_client, request.job_uuid) == []


def test_build_receives_transitive_dependency_artifacts(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "c": pkg_toml("c", "3", "mkdir /outputs; echo c3 > /outputs/c-3.pkg"),
            "b": pkg_toml("b", "2", "mkdir -p /outputs/deep; echo b2 > /outputs/deep/b-2.pkg"),
            "a": pkg_toml(
                "a",
                "1",
                """
                ls /inputs
                test "$(cat /inputs/b-2.pkg)" = b2 || { {{state "ERR" "b missing"}}; exit 1; }
                test "$(cat /inputs/c-3.pkg)" = c3 || { {{state "ERR" "c missing"}}; exit 1; }
                mkdir /outputs
                cat /inputs/*.pkg > /outputs/a-1.pkg
                """,
            ),
        },
    )
    submit = str(uuid.uuid4())
    slots = LocalSlots()
    c = run_job(request_for(repo, "c", "3", submit_uuid=submit), slots=slots)
    b = run_job(request_for(repo, "b", "2", submit_uuid=submit), slots=slots)
    inputs = tuple(r.staging_dir / art.path for r in (b, c) for art in r.artifacts)
    a = run_job(
        request_for(repo, "a", "1", submit_uuid=submit, dependency_artifacts=inputs), slots=slots
    )
    assert a.state == "success"
    assert (repo / "staging" / submit / "a-1.pkg").read_text() == "b2\nc3\n"
    assert files_under(repo / "staging" / submit) == ["a-1.pkg", "c-3.pkg", "deep/b-2.pkg"]


def test_failing_build_reports_err_message_phase_and_log_tail(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "f": pkg_toml(
                "f",
                "1",
                """
                {{phase "configure"}}
                for i in $(seq 1 20); do echo "configure line $i"; done
                {{state "ERR" "configure failed"}}
                {{phase "later"}}
                {{state "OK"}}
                exit 1
                """,
            )
        },
    )
    request = request_for(repo, "f", "1")
    with pytest.raises(ScriptFailed) as info:
        run_job(request, slots=LocalSlots())
    message = str(info.value)
    assert "the script reported an error: 'configure failed'" in message
    assert "in phase 'configure'" in message
    assert "configure line 20" in message
    assert "configure line 14" not in message  # only build_error_lines = 5 lines
    assert "404" not in message  # no /outputs is not a Docker error (butido #54)
    result: JobResult = info.value.result
    assert result.state == "failed"
    assert result.exit_code == 1
    assert result.failed_phase == "configure"
    assert not (repo / "staging" / request.submit_uuid).exists() or not files_under(
        repo / "staging" / request.submit_uuid
    )
    assert job_containers(docker_client, request.job_uuid) == []


def test_nonzero_exit_without_state_line_is_a_failure(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"e": pkg_toml("e", "1", "mkdir /outputs; echo x > /outputs/e.pkg; echo oops; exit 7")},
    )
    request = request_for(repo, "e", "1")
    with pytest.raises(ScriptFailed) as info:
        run_job(request, slots=LocalSlots())
    assert "the script exited with status 7" in str(info.value)
    assert "oops" in str(info.value)
    assert info.value.result.exit_code == 7
    assert not (repo / "staging" / request.submit_uuid / "e.pkg").exists()


def test_success_without_outputs_directory_is_a_script_failure(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    repo = write_repo(tmp_path / "repo", build_image, {"n": pkg_toml("n", "1", "echo nothing")})
    with pytest.raises(ScriptFailed, match="created no /outputs directory"):
        run_job(request_for(repo, "n", "1"), slots=LocalSlots())


def test_hostile_outputs_from_a_container_are_refused(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "h": pkg_toml(
                "h",
                "1",
                """
                mkdir /outputs
                echo fine > /outputs/aaa-good.pkg
                ln -s /etc/passwd /outputs/passwd
                """,
            )
        },
    )
    request = request_for(repo, "h", "1")
    passwd = Path("/etc/passwd").read_bytes()
    before = files_under(tmp_path)
    with pytest.raises(ScriptFailed, match="symbolic link to '/etc/passwd'"):
        run_job(request, slots=LocalSlots())
    assert files_under(tmp_path) == before  # nothing written anywhere, no link followed
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))
    assert files_under(repo / "staging") == []
    assert Path("/etc/passwd").read_bytes() == passwd
    assert job_containers(docker_client, request.job_uuid) == []


def test_killed_job_leaves_no_container_and_frees_its_slot(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    repo = write_repo(
        tmp_path / "repo", build_image, {"k": pkg_toml("k", "1", "echo started; sleep 300")}
    )
    request = request_for(repo, "k", "1")
    slots = LocalSlots()
    seen: list = []
    started = threading.Event()
    outcome: list[BaseException] = []

    def on_line(line: str, item: object) -> None:
        if line == "started":
            started.set()

    def target() -> None:
        try:
            run_job(request, slots=slots, on_line=on_line, on_container=seen.append)
        except BaseException as exc:  # collected for the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    assert started.wait(60), "the script never started"
    assert slots.in_use() == {"local": 1}
    seen[0].remove()  # what the operator's on_kill does
    thread.join(60)
    assert not thread.is_alive()
    assert outcome and isinstance(outcome[0], InfrastructureError | ScriptFailed)
    assert job_containers(docker_client, request.job_uuid) == []
    assert slots.in_use() == {}


def test_two_endpoints_honour_maxjobs_under_concurrent_jobs(
    tmp_path: Path, build_image: str, docker_client, pg_url: str
) -> None:
    from airflow_butido.db.engine import make_engine
    from airflow_butido.db.migrate import upgrade

    engine = make_engine(pg_url)
    upgrade(engine)
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"s": pkg_toml("s", "1", "sleep 2; mkdir /outputs; echo $HOSTNAME > /outputs/s")},
        endpoints={"one": 1, "two": 1},
    )
    intervals: dict[str, list[float]] = {}
    results: list[JobResult] = []
    errors: list[BaseException] = []

    def job() -> None:
        request = request_for(repo, "s", "1")

        def on_container(container: object) -> None:
            intervals.setdefault(request.job_uuid, []).append(time.monotonic())

        try:
            # one engine per job, as in separate task processes: only the database links them
            job_engine = make_engine(pg_url)
            try:
                slots = DatabaseSlots(job_engine)
                results.append(run_job(request, slots=slots, on_container=on_container))
            finally:
                job_engine.dispose()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert len(results) == 4
    # Both endpoints take jobs; how many each is a matter of timing (a slot freed while the
    # other endpoint's job still runs goes to the next job waiting), never two at once.
    assert {r.endpoint for r in results} == {"one", "two"}
    for endpoint in ("one", "two"):
        spans = sorted(intervals[r.job_uuid] for r in results if r.endpoint == endpoint)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end <= start, f"two containers at once on {endpoint}"
    from airflow_butido.db.leases import slot_usage

    assert slot_usage(engine) == {}
    engine.dispose()


@pytest.mark.parametrize(("name", "version"), [("z", "26"), ("h", "8")])
def test_example_repository_package_builds_unmodified_with_overlay_config(
    tmp_path: Path,
    build_image: str,
    example_repo: Path,
    butido_examples: Path,
    caplog,
    name: str,
    version: str,
) -> None:
    make_dirs(tmp_path, ("staging", "releases", "logs"))
    overlay = tmp_path / "overlay.toml"
    overlay.write_text(
        overlay_toml(
            tmp_path,
            source_cache=butido_examples / "sources",
            images=[(build_image, "deb12")],
            uri=DOCKER_SOCKET,
        )
    )
    config = load_config(example_repo, environ={"BUTIDO_CONFIG": str(overlay)})
    repo = load_repository(example_repo, config=config)
    submit = str(uuid.uuid4())
    request = JobRequest(
        package=repo.get(name, version),
        config=config,
        repo_root=example_repo,
        image="deb12",
        submit_uuid=submit,
        job_uuid=str(uuid.uuid4()),
        git_env=(),
    )
    lines: list[str] = []
    with caplog.at_level(logging.WARNING, logger="airflow_butido.endpoints"):
        result = run_job(request, slots=LocalSlots(), on_line=lambda ln, it: lines.append(ln))
    # the example's own endpoint (http://0.0.0.0:8095) is still configured and skipped
    assert any("testhostname skipped" in r.getMessage() for r in caplog.records)
    assert result.state == "success"
    assert [a.path for a in result.artifacts] == [f"{name}-{version}.pkg"]
    assert (tmp_path / "staging" / submit / f"{name}-{version}.pkg").read_text() == f"{version}\n"
    assert "#BUTIDO:STATE:OK" in lines


def test_disallowed_environment_name_fails_before_any_container(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    from airflow_butido.errors import BuildError

    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"v": pkg_toml("v", "1", "true", extra='[environment]\nSECRET = "x"\n\n[sources]')},
    )
    request = request_for(repo, "v", "1", env=(("FOO", "ok"), ("BAR", "no")))
    with pytest.raises(BuildError, match="not allowed by containers.allowed_env: BAR, SECRET"):
        run_job(request, slots=LocalSlots())
    assert job_containers(docker_client, request.job_uuid) == []


@pytest.mark.postgres
def test_database_recorder_writes_failed_job_with_log(
    tmp_path: Path, build_image: str, docker_client, pg_url: str
) -> None:
    import sqlalchemy as sa

    from airflow_butido.db import schema
    from airflow_butido.db.engine import make_engine
    from airflow_butido.db.migrate import upgrade
    from airflow_butido.db.recorder import DatabaseRecorder
    from airflow_butido.db.records import record_submit

    engine = make_engine(pg_url)
    upgrade(engine)
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"f": pkg_toml("f", "1", 'echo "step one"\n{{state "ERR" "broken"}}\nexit 2')},
    )
    request = request_for(repo, "f", "1")
    record_submit(
        engine,
        uuid=request.submit_uuid,
        package_name="f",
        package_version="1",
        image=build_image,
        repo_commit="0" * 40,
    )
    with pytest.raises(ScriptFailed):
        run_job(request, slots=DatabaseSlots(engine), recorder=DatabaseRecorder(engine))
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(schema.jobs).where(schema.jobs.c.uuid == request.job_uuid)
        ).one()
    assert row.state == "failed"
    assert row.failure_class == "script"
    assert row.exit_status == 2
    assert row.log_text == "step one\n#BUTIDO:STATE:ERR:broken"
    assert row.script_text.startswith("#!/bin/bash")
    assert row.container_hash
    engine.dispose()


def test_environment_order_is_cli_then_git_then_package(tmp_path: Path, build_image: str) -> None:
    import subprocess

    from airflow_butido.build_key import container_environment, git_environment
    from airflow_butido.recipes.config import Config, ContainerConfig

    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"g": pkg_toml("g", "1", "true", extra='[environment]\nPKGVAR = "p"\n\n[sources]')},
    )
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "config", "user.name", "Jane Builder"], check=True)
    subprocess.run([*git, "config", "user.email", "jane@example.org"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    config = Config(containers=ContainerConfig(git_author="AUTHOR", git_commit_hash="COMMIT"))
    git_env = git_environment(config, repo)
    assert git_env == (("AUTHOR", "Jane Builder"), ("COMMIT", head.stdout.strip()))
    package = request_for(repo, "g", "1").package
    assert container_environment(package, (("FOO", "cli"),), git_env) == (
        ("FOO", "cli"),
        ("AUTHOR", "Jane Builder"),
        ("COMMIT", head.stdout.strip()),
        ("PKGVAR", "p"),
    )


def test_script_runs_through_its_shebang_line(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    script = """
        echo "argv0=$0 bash=${BASH_VERSION:+yes} mode=$(stat -c %a /script)"
        head -n 1 /script
        mkdir /outputs; touch /outputs/s-1.pkg
        """
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"s": pkg_toml("s", "1", script)},
        extra_config='shebang = "#!/bin/sh"',
    )
    request = request_for(repo, "s", "1")
    lines: list[str] = []
    result = run_job(request, slots=LocalSlots(), on_line=lambda line, item: lines.append(line))
    assert result.state == "success"
    assert "argv0=/script bash= mode=755" in lines  # exec'd as /script, by dash, not bash
    assert "#!/bin/sh" in lines
    # with butido's /bin/bash /script, a "#!/bin/false" script would succeed; here it fails
    false = request_for(repo, "s", "1", shebang="#!/bin/false")
    with pytest.raises(ScriptFailed, match="exited with status 1") as failed:
        run_job(false, slots=LocalSlots())
    assert failed.value.failure_class == "script"
    assert job_containers(docker_client, request.job_uuid) == []


def test_build_on_an_http_endpoint(
    tmp_path: Path, build_image: str, docker_client, http_endpoint: str
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"h": pkg_toml("h", "1", 'echo "over http"; mkdir /outputs; echo h1 > /outputs/h-1.pkg')},
    )
    config = repo / "config.toml"
    text = config.read_text()
    config.write_text(
        text[: text.index("[docker.endpoints.")]
        + f'[docker.endpoints.tcp]\nuri = "{http_endpoint}"\nendpoint_type = "http"\nmaxjobs = 1\n'
    )
    request = request_for(repo, "h", "1")
    lines: list[str] = []
    result = run_job(request, slots=LocalSlots(), on_line=lambda line, item: lines.append(line))
    assert result.endpoint == "tcp"
    assert "over http" in lines
    assert (repo / "staging" / request.submit_uuid / "h-1.pkg").read_text() == "h1\n"
    assert job_containers(docker_client, request.job_uuid) == []
