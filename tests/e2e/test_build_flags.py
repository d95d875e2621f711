"""butido's ``build`` flags on real containers: ``--no-lint`` (and the linter stopping a run
before any container starts), ``--no-verify``, ``--staging-dir``, ``--shebang`` (with a
busybox image that has no bash) and ``-L/--write-log``."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import unavailable
from tests.e2e.test_incremental_runs import butido, depends
from tests.integration.test_jobs import pkg_toml, write_repo
from tests.support import DOCKER_SOCKET, config_toml, write_files

pytestmark = [pytest.mark.docker]

BUSYBOX_IMAGE = "airflow-butido/busybox:test"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static


@pytest.fixture(scope="session")
def busybox_image(docker_client) -> str:
    """A tiny image without bash, made offline: /bin/busybox and its applet links."""
    import docker.errors

    try:
        docker_client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if not BUSYBOX.is_file():
        unavailable(f"{BUSYBOX} missing: install busybox-static (scripts/ensure-services)")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        for name in ("bin", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
    docker_client.api.import_image_from_data(
        rootfs.getvalue(), repository=BUSYBOX_IMAGE.split(":")[0], tag="test"
    )
    return BUSYBOX_IMAGE


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def with_database(repo: Path) -> Path:
    (repo / "airflow-butido.toml").write_text(f'database_url = "sqlite:///{repo / "b.sqlite"}"\n')
    return repo


def query(repo: Path, sql: str) -> list[tuple]:
    engine = sa.create_engine(f"sqlite:///{repo / 'b.sqlite'}")
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql)).all()]
    engine.dispose()
    return rows


def containers_created(docker_client, since: float, package: str) -> list[dict]:
    """Containers the engine created for ``package`` since ``since`` (removed ones too)."""
    found = docker_client.api.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create", "label": f"io.butido.package={package}"},
        decode=True,
    )
    return list(found)


# -- lint -------------------------------------------------------------------------------------


def test_a_failing_linter_stops_the_run_before_any_container(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    good, bad = unique("good"), unique("bad")
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            good: pkg_toml(good, "1", f"mkdir /outputs; echo g > /outputs/{good}.pkg"),
            bad: depends(
                pkg_toml(bad, "1", f"echo FORBIDDEN; mkdir /outputs; echo b > /outputs/{bad}.pkg"),
                good,
            ),
        },  # fmt: skip
        extra_config='script_linter = "lint.sh"\n',
    )
    linter = repo / "lint.sh"
    linter.write_text("#!/bin/sh\n! grep -n FORBIDDEN && exit 0\necho 'FORBIDDEN is forbidden'\n"
                      "exit 1\n")  # fmt: skip
    linter.chmod(0o755)
    with_database(repo)
    start = time.time()
    done = butido(repo, "build", bad, "-I", "test")
    assert done.returncode == 1, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert f"{bad} 1" in output and "script linter" in output
    assert "FORBIDDEN is forbidden" in output  # the linter's own report
    assert f"{good} 1 (" not in output.split("lint failed", 1)[1]  # only the bad one is named
    assert containers_created(docker_client, start, good) == []
    assert containers_created(docker_client, start, bad) == []

    skipped = butido(repo, "build", bad, "-I", "test", "--no-lint", "--json")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    outcomes = {p["package"]: p["outcome"] for p in json.loads(skipped.stdout)["packages"]}
    assert outcomes == {f"{good} 1": "built", f"{bad} 1": "built"}
    assert len(containers_created(docker_client, start, bad)) == 1  # the check sees them


# -- verify -----------------------------------------------------------------------------------


def test_no_verify_builds_with_a_source_whose_hash_differs(
    tmp_path: Path, build_image: str
) -> None:
    name = unique("src")
    extra = (
        '[sources.src]\nurl = "https://example.com/src.tar"\nhash.type = "sha1"\n'
        'hash.hash = "0000000000000000000000000000000000000000"'
    )
    script = f"mkdir /outputs; cp /inputs/src.source /outputs/{name}.pkg"
    repo = with_database(
        write_repo(tmp_path / "repo", build_image, {name: pkg_toml(name, "1", script, extra=extra)})
    )
    write_files(repo / "sources", {f"{name}-1/src.source": "not what the hash says\n"})

    checked = butido(repo, "build", name, "-I", "test", "--json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    (failed,) = json.loads(checked.stdout)["packages"]
    assert "Hash mismatch" in failed["message"]

    unchecked = butido(repo, "build", name, "-I", "test", "--no-verify", "--json")
    assert unchecked.returncode == 0, unchecked.stdout + unchecked.stderr
    (path,) = json.loads(unchecked.stdout)["paths"]
    assert Path(path).read_text() == "not what the hash says\n"


# -- staging dir ------------------------------------------------------------------------------


def test_staging_dir_continues_a_submit(tmp_path: Path, build_image: str) -> None:
    a, b = unique("a"), unique("b")
    repo = with_database(
        write_repo(
            tmp_path / "repo",
            build_image,
            {
                a: pkg_toml(a, "1", f"mkdir /outputs; echo a > /outputs/{a}.pkg"),
                b: pkg_toml(b, "1", f"mkdir /outputs; echo b > /outputs/{b}.pkg"),
            },
        )
    )
    first = butido(repo, "build", a, "-I", "test", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    (submit,) = {row[0] for row in query(repo, "select uuid from submits")}
    submit = str(uuid.UUID(str(submit)))
    staging = repo / "staging" / submit
    assert (staging / f"{a}.pkg").is_file()

    again = butido(repo, "build", b, "-I", "test", "--staging-dir", str(staging), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (staging / f"{b}.pkg").is_file()  # into the same staging directory
    assert json.loads(again.stdout)["paths"] == [str(staging / f"{b}.pkg")]
    submits = {str(uuid.UUID(str(r[0]))) for r in query(repo, "select uuid from submits")}
    assert submits == {submit}  # the run continued that submit
    jobs = query(repo, "select p.name from jobs j join packages p on p.id = j.package_id "
                       "join submits s on s.id = j.submit_id")  # fmt: skip
    assert sorted(r[0] for r in jobs) == sorted([a, b])

    # a directory that is no submit's staging directory is refused, naming it
    other = repo / "staging" / "not-a-uuid"
    other.mkdir()
    refused = butido(repo, "build", b, "-I", "test", "--staging-dir", str(other))
    assert refused.returncode != 0
    assert f"staging directory {other}: its name must be a submit UUID" in refused.stdout + (
        refused.stderr
    )


# -- shebang ----------------------------------------------------------------------------------


def two_image_repo(root: Path, build_image: str, busybox: str, packages: dict[str, str]) -> Path:
    config = config_toml(
        images=[(build_image, "test"), (busybox, "busybox")],
        endpoints={"local": 2},
        uri=DOCKER_SOCKET,
        extra="build_error_lines = 5\n",
    )
    files = {f"{name}/pkg.toml": text for name, text in packages.items()}
    for d in ("logs", "staging", "sources", "releases"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return with_database(write_files(root, {"config.toml": config, **files}))


def test_shebang_runs_the_script_through_it_in_an_image_without_bash(
    tmp_path: Path, build_image: str, busybox_image: str
) -> None:
    name = unique("bb")
    script = f'mkdir /outputs; echo "$0 $(readlink /proc/$$/exe)" > /outputs/{name}.pkg'
    repo = two_image_repo(tmp_path / "repo", build_image, busybox_image,
                          {name: pkg_toml(name, "1", script)})  # fmt: skip

    # the configured shebang (#!/bin/bash): busybox has no bash, a build failure saying so
    failed = butido(repo, "build", name, "-I", "busybox", "--json")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    (report,) = json.loads(failed.stdout)["packages"]
    assert report["outcome"] == "failed"
    assert "'/bin/bash'" in report["message"] and "does not exist in the image" in report["message"]
    assert "--shebang" in report["message"]
    assert "up_for_retry" not in failed.stderr  # not an infrastructure failure
    assert query(repo, "select state, failure_class from jobs") == [("failed", "script")]

    built = butido(repo, "build", name, "-I", "busybox", "--shebang", "#!/bin/sh", "--json")
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = json.loads(built.stdout)["paths"]
    # exec'd as /script through /bin/sh, which is busybox
    assert Path(path).read_text().split() == ["/script", "/bin/busybox"]


def test_a_shebang_build_and_a_config_shebang_build_never_reuse_each_other(
    tmp_path: Path, build_image: str
) -> None:
    name = unique("sb")
    script = f"mkdir /outputs; head -n1 /script > /outputs/{name}.pkg"
    repo = with_database(
        write_repo(tmp_path / "repo", build_image, {name: pkg_toml(name, "1", script)})
    )

    def build(*flags: str) -> tuple[str, str]:
        done = butido(repo, "build", name, "-I", "test", "--json", *flags)
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        (package,) = result["packages"]
        (path,) = result["paths"]
        return package["outcome"], Path(path).read_text().strip()

    assert build() == ("built", "#!/bin/bash")
    assert build("--shebang", "#!/bin/sh") == ("built", "#!/bin/sh")
    assert build("--shebang", "#!/bin/sh")[0] == "reused"
    assert build() == ("reused", "#!/bin/bash")  # the config-shebang build, not the other
    assert build("--shebang", "#!/bin/dash") == ("built", "#!/bin/dash")


# -- write-log --------------------------------------------------------------------------------


def test_write_log_writes_every_package_log_prefixed(tmp_path: Path, build_image: str) -> None:
    low, top = unique("low"), unique("top")
    repo = with_database(
        write_repo(
            tmp_path / "repo",
            build_image,
            {
                low: pkg_toml(
                    low, "1", f"echo hello from {low}\nmkdir /outputs; echo l > /outputs/{low}.pkg"
                ),
                top: depends(
                    pkg_toml(
                        top,
                        "1",
                        f"echo hello from {top}\nmkdir /outputs; echo t > /outputs/{top}.pkg",
                    ),
                    low,
                ),
            },  # fmt: skip
        )
    )
    log = tmp_path / "out" / "build.log"
    log.parent.mkdir()
    done = butido(repo, "build", top, "-I", "test", "-L", str(log))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = log.read_text().splitlines()
    assert f"{low} 1: hello from {low}" in lines
    assert f"{top} 1: hello from {top}" in lines
    assert all(line.startswith((f"{low} 1: ", f"{top} 1: ")) for line in lines)

    missing = butido(repo, "build", top, "-I", "test", "-L", str(tmp_path / "no" / "x.log"))
    assert missing.returncode != 0
    assert "--write-log" in missing.stdout + missing.stderr
    assert "Traceback" not in missing.stderr
    shutil.rmtree(tmp_path / "out")
