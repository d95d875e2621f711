"""Stores on object storage against a real S3 server on loopback (moto in server mode):
atomic writes, streaming, no overwrite, releases between local and object stores, source
downloads into the cache, and the errors a wrong store gives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_butido import object_store
from airflow_butido.container import InputFile, tar_stream
from airflow_butido.db.reuse import ReusableArtifact, store_checker
from airflow_butido.object_store import (
    StoreError,
    UploadMismatch,
    open_store,
    put_verified,
    temporary_key,
)
from airflow_butido.recipes.config import StoreUrl
from airflow_butido.release import ReleaseError, _copy_verified
from airflow_butido.stores import (
    OutputsError,
    extract_outputs,
    part_prefix,
    remove_stale_parts,
    staging_dir,
)
from tests.integration.test_source_download import BODY, SHA256, server, src  # noqa: F401
from tests.s3_server import S3Server, running_moto
from tests.support import Pkg, config_toml, run_butido, write_files
from tests.unit.test_web_app import record  # noqa: F401 (a fixture)

SUBMIT = "0b9c1a52-3f0e-4d7e-9a55-000000000001"


def tar_of(files: dict[str, bytes], links: dict[str, str] | None = None) -> Iterator[bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    data = buf.getvalue()
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


def staging_of(bucket: str):
    return open_store("staging", StoreUrl(f"s3://{bucket}/staging"), None)


def temporary_keys(keys: dict[str, int]) -> list[str]:
    return [k for k in keys if k.endswith(".part") or ".butido-" in k.rsplit("/", 1)[-1]]


def test_outputs_stream_into_the_bucket_with_their_sha256_and_size(
    s3_server: S3Server, s3_bucket: str
) -> None:
    files = {"outputs/x/a.pkg": b"a" * 3000, "outputs/b.pkg": b"bee\n"}
    dest = staging_dir(staging_of(s3_bucket), SUBMIT)
    artifacts = extract_outputs(tar_of(files), dest, owner="a 1")
    assert [(a.path, a.size) for a in artifacts] == [("b.pkg", 4), ("x/a.pkg", 3000)]
    assert artifacts[1].sha256 == hashlib.sha256(b"a" * 3000).hexdigest()
    keys = s3_server.objects(s3_bucket)
    assert keys[f"staging/{SUBMIT}/x/a.pkg"] == 3000
    assert s3_server.read(s3_bucket, f"staging/{SUBMIT}/b.pkg") == b"bee\n"
    assert temporary_keys(keys) == []


def test_a_failed_upload_leaves_no_object_at_the_final_key(
    s3_server: S3Server, s3_bucket: str
) -> None:
    root = staging_of(s3_bucket)

    def chunks() -> Iterator[bytes]:
        yield b"x" * 100_000
        raise OSError("the sender went away")

    with pytest.raises(OSError, match="went away"):
        put_verified(root / "a.pkg", chunks(), temporary_key(root, part_prefix()))
    assert s3_server.objects(s3_bucket) == {}


def test_a_copy_read_back_wrong_is_never_put_in_place(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = staging_of(s3_bucket)
    monkeypatch.setattr(object_store, "sha256_of", lambda _path: "0" * 64)
    with pytest.raises(UploadMismatch, match="differs"):
        put_verified(root / "a.pkg", [b"data"], temporary_key(root, part_prefix()))
    assert s3_server.objects(s3_bucket) == {}


def test_another_package_never_overwrites_an_artifact(s3_server: S3Server, s3_bucket: str) -> None:
    dest = staging_dir(staging_of(s3_bucket), SUBMIT)
    extract_outputs(tar_of({"outputs/same.pkg": b"first"}), dest, owner="a 1")
    with pytest.raises(OutputsError, match="already written by a 1"):
        extract_outputs(tar_of({"outputs/same.pkg": b"second"}), dest, owner="b 2")
    key = f"staging/{SUBMIT}/same.pkg"
    assert s3_server.read(s3_bucket, key) == b"first"
    # the same package again (a retry) replaces its own file
    extract_outputs(tar_of({"outputs/same.pkg": b"retry"}), dest, owner="a 1")
    assert s3_server.read(s3_bucket, key) == b"retry"
    assert temporary_keys(s3_server.objects(s3_bucket)) == []


def test_a_refused_entry_removes_everything_the_extraction_wrote(
    s3_server: S3Server, s3_bucket: str
) -> None:
    dest = staging_dir(staging_of(s3_bucket), SUBMIT)
    with pytest.raises(OutputsError, match="symbolic link"):
        extract_outputs(
            tar_of({"outputs/ok.pkg": b"ok"}, links={"outputs/evil": "/etc/passwd"}),
            dest,
            owner="a 1",
        )
    assert s3_server.objects(s3_bucket) == {}


def test_inputs_stream_from_the_store_into_the_copy_in_archive(s3_bucket: str) -> None:
    root = staging_of(s3_bucket)
    data = os.urandom(3 << 20)
    put_verified(root / "dep.pkg", [data], temporary_key(root, part_prefix()))
    archive = b"".join(tar_stream([InputFile("/inputs/dep.pkg", source=root / "dep.pkg")]))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.getmember("inputs/dep.pkg")
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == data


def test_reuse_checks_presence_and_recorded_size_through_the_store(s3_bucket: str) -> None:
    staging = staging_of(s3_bucket)
    dest = staging_dir(staging, SUBMIT)
    [artifact] = extract_outputs(tar_of({"outputs/r.pkg": b"12345"}), dest, owner="r 1")
    exists = store_checker(staging, [], verify=False)
    assert exists(ReusableArtifact("r.pkg", artifact.sha256, 5, SUBMIT))
    assert not exists(ReusableArtifact("r.pkg", artifact.sha256, 6, SUBMIT))
    assert not exists(ReusableArtifact("gone.pkg", artifact.sha256, 5, SUBMIT))
    assert store_checker(staging, [], verify=True)(
        ReusableArtifact("r.pkg", artifact.sha256, 5, SUBMIT)
    )


def test_release_copies_between_object_and_local_stores(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    staging = staging_of(s3_bucket)
    releases = open_store("releases_root", StoreUrl(f"s3://{s3_bucket}/releases"), None)
    data = b"release me\n" * 1000
    digest = hashlib.sha256(data).hexdigest()
    put_verified(staging / "r.pkg", [data], temporary_key(staging, part_prefix()))

    _copy_verified(staging / "r.pkg", releases / "default" / "r.pkg", digest)  # s3 -> s3
    assert s3_server.read(s3_bucket, "releases/default/r.pkg") == data
    _copy_verified(staging / "r.pkg", tmp_path / "default" / "r.pkg", digest)  # s3 -> disk
    assert (tmp_path / "default" / "r.pkg").read_bytes() == data
    (tmp_path / "l.pkg").write_bytes(data)
    _copy_verified(tmp_path / "l.pkg", releases / "default" / "l.pkg", digest)  # disk -> s3
    assert s3_server.read(s3_bucket, "releases/default/l.pkg") == data

    with pytest.raises(ReleaseError, match="differs from the recorded"):
        _copy_verified(staging / "r.pkg", releases / "other" / "r.pkg", "0" * 64)
    keys = s3_server.objects(s3_bucket)
    assert "releases/other/r.pkg" not in keys
    assert temporary_keys(keys) == []


def test_temporary_keys_of_dead_writers_are_removed(s3_server: S3Server, s3_bucket: str) -> None:
    staging = staging_of(s3_bucket)
    dead = part_prefix().replace(f"-{os.getpid()}@", "-999999999@") + "abc.part"
    live = part_prefix() + "def.part"
    for name in (dead, live):
        (staging / name).write_bytes(b"partial")
    removed = remove_stale_parts(staging)
    assert [p.name for p in removed] == [dead]
    assert set(s3_server.objects(s3_bucket)) == {f"staging/{live}"}


def test_sources_download_into_the_object_store_cache(
    s3_server: S3Server,
    s3_bucket: str,
    server: str,  # noqa: F811
) -> None:
    from airflow_butido.sources import download_sources, verify_source

    cache = open_store("source_cache", StoreUrl(f"s3://{s3_bucket}/cache"), None)
    good, bad = src(f"{server}/file"), src(f"{server}/file", digest="00")
    ok, failed = download_sources(cache, [(Pkg("a", "1"), good), (Pkg("b", "1"), bad)])
    assert ok.ok, ok.message
    assert not failed.ok and "Hash mismatch" in failed.message
    assert s3_server.objects(s3_bucket) == {"cache/a-1/src.source": len(BODY)}
    verify_source(ok.path, good)
    assert hashlib.sha256(s3_server.read(s3_bucket, "cache/a-1/src.source")).hexdigest() == SHA256


def test_a_missing_bucket_names_the_key_the_url_and_the_connection(s3_bucket: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store("releases_root", StoreUrl("s3://no-such-bucket-here/r"), None)
    message = str(info.value)
    for part in ("releases_root", "s3://no-such-bucket-here/r", "butido_stores", "no such bucket"):
        assert part in message


def test_an_undefined_connection_is_named(s3_bucket: str) -> None:
    with pytest.raises(StoreError, match="'undefined_conn'.*not defined"):
        open_store("staging", StoreUrl(f"s3://{s3_bucket}/s"), "undefined_conn")


def test_an_unreachable_endpoint_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "aws",
        "login": "x",
        "password": "y",
        "extra": {
            "endpoint_url": "http://127.0.0.1:9",
            "region_name": "us-east-1",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_BUTIDO_UNREACHABLE", json.dumps(conn))
    with pytest.raises(StoreError) as info:
        open_store("source_cache", StoreUrl("s3://bkt/c"), "butido_unreachable")
    message = str(info.value)
    assert "source_cache = s3://bkt/c" in message and "'butido_unreachable'" in message
    assert "cannot be reached" in message


def test_wrong_credentials_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a server that checks credentials once its first request (the bucket) is made
    with running_moto(tmp_path / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "1"}) as checking:
        bucket = checking.new_bucket()
        monkeypatch.setenv("AIRFLOW_CONN_BUTIDO_WRONG_KEYS", checking.connection)
        with pytest.raises(StoreError) as info:
            open_store("staging", StoreUrl(f"s3://{bucket}/s"), "butido_wrong_keys")
    message = str(info.value)
    assert f"staging = s3://{bucket}/s" in message and "'butido_wrong_keys'" in message
    assert "access denied, check the connection's credentials" in message


def test_the_cli_reports_a_bad_store_without_a_traceback(s3_bucket: str, tmp_path: Path) -> None:
    config = config_toml(images=[("img", "img")], stores=tmp_path / "stores")
    config = config.replace(
        f'source_cache = "{tmp_path / "stores" / "sources"}"',
        'source_cache = "s3://no-such-bucket-cli/cache"',
    )
    repo = write_files(
        tmp_path / "repo",
        {
            "config.toml": config,
            "pkg.toml": "version_is_semver = false\npatches = []\n"
            "[dependencies]\nbuild = []\nruntime = []\n",
            "a/pkg.toml": 'name = "a"\nversion = "1"\n[sources.src]\n'
            f'url = "https://example.com"\nhash.hash = "{SHA256}"\nhash.type = "sha256"\n'
            '[phases]\nbuild.script = "true"\n',
        },
    )
    proc = run_butido(repo, "source", "verify")  # the connection is in the environment
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "source_cache = s3://no-such-bucket-cli/cache" in proc.stderr, proc.stderr
    assert "butido_stores" in proc.stderr and "no such bucket" in proc.stderr


RSS_SCRIPT = """
import json, os, resource, sys, tarfile
from airflow_butido.object_store import open_store
from airflow_butido.recipes.config import StoreUrl
from airflow_butido.stores import extract_outputs

