"""``download_sources`` against a real HTTP server on the loopback interface."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_butido.recipes.package import Source
from airflow_butido.sources import DownloadEvent, download_sources, source_path
from tests.support import Pkg

BODY = b"source tarball contents\n" * 1000


class Handler(http.server.BaseHTTPRequestHandler):
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path
        if path == "/slow":
            cls = type(self)
            with cls.lock:
                cls.in_flight += 1
                cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
            time.sleep(0.3)
            with cls.lock:
                cls.in_flight -= 1
            path = "/file"
        if path.startswith("/redirect/"):
            hops = int(path.split("/")[2])
            self.send_response(302)
            self.send_header("Location", "/file" if hops == 0 else f"/redirect/{hops - 1}")
            self.end_headers()
            return
        if path == "/file":
            self._send(200, "application/octet-stream", BODY)
        elif path == "/html":
            self._send(200, "text/html; charset=utf-8", BODY)
        elif path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:100])
            self.wfile.flush()
            self.close_connection = True
        elif path == "/nocontent":
            self._send(204, "application/octet-stream", b"")
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


SHA256 = hashlib.sha256(BODY).hexdigest()


def src(
    url: str, *, hash_type: str = "sha256", digest: str = SHA256, manual: bool = False
) -> Source:
    return Source("src", url, hash_type, digest, manual)


def cache_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_download_writes_verified_file_at_cache_path(tmp_path: Path, server: str) -> None:
    pkg = Pkg("a", "1")
    s = src(f"{server}/file", hash_type="sha512", digest=hashlib.sha512(BODY).hexdigest())
    [result] = download_sources(tmp_path, [(pkg, s)])
    assert result.ok, result.message
    assert result.path == source_path(tmp_path, pkg, s)
    assert result.path.read_bytes() == BODY
    assert cache_files(tmp_path) == [result.path]


def test_download_runs_concurrently_and_keeps_item_order(tmp_path: Path, server: str) -> None:
    Handler.most_in_flight = 0
    items = [(Pkg(f"p{i}", "1"), src(f"{server}/slow")) for i in range(20)]
    results = download_sources(tmp_path, items, max_concurrency=8)
    assert [r.label for r in results] == [f"p{i} 1" for i in range(20)]
    assert all(r.ok for r in results)
    assert len(cache_files(tmp_path)) == 20
    assert 2 <= Handler.most_in_flight <= 8  # in parallel, but never more than asked


def test_download_follows_redirects_up_to_ten(tmp_path: Path, server: str) -> None:
    [ok] = download_sources(tmp_path, [(Pkg("a", "1"), src(f"{server}/redirect/9"))])
    assert ok.ok, ok.message
    [too_many] = download_sources(tmp_path, [(Pkg("b", "1"), src(f"{server}/redirect/10"))])
    assert not too_many.ok
    assert "more than 10 redirects" in too_many.message
    assert not too_many.path.exists()


@pytest.mark.parametrize("path", ["/missing", "/nocontent"])
def test_download_accepts_only_http_200(tmp_path: Path, server: str, path: str) -> None:
    [result] = download_sources(tmp_path, [(Pkg("a", "1"), src(server + path))])
    assert not result.ok
    assert "HTTP 404" in result.message or "HTTP 204" in result.message
    assert cache_files(tmp_path) == []


def test_download_with_wrong_hash_leaves_no_file(tmp_path: Path, server: str) -> None:
    [result] = download_sources(tmp_path, [(Pkg("a", "1"), src(f"{server}/file", digest="00"))])
    assert not result.ok
    assert f"Hash mismatch, expected '00', got '{SHA256}'" in result.message
    assert cache_files(tmp_path) == []


def test_truncated_download_leaves_no_file(tmp_path: Path, server: str) -> None:
    [result] = download_sources(tmp_path, [(Pkg("a", "1"), src(f"{server}/truncated"))])
    assert not result.ok
    assert cache_files(tmp_path) == []


def test_html_content_type_is_a_warning_not_a_failure(tmp_path: Path, server: str) -> None:
    events: list[DownloadEvent] = []
    [result] = download_sources(
        tmp_path, [(Pkg("a", "1"), src(f"{server}/html"))], on_event=events.append
    )
    assert result.ok
    assert "text/html" in result.message
    assert [e.kind for e in events] == ["start", "warning", "done"]


def test_download_manually_source_is_refused(tmp_path: Path, server: str) -> None:
    [result] = download_sources(tmp_path, [(Pkg("a", "1"), src(f"{server}/file", manual=True))])
    assert not result.ok
    assert "must be downloaded manually" in result.message
    assert cache_files(tmp_path) == []


def test_existing_file_is_an_error_without_force_and_replaced_with_force(
    tmp_path: Path, server: str
) -> None:
    pkg, s = Pkg("a", "1"), src(f"{server}/file")
    path = source_path(tmp_path, pkg, s)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"old")
    [refused] = download_sources(tmp_path, [(pkg, s)])
    assert not refused.ok
    assert "already exists" in refused.message
    assert path.read_bytes() == b"old"
    [forced] = download_sources(tmp_path, [(pkg, s)], force=True)
    assert forced.ok
    assert path.read_bytes() == BODY


def test_failed_forced_download_keeps_the_old_file(tmp_path: Path, server: str) -> None:
    pkg, s = Pkg("a", "1"), src(f"{server}/file", digest="00")
    path = source_path(tmp_path, pkg, s)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"old")
    [result] = download_sources(tmp_path, [(pkg, s)], force=True)
    assert not result.ok
    assert cache_files(tmp_path) == [path]
    assert path.read_bytes() == b"old"


def test_unreachable_server_is_a_failed_result(tmp_path: Path) -> None:
    [result] = download_sources(
        tmp_path, [(Pkg("a", "1"), src("http://127.0.0.1:9/file"))], timeout=5
    )
    assert not result.ok
    assert "127.0.0.1:9" in result.message


def test_cli_download_against_a_local_server_keeps_only_verified_files(
    tmp_path: Path, server: str, capsys, monkeypatch
) -> None:
    from airflow_butido.cli import main as cli_main
    from tests.unit.recipes.repo_factory import leaf, write_repo

    for var in ("BUTIDO_CONFIG", "BUTIDO_SETTINGS", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)

    def source(path: str, digest: str = SHA256, manual: bool = False) -> str:
        extra = "download_manually = true\n" if manual else ""
        return (
            f"[sources.src]\nurl = '{server}{path}'\nhash.type = 'sha256'\n"
            f"hash.hash = '{digest}'\n{extra}"
        )

    root = write_repo(
        tmp_path / "repo",
        {
            "good/pkg.toml": leaf("good", "1") + source("/file"),
            "html/pkg.toml": leaf("html", "1") + source("/html"),
            "bad/pkg.toml": leaf("bad", "1") + source("/file", digest="0" * 64),
            "gone/pkg.toml": leaf("gone", "1") + source("/missing"),
            "manual/pkg.toml": leaf("manual", "1") + source("/file", manual=True),
        },
    )
    cache = root / "sources"
    code = cli_main.main(["--repo", str(root), "source", "download"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in err
    assert "3 of 5 downloads failed" in err
    assert "html 1 src: warning: " in err and "text/html" in err
    assert "bad 1 src: failed: " in err and "Hash mismatch" in err
    assert "gone 1 src: failed: " in err and "404" in err
    assert "manual 1 src: failed: " in err and "manually" in err
    assert cache_files(cache) == [cache / "good-1/src.source", cache / "html-1/src.source"]
    assert (cache / "good-1/src.source").read_bytes() == BODY

    # --matching selects; without --force an existing file is an error and stays as it is
    code = cli_main.main(["--repo", str(root), "source", "download", "--matching", "^go"])
    out, err = capsys.readouterr()
    assert code == 1 and "already exists" in err
    assert "gone 1" in out and "good 1" in out and "bad 1" not in out
    code = cli_main.main(["--repo", str(root), "source", "download", "good", "--force"])
    assert code == 0, capsys.readouterr().err
    assert (cache / "good-1/src.source").read_bytes() == BODY
