"""Hostile download servers: a total deadline, a size cap, prompt cancellation by Ctrl-C
and SIGTERM, and no temporary file left behind, even after ``kill -9``."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_butido.recipes.package import Source
from airflow_butido.sources import download_sources
from airflow_butido.stores import part_prefix
from tests.support import Pkg
from tests.unit.recipes.repo_factory import leaf, write_repo

ROOT = Path(__file__).resolve().parents[2]
DIGEST = hashlib.sha256(b"never matches").hexdigest()


class Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            if self.path == "/drip":  # one byte every 0.5 s, for ever
                self._head({"Content-Length": str(10**6)})
                while True:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            elif self.path == "/endless":  # as fast as possible, no length
                self._head({"Connection": "close"})
                block = b"y" * 65536
                while True:
                    self.wfile.write(block)
            elif self.path == "/huge":  # announces 100 GB
                self._head({"Content-Length": str(100 << 30)})
                self.wfile.write(b"z" * 1024)
        except OSError:
            pass  # the client hung up, as it should

    def _head(self, headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _source(url: str) -> Source:
    return Source("src", url, "sha256", DIGEST)


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()]


def test_dripping_server_stops_at_the_deadline(tmp_path: Path, server: str) -> None:
    started = time.monotonic()
    (result,) = download_sources(
        tmp_path, [(Pkg("p", "1"), _source(f"{server}/drip"))], deadline_seconds=2
    )
    assert time.monotonic() - started < 8
    assert not result.ok
    assert "deadline of 2 s" in result.message
    assert _leftovers(tmp_path) == []


def test_endless_body_stops_at_the_size_cap(tmp_path: Path, server: str) -> None:
    (result,) = download_sources(
        tmp_path, [(Pkg("p", "1"), _source(f"{server}/endless"))], max_bytes=5 << 20
    )
    assert not result.ok
    assert f"exceeds {5 << 20} bytes" in result.message
    assert _leftovers(tmp_path) == []


def test_announced_size_above_the_cap_is_refused_at_once(tmp_path: Path, server: str) -> None:
    started = time.monotonic()
    (result,) = download_sources(
        tmp_path, [(Pkg("p", "1"), _source(f"{server}/huge"))], max_bytes=1 << 20
    )
    assert time.monotonic() - started < 5
    assert not result.ok
    assert "Content-Length 107374182400 exceeds the maximum" in result.message


def test_temporary_files_of_dead_downloads_are_removed_next_time(
    tmp_path: Path, server: str
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    package_dir = tmp_path / "q-1"
    package_dir.mkdir()
    stale = package_dir / part_prefix().replace(str(os.getpid()), str(pid), 1)
    stale = stale.with_name(stale.name + "abc.part")
    stale.write_bytes(b"half")
    alive = package_dir / (part_prefix() + "def.part")  # ours: a running download
    alive.write_bytes(b"busy")
    download_sources(tmp_path, [(Pkg("p", "1"), _source(f"{server}/huge"))], max_bytes=1)
    assert not stale.exists()
    assert alive.exists()


def _cli_repo(root: Path, url: str) -> Path:
    return write_repo(
        root,
        {
            "p/pkg.toml": leaf("p", "1")
            + f"[sources.src]\nurl = '{url}'\nhash.type = 'sha256'\nhash.hash = '{DIGEST}'\n"
        },
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_download_at_once_without_leftovers(
    tmp_path: Path, server: str, signum: int
) -> None:
    repo = _cli_repo(tmp_path / "repo", f"{server}/drip")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("BUTIDO_CONFIG", "BUTIDO_SETTINGS", "XDG_CONFIG_HOME"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_butido.cli.main",
            "--repo",
            str(repo),
            "source",
            "download",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cache = repo / "sources"
    deadline = time.monotonic() + 30
    while not any(p.name.endswith(".part") for p in cache.rglob("*")):
        assert time.monotonic() < deadline, "the download never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the download ignored the signal")
    assert time.monotonic() - sent < 5
    assert proc.returncode == 130, err
    assert _leftovers(cache) == []
