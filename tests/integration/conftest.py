"""Fixtures of the integration tests: the build database, the engine behind a TCP port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import upgrade
from tests.support import DOCKER_SOCKET


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh build database: PostgreSQL, then a SQLite file (each test runs on both)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path}/butido.sqlite"


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    """An engine on ``db_url`` with the current schema."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def http_endpoint() -> Iterator[str]:
    """The local engine behind a plain TCP port on the loopback: an ``http`` endpoint."""
    import shutil
    import socket
    import socketserver

    socket_path = DOCKER_SOCKET.removeprefix("unix://")
    if DOCKER_SOCKET.startswith(("tcp://", "http")):
        pytest.skip("the engine is not on a unix socket")

    class Pipe(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(socket_path)

            def pump(src: socket.socket, dst: socket.socket) -> None:
                with contextlib.suppress(OSError):
                    shutil.copyfileobj(src.makefile("rb", buffering=0), dst.makefile("wb", 0))
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

            back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
            back.start()
            pump(self.request, upstream)
            back.join()
            upstream.close()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Pipe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
