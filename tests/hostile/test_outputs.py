"""Hostile and faulty ``/outputs``: refused or failed extractions end within seconds with
their real reason, artifacts never overwrite each other, and archives must be complete."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_butido.endpoints import LocalSlots
from airflow_butido.errors import BuildError, InfrastructureError
from airflow_butido.jobs import ScriptFailed, run_job
from airflow_butido.stores import OutputsError, extract_outputs
from tests.integration.test_jobs import job_containers, pkg_toml, request_for, write_repo


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _parts_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


# -- archives ------------------------------------------------------------------------------


def test_archive_cut_at_a_member_boundary_is_refused(tmp_path: Path) -> None:
    whole = _tar([("outputs/a", b"a" * 600), ("outputs/b", b"b" * 10)])
    # the end of the first member's data (header 512 + PAX header 1024? find it exactly)
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        first, second = tar.getmembers()
    cut = whole[: second.offset]  # ends right after member a: no member b, no end marker
    assert first.offset_data + 1024 == second.offset
    with pytest.raises(OutputsError, match="end-of-archive marker"):
        extract_outputs(_chunks(cut), tmp_path / "store")
    assert not (tmp_path / "store" / "a").exists()


def test_complete_archive_with_its_end_marker_is_accepted(tmp_path: Path) -> None:
    whole = _tar([("outputs/a", b"a" * 600), ("outputs/b", b"b" * 10)])
    artifacts = extract_outputs(_chunks(whole), tmp_path / "store")
    assert [a.path for a in artifacts] == ["a", "b"]


def test_archive_with_half_an_end_marker_is_refused(tmp_path: Path) -> None:
    whole = _tar([("outputs/a", b"a")])
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        (member,) = tar.getmembers()
    end = member.offset_data + 512
    with pytest.raises(OutputsError, match="end-of-archive marker"):
        extract_outputs(_chunks(whole[: end + 512]), tmp_path / "store")


def test_outputs_and_outputs_outputs_do_not_collapse(tmp_path: Path) -> None:
    data = _tar([("outputs/a", b"first"), ("outputs/outputs/a", b"second")])
    with pytest.raises(OutputsError, match="outputs/outputs/a.*'a'.*outputs/a"):
        extract_outputs(_chunks(data), tmp_path / "store")
    assert not (tmp_path / "store" / "a").exists()


def test_nested_outputs_directory_keeps_butidos_rule(tmp_path: Path) -> None:
    data = _tar([("outputs/x/outputs/y.rpm", b"y"), ("outputs/z.rpm", b"z")])
    artifacts = extract_outputs(_chunks(data), tmp_path / "store")
    assert [a.path for a in artifacts] == ["x/y.rpm", "z.rpm"]


def test_non_utf8_file_name_is_refused_with_its_bytes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(b"outputs/caf\xe9.pkg".decode("utf-8", "surrogateescape"))
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(OutputsError, match=r"not valid UTF-8: b'outputs/caf\\xe9.pkg'"):
        extract_outputs(_chunks(buffer.getvalue()), tmp_path / "store")
    assert list((tmp_path / "store").iterdir()) == []


def test_many_members_do_not_accumulate_in_memory(tmp_path: Path) -> None:
    data = _tar([(f"outputs/f{i}", b"") for i in range(2000)])
    seen: list[int] = []
    import airflow_butido.stores as stores

    original = stores._next_member

    def spy(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
        seen.append(len(tar.members))
        return original(tar)

    stores._next_member = spy  # type: ignore[assignment]
    try:
        extract_outputs(_chunks(data), tmp_path / "store")
    finally:
        stores._next_member = original  # type: ignore[assignment]
    assert max(seen) <= 1


# -- one submit, two packages -----------------------------------------------------------------


def test_same_file_name_from_two_packages_is_refused_naming_both(tmp_path: Path) -> None:
    store = tmp_path / "store"
    extract_outputs(_chunks(_tar([("outputs/same.pkg", b"from a")])), store, owner="a 1")
    with pytest.raises(OutputsError, match=r"same.pkg.*b 2.*already written by a 1"):
        extract_outputs(
            _chunks(_tar([("outputs/other.pkg", b"o"), ("outputs/same.pkg", b"from b")])),
            store,
            owner="b 2",
        )
    assert (store / "same.pkg").read_bytes() == b"from a"
    assert not (store / "other.pkg").exists()  # nothing of the refused job is kept
    # the same package may write its file again (a retry of its own build)
    extract_outputs(_chunks(_tar([("outputs/same.pkg", b"again")])), store, owner="a 1")
    assert (store / "same.pkg").read_bytes() == b"again"


# -- on the real engine ---------------------------------------------------------------------


@pytest.mark.docker
def test_symlink_followed_by_300mb_is_refused_within_seconds(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "s": pkg_toml(
                "s",
                "1",
                """
                mkdir /outputs
                ln -s /etc/passwd /outputs/aaa-link
                head -c 300M /dev/zero > /outputs/zzz-big
                """,
            )
        },
    )
    request = request_for(repo, "s", "1")
    started = time.monotonic()
    with pytest.raises(ScriptFailed, match="symbolic link to '/etc/passwd'"):
        run_job(request, slots=LocalSlots())
    assert time.monotonic() - started < 45
    assert job_containers(docker_client, request.job_uuid) == []
    assert _parts_under(repo / "staging") == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs, mounted for this test only."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the test: {done.stderr}", pytrace=False)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.docker
def test_full_staging_disk_is_an_infrastructure_error_within_seconds(
    tmp_path: Path, build_image: str, docker_client, small_disk: Path
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"f": pkg_toml("f", "1", "mkdir /outputs\nhead -c 64M /dev/urandom > /outputs/big")},
    )
    config = repo / "config.toml"
    lines = config.read_text().splitlines()
    lines = [f'staging = "{small_disk}"' if ln.startswith("staging =") else ln for ln in lines]
    config.write_text("\n".join(lines) + "\n")
    request = request_for(repo, "f", "1")
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match="No space left on device") as caught:
        run_job(request, slots=LocalSlots())
    assert not isinstance(caught.value, BuildError)
    assert time.monotonic() - started < 45
    assert job_containers(docker_client, request.job_uuid) == []
    assert _parts_under(small_disk) == []


@pytest.mark.docker
def test_250_character_output_name_is_stored(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    name = "n" * 246 + ".pkg"
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"l": pkg_toml("l", "1", f"mkdir /outputs\necho long > /outputs/{name}")},
    )
    request = request_for(repo, "l", "1", submit_uuid=str(uuid.uuid4()))
    result = run_job(request, slots=LocalSlots())
    assert [a.path for a in result.artifacts] == [name]
    assert (result.staging_dir / name).read_text() == "long\n"


@pytest.mark.docker
def test_two_packages_of_one_submit_writing_one_name_fail_the_later(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "a": pkg_toml("a", "1", "mkdir /outputs; echo from-a > /outputs/same.pkg"),
            "b": pkg_toml("b", "2", "mkdir /outputs; echo from-b > /outputs/same.pkg"),
        },
    )
    submit = str(uuid.uuid4())
    first = run_job(request_for(repo, "a", "1", submit_uuid=submit), slots=LocalSlots())
    with pytest.raises(ScriptFailed, match=r"'same.pkg' of b 2 refused.*written by a 1"):
        run_job(request_for(repo, "b", "2", submit_uuid=submit), slots=LocalSlots())
    assert (first.staging_dir / "same.pkg").read_text() == "from-a\n"


def test_two_dependency_artifacts_with_one_name_are_refused(tmp_path: Path) -> None:
    from airflow_butido.jobs import job_inputs
    from airflow_butido.recipes.config import load_config
    from airflow_butido.recipes.repository import load_repository

    repo = write_repo(tmp_path / "repo", "img", {"c": pkg_toml("c", "1", "true")})
    config = load_config(repo, environ={})
    package = load_repository(repo, config=config).get("c", "1")
    one, two = tmp_path / "x" / "dep.pkg", tmp_path / "y" / "dep.pkg"
    for path in (one, two):
        path.parent.mkdir()
        path.write_text(str(path))
    with pytest.raises(BuildError, match=r"dep.pkg and .*dep.pkg would both be /inputs/dep.pkg"):
        job_inputs(package, config, repo, (one, two), "#!/bin/bash\n")
