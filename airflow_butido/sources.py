"""The source cache: where a package's sources live, checking them, fetching them.

Layout (butido 0.3+): ``<source_cache>/<name>-<version>/<source-name>.source``. Hashes are
computed by streaming the file; a download goes to a temporary file in the same directory,
is hashed while it is written and only renamed into place when the hash matches, so the
cache never holds a partial or corrupt file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_butido import __version__
from airflow_butido.errors import ButidoError
from airflow_butido.object_store import (
    StorePath,
    describe,
    is_local,
    put_verified,
    reading,
    temporary_key,
    url_of,
)
from airflow_butido.recipes.paths import OutsideRoot, confine
from airflow_butido.stores import PART_SUFFIX, part_prefix, remove_stale_parts

if TYPE_CHECKING:
    from airflow_butido.recipes.package import Package, Source

HASH_TYPES = ("sha1", "sha256", "sha512")
CHUNK_SIZE = 1 << 20
MAX_REDIRECTS = 10
USER_AGENT = f"airflow-butido/{__version__}"
DEFAULT_DEADLINE_SECONDS = 3600.0  # config: source_download_deadline
DEFAULT_MAX_BYTES = 4096 << 20  # config: source_download_max_mb


class SourceError(ButidoError):
    """A source file is missing, corrupt, or could not be downloaded."""


@dataclass(frozen=True)
class DownloadResult:
    label: str  # "NAME VERSION"
    source_name: str
    path: StorePath
    ok: bool
    message: str  # "" when ok and nothing worth saying


@dataclass(frozen=True)
class DownloadEvent:
    """Progress of one download, for a CLI to print while the pool runs."""

    kind: str  # "start" | "warning" | "done" | "failed"
    label: str
    source_name: str
    message: str = ""


def source_path(cache_root: StorePath, package: Package, source: Source) -> StorePath:
    """The cache file of ``source``; raises SourceError if it would lie outside the cache."""
    rel = f"{package.name}-{package.version}/{source.name}.source"
    what = f"source {source.name} of {package.name} {package.version}"
    if not is_local(cache_root):
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise SourceError(f"{what}: {rel!r} is not a name below {url_of(cache_root)}")
        return cache_root / rel
    try:
        confine(cache_root, rel, what=what)
    except OutsideRoot as exc:
        raise SourceError(str(exc)) from None
    return Path(cache_root) / rel


def _hasher(hash_type: str) -> Any:
    if hash_type not in HASH_TYPES:
        raise SourceError(
            f"unsupported hash type {hash_type!r} (expected one of {', '.join(HASH_TYPES)})"
        )
    return hashlib.new(hash_type)


def hash_file(path: StorePath, hash_type: str) -> str:
    """Hex digest of a file, read in chunks so any size works in constant memory."""
    digest = _hasher(hash_type)
    with reading(path) as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def verify_source(path: StorePath, source: Source) -> None:
    """Raise SourceError naming ``path`` if the file is missing or its hash differs."""
    shown = url_of(path)
    try:
        if not path.is_file():
            raise SourceError(f"{shown}: source file missing")
        actual = hash_file(path, source.hash_type)
    except OSError as exc:
        raise SourceError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    except (SourceError, ButidoError):
        raise
    except Exception as exc:  # the object store's client errors
        raise SourceError(f"{shown}: cannot read: {describe(exc)}") from None
    if actual != source.hash:
        raise SourceError(f"{shown}: Hash mismatch, expected '{source.hash}', got '{actual}'")


def download_sources(
    cache_root: StorePath,
    items: Sequence[tuple[Package, Source]],
    *,
    force: bool = False,
    timeout: float = 60.0,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_concurrency: int = 16,
    on_event: Callable[[DownloadEvent], None] | None = None,
) -> list[DownloadResult]:
    """Download every source concurrently; one result per item, in the order given.

    Failures are results (``ok=False``), not exceptions, so one bad URL does not hide the
    others; the caller decides the exit status. ``timeout`` bounds each network wait,
    ``deadline_seconds`` each whole download, ``max_bytes`` each body (a smaller
    Content-Length is the cap where the server sends one).

    Ctrl-C or SIGTERM stops every download at once, removes their temporary files and
    raises KeyboardInterrupt. Temporary files of downloads killed outright are removed
    the next time.
    """
    if not items:
        return []
    emit = on_event or (lambda _event: None)
    remove_stale_parts(cache_root)
    stop = _Stop()
    limits = _Limits(timeout, deadline_seconds, max_bytes)

    def one(item: tuple[Package, Source]) -> DownloadResult:
        package, source = item
        return _download_one(
            cache_root, package, source, force=force, limits=limits, stop=stop, emit=emit
        )

    workers = max(1, min(max_concurrency, len(items)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="source-download")
    try:
        with _terminate_as_interrupt():
            futures = [pool.submit(one, item) for item in items]
            return [future.result() for future in futures]
    except BaseException:
        stop.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class _Limits:
    timeout: float  # each network wait
    deadline: float  # the whole download
    max_bytes: int


class _Stop:
    """Stops running downloads from another thread: shutting a socket down wakes a
    reader blocked on it at once, where closing it would not."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.add(sock)
        if self.stopped.is_set():
            _shut(sock)

    def forget(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sockets.discard(sock)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (in the main thread), so cleanup runs as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _response_socket(response: Any) -> socket.socket | None:
    """The socket under a streamed ``requests`` response (urllib3 2)."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _download_one(
    cache_root: StorePath,
    package: Package,
    source: Source,
    *,
    force: bool,
    limits: _Limits,
    stop: _Stop,
    emit: Callable[[DownloadEvent], None],
) -> DownloadResult:
    label = f"{package.name} {package.version}"
    path = source_path(cache_root, package, source)

    def fail(message: str) -> DownloadResult:
        emit(DownloadEvent("failed", label, source.name, message))
        return DownloadResult(label, source.name, path, False, message)

    if stop.stopped.is_set():
        return fail(f"{url_of(path)}: cancelled")
    if source.download_manually:
        return fail(f"{url_of(path)}: source {source.name!r} must be downloaded manually")
    if path.exists() and not force:
        return fail(f"{url_of(path)}: already exists (use --force to download it again)")
    if source.hash_type not in HASH_TYPES:
        return fail(f"{url_of(path)}: unsupported hash type {source.hash_type!r}")

    emit(DownloadEvent("start", label, source.name, source.url))
    try:
        warning = _fetch_verified(source, path, limits=limits, stop=stop, cache_root=cache_root)
    except SourceError as exc:
        return fail(str(exc))
    if warning:
        emit(DownloadEvent("warning", label, source.name, warning))
    emit(DownloadEvent("done", label, source.name, url_of(path)))
    return DownloadResult(label, source.name, path, True, warning)


def _fetch_verified(
    source: Source, path: StorePath, *, limits: _Limits, stop: _Stop, cache_root: StorePath
) -> str:
    """Fetch ``source.url`` into ``path`` atomically; return a warning text or ""."""
    import requests

    warning = ""
    fd = -1
    tmp: Path | None = None
    if is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=part_prefix(), suffix=PART_SUFFIX)
        tmp = Path(tmp_name)
    expired = threading.Event()
    sock: socket.socket | None = None
    timer: threading.Timer | None = None
    try:
        with requests.Session() as session:
            session.max_redirects = MAX_REDIRECTS
            session.headers["User-Agent"] = USER_AGENT
            try:
                response = session.get(source.url, stream=True, timeout=limits.timeout)
            except requests.TooManyRedirects as exc:
                raise SourceError(f"{source.url}: more than {MAX_REDIRECTS} redirects") from exc
            except requests.RequestException as exc:
                raise SourceError(f"{source.url}: {exc}") from exc
            with response:
                sock = _response_socket(response)
                stop.watch(sock)

                def expire() -> None:
                    expired.set()
                    if sock is not None:
                        _shut(sock)

                timer = threading.Timer(limits.deadline, expire)
                timer.daemon = True
                timer.start()
                if response.status_code != 200:
                    status = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
                    raise SourceError(f"{source.url}: {status}")
                cap = _size_cap(source, response, limits.max_bytes)
                content_type = response.headers.get("Content-Type", "")
                if not content_type:
                    warning = f"{source.url}: no Content-Type in the response"
                elif content_type.split(";")[0].strip().lower() == "text/html":
                    warning = f"{source.url}: Content-Type is text/html, probably not a source"
                digest = _hasher(source.hash_type)

                def body() -> Iterator[bytes]:
                    size = 0
                    while chunk := response.raw.read1(CHUNK_SIZE):
                        _check_stopped(source, stop, expired, limits)
                        size += len(chunk)
                        if size > cap:
                            raise SourceError(
                                f"{source.url}: the response exceeds {cap} bytes; refused"
                            )
                        digest.update(chunk)
                        yield chunk

                def check_hash(_sha256: str = "", _size: int = 0) -> None:
                    actual = digest.hexdigest()
                    if actual != source.hash:
                        raise SourceError(
                            f"{source.url}: Hash mismatch, expected '{source.hash}', got '{actual}'"
                        )

                try:
                    if tmp is not None:
                        with os.fdopen(fd, "wb") as out:
                            fd = -1
                            for chunk in body():
                                out.write(chunk)
                    else:
                        assert not is_local(path) and not is_local(cache_root)
                        put_verified(
                            path,
                            body(),
                            temporary_key(cache_root, part_prefix()),
                            before_place=check_hash,
                        )
                except SourceError:
                    raise
                except ButidoError as exc:
                    raise SourceError(f"{url_of(path)}: {exc}") from exc
                except (requests.RequestException, OSError) as exc:
                    _check_stopped(source, stop, expired, limits)
                    raise SourceError(f"{source.url}: download interrupted: {exc}") from exc
                except Exception as exc:  # urllib3's protocol errors
                    _check_stopped(source, stop, expired, limits)
                    if tmp is not None and not type(exc).__module__.startswith("urllib3"):
                        raise
                    if tmp is None:  # the object store's client errors
                        raise SourceError(
                            f"{source.url}: storing it as {url_of(path)} failed: {describe(exc)}"
                        ) from exc
                    raise SourceError(f"{source.url}: download interrupted: {exc}") from exc
                _check_stopped(source, stop, expired, limits)
        if tmp is not None and is_local(path):
            check_hash()
            os.replace(tmp, path)
    finally:
        if timer is not None:
            timer.cancel()
        stop.forget(sock)
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return warning


def _check_stopped(source: Source, stop: _Stop, expired: threading.Event, limits: _Limits) -> None:
    if stop.stopped.is_set():
        raise SourceError(f"{source.url}: cancelled")
    if expired.is_set():
        raise SourceError(
            f"{source.url}: not complete within the deadline of {limits.deadline:g} s; refused"
        )


def _size_cap(source: Source, response: Any, max_bytes: int) -> int:
    """The most bytes the body may have: its Content-Length when given, never more than
    ``max_bytes``."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit():
        if int(declared) > max_bytes:
            raise SourceError(
                f"{source.url}: Content-Length {declared} exceeds the maximum of {max_bytes} "
                "bytes (source_download_max_mb); refused"
            )
        return int(declared)
    return max_bytes
