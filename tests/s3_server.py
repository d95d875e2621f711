"""A real S3 server on loopback for the object-storage stores: moto in server mode
(``moto[server]``, a dev dependency), run as a subprocess on a free port.

``s3_server`` is a session fixture (registered through ``pytest_plugins`` in
tests/conftest.py); ``s3_bucket`` makes a fresh bucket per test and points the Airflow
connection ``butido_stores`` (``AIRFLOW_CONN_BUTIDO_STORES``) at the server. Outside CI a
machine without moto skips; under ``CI=true`` that fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CONN_ID = "butido_stores"
CONN_ENV = f"AIRFLOW_CONN_{CONN_ID.upper()}"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>

    @property
    def connection(self) -> str:
        """The Airflow connection (JSON) a deployment sets as AIRFLOW_CONN_BUTIDO_STORES."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
            }
        )

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        )

    def new_bucket(self) -> str:
        name = f"butido-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every key of ``bucket`` under ``prefix`` with its size."""
        found: dict[str, int] = {}
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"]] = int(item["Size"])
        return found

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def upload_tree(self, root: Path, bucket: str, prefix: str) -> None:
        client = self.client()
        for path in sorted(root.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(root).as_posix()}"
                client.upload_file(str(path), bucket, key)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_moto(log: Path, env: dict[str, str] | None = None) -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port (``env`` adds to its environment, e.g.
    ``INITIAL_NO_AUTH_ACTION_COUNT`` to check credentials), stopped on exit."""
    from tests.conftest import unavailable

    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        unavailable(f"moto[server] is not installed (the dev extra): {exc}")
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                unavailable(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_moto(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.client().list_buckets()
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; this process's ``butido_stores`` connection points at the server."""
    monkeypatch.setenv(CONN_ENV, s3_server.connection)
    return s3_server.new_bucket()