root = open_store("staging", StoreUrl(sys.argv[1]), None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
size = int(sys.argv[2])

def chunks():
    info = tarfile.TarInfo("outputs/big.bin")
    info.size = size
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    block = os.urandom(1 << 16)
    left = size
    while left:
        n = min(left, len(block))
        yield block[:n]
        left -= n
    yield bytes(-size % 512) + bytes(1024)

[artifact] = extract_outputs(chunks(), root / "big", owner="big 1")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "peak_kb": after, "size": artifact.size}))
"""


def test_a_large_output_streams_through_with_bounded_memory(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    size = 200 << 20
    proc = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, f"s3://{s3_bucket}/staging", str(size)],
        env={**os.environ, "AIRFLOW_CONN_BUTIDO_STORES": s3_server.connection},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["size"] == size
    assert s3_server.objects(s3_bucket)["staging/big/big.bin"] == size
    grown_mb = (figures["peak_kb"] - figures["before_kb"]) / 1024
    # 200 MiB went through; the process grew by a few upload parts at most (the
    # Airflow and S3 client imports before it are not the stream's)
    assert grown_mb < 64, figures


def test_the_build_record_view_streams_an_artifact_from_the_bucket(
    s3_bucket: str,
    record,  # noqa: F811 (the fixture of tests/unit/test_web_app.py)
) -> None:
    from airflow_butido.web.app import BuildRecord
    from tests.unit import test_web_app as web

    staging = staging_of(s3_bucket)
    data = b"hello 2.1\n"
    put_verified(
        staging / web.SUBMIT / "hello-2.1.deb", [data], temporary_key(staging, part_prefix())
    )
    in_s3 = BuildRecord(engine=record.engine, staging=staging, release_stores=())
    client = web._client(in_s3)
    download = client.get(f"/jobs/{web.BUILT}/artifacts/hello-2.1.deb")
    assert download.status_code == 200 and download.content == data
    assert "hello-2.1.deb" in download.headers["content-disposition"]
    (staging / web.SUBMIT / "hello-2.1.deb").write_bytes(b"changed")
    assert client.get(f"/jobs/{web.BUILT}/artifacts/hello-2.1.deb").status_code == 410
