"""`butido build` and `butido release` with every store on object storage: staging,
release store and source cache in a bucket of a real S3 server on loopback (moto), or
given as file:// URLs. Dependency artifacts reach their dependents' containers from the
bucket (the example packages check their inputs' contents), nothing lies on disk."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e._example import butido_in_workspace, example_workspace
from tests.s3_server import CONN_ENV, S3Server

pytestmark = [pytest.mark.docker]

VENV_BIN = Path(sys.executable).parent
STORE_KEYS = ("staging", "releases_root", "source_cache")


def with_stores(overlay: Path, stores: dict[str, str]) -> None:
    lines = [
        line
        for line in overlay.read_text().splitlines()
        if line.split("=", 1)[0].strip() not in STORE_KEYS
    ]
    overlay.write_text("".join(f'{k} = "{v}"\n' for k, v in stores.items()) + "\n".join(lines))


def butido(ws: dict[str, Path], env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return butido_in_workspace(ws, *args, env=env)


def workspace(base: Path, butido_examples: Path, build_image: str) -> dict[str, Path]:
    ws = example_workspace(base, butido_examples, build_image)
    ws["db"] = ws["base"] / "butido.sqlite"
    (ws["base"] / "airflow-butido.toml").write_text(f'database_url = "sqlite:///{ws["db"]}"\n')
    return ws


def recorded_artifacts(db: Path) -> dict[str, tuple[str, str]]:
    """path -> (submit uuid, sha256) of every artifact recorded."""
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "select a.path, s.uuid, a.sha256 from artifacts a "
                    "join jobs j on j.id = a.job_id join submits s on s.id = j.submit_id"
                )
            ).all()
    finally:
        engine.dispose()
    return {r[0]: (str(uuid.UUID(str(r[1]))), r[2]) for r in rows}


def inputs_of(db: Path, package: str) -> list[str]:
    """The artifact paths the build database records as inputs of ``package``'s job."""
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "select a.path from job_inputs i join artifacts a on a.id = i.artifact_id "
                    "join jobs j on j.id = i.job_id join packages p on p.id = j.package_id "
                    "where p.name = :name"
                ),
                {"name": package},
            ).all()
    finally:
        engine.dispose()
    return [r[0] for r in rows]


def test_build_release_and_reuse_with_every_store_in_s3(
    tmp_path: Path, butido_examples: Path, build_image: str, s3_server: S3Server
) -> None:
    ws = workspace(tmp_path, butido_examples, build_image)
    bucket = s3_server.new_bucket()
    s3_server.upload_tree(butido_examples / "sources", bucket, "cache")
    with_stores(
        ws["overlay"],
        {
            "staging": f"s3://{bucket}/staging",
            "releases_root": f"s3://{bucket}/releases",
            "source_cache": f"s3://{bucket}/cache",
        },
    )
    env = {CONN_ENV: s3_server.connection}

    done = butido(ws, env, "build", "c", "-I", "bookworm")
    assert done.returncode == 0, done.stdout + done.stderr
    built = int(re.search(r"(\d+) built, 0 reused, 0 failed", done.stdout).group(1))
    assert built >= 5  # c, its dependencies g, h, i and theirs
    created = done.stdout.split("Packages created:\n", 1)[1].split()
    assert len(created) == built and all(p.startswith(f"s3://{bucket}/staging/") for p in created)
    assert not (ws["stores"] / "staging").exists() or not any((ws["stores"] / "staging").iterdir())

    recorded = recorded_artifacts(ws["db"])
    assert len(recorded) == built
    keys = s3_server.objects(bucket)
    for path, (submit, sha256) in recorded.items():
        key = f"staging/{submit}/{path}"
        assert key in keys, key
        assert hashlib.sha256(s3_server.read(bucket, key)).hexdigest() == sha256
    assert [k for k in keys if k.endswith(".part")] == []

    (submit,) = {s for s, _ in recorded.values()}
    # c received every transitive dependency's artifact (from the bucket: nothing is on disk)
    # and its depcheck phase checked their contents
    assert sorted(inputs_of(ws["db"], "c")) == sorted(p for p in recorded if p != "c-3.pkg")
    released = butido(ws, env, "release", "new", submit, "--to", "default")
    assert released.returncode == 0, released.stdout + released.stderr
    keys = s3_server.objects(bucket)
    for path, (_, sha256) in recorded.items():
        data = s3_server.read(bucket, f"releases/default/{path}")
        assert hashlib.sha256(data).hexdigest() == sha256
    assert [k for k in keys if k.endswith(".part")] == []
    listed = butido(ws, env, "release", "list", "--to", "default", "-p", "c", "--json")
    (row,) = json.loads(listed.stdout)  # nothing else on the standard output
    assert row["Path"] == f"s3://{bucket}/releases/default/c-3.pkg", row
    removed = butido(ws, env, "release", "rm", "--from", "default", "h", "8", "--non-interactive")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "releases/default/h-8.pkg" not in s3_server.objects(bucket)

    again = butido(ws, env, "build", "c", "-I", "bookworm")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"0 built, {built} reused, 0 failed" in again.stdout


def test_build_with_file_urls(tmp_path: Path, butido_examples: Path, build_image: str) -> None:
    ws = workspace(tmp_path, butido_examples, build_image)
    stores = tmp_path / "url-stores"
    with_stores(
        ws["overlay"],
        {
            "staging": f"file://{stores}/staging",
            "releases_root": f"file://{stores}/releases",
            "source_cache": f"file://{butido_examples / 'sources'}",
        },
    )
    done = butido(ws, {}, "build", "h", "-I", "bookworm")
    assert done.returncode == 0, done.stdout + done.stderr
    (created,) = done.stdout.split("Packages created:\n", 1)[1].split()
    assert created.startswith(f"{stores}/staging/") and created.endswith("/h-8.pkg")
    assert Path(created).read_text() == "8\n"
