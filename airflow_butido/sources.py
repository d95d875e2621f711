"""The source cache: where a package's sources live, checking them, fetching them.

Layout (butido 0.3+): ``<source_cache>/<name>-<version>/<source-name>.source``. Hashes are
computed by streaming the file; a download goes to a temporary file in the same directory,
is hashed while it is written and only renamed into place when the hash matches, so the
cache never holds a partial or corrupt file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_butido import __version__
from airflow_butido.errors import ButidoError
from airflow_butido.recipes.paths import OutsideRoot, confine

if TYPE_CHECKING:
    from airflow_butido.recipes.package import Package, Source

HASH_TYPES = ("sha1", "sha256", "sha512")
CHUNK_SIZE = 1 << 20
MAX_REDIRECTS = 10
USER_AGENT = f"airflow-butido/{__version__}"


class SourceError(ButidoError):
    """A source file is missing, corrupt, or could not be downloaded."""


@dataclass(frozen=True)
class DownloadResult:
    label: str  # "NAME VERSION"
    source_name: str
    path: Path
    ok: bool
    message: str  # "" when ok and nothing worth saying


@dataclass(frozen=True)
class DownloadEvent:
    """Progress of one download, for a CLI to print while the pool runs."""

    kind: str  # "start" | "warning" | "done" | "failed"
    label: str
    source_name: str
    message: str = ""


def source_path(cache_root: Path, package: Package, source: Source) -> Path:
    """The cache file of ``source``; raises SourceError if it would lie outside the cache."""
    rel = f"{package.name}-{package.version}/{source.name}.source"
    try:
        confine(cache_root, rel, what=f"source {source.name} of {package.name} {package.version}")
    except OutsideRoot as exc:
        raise SourceError(str(exc)) from None
    return Path(cache_root) / rel


def _hasher(hash_type: str) -> Any:
    if hash_type not in HASH_TYPES:
        raise SourceError(
            f"unsupported hash type {hash_type!r} (expected one of {', '.join(HASH_TYPES)})"
        )
    return hashlib.new(hash_type)


def hash_file(path: Path, hash_type: str) -> str:
    """Hex digest of a file, read in chunks so any size works in constant memory."""
    digest = _hasher(hash_type)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def verify_source(path: Path, source: Source) -> None:
    """Raise SourceError naming ``path`` if the file is missing or its hash differs."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: source file missing")
    try:
        actual = hash_file(path, source.hash_type)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if actual != source.hash:
        raise SourceError(f"{path}: Hash mismatch, expected '{source.hash}', got '{actual}'")


def download_sources(
    cache_root: Path,
    items: Sequence[tuple[Package, Source]],
    *,
    force: bool = False,
    timeout: float = 60.0,
    max_concurrency: int = 16,
    on_event: Callable[[DownloadEvent], None] | None = None,
) -> list[DownloadResult]:
    """Download every source concurrently; one result per item, in the order given.

    Failures are results (``ok=False``), not exceptions, so one bad URL does not hide the
    others; the caller decides the exit status.
    """
    if not items:
        return []
    emit = on_event or (lambda _event: None)

    def one(item: tuple[Package, Source]) -> DownloadResult:
        package, source = item
        return _download_one(cache_root, package, source, force=force, timeout=timeout, emit=emit)

    workers = max(1, min(max_concurrency, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="source-download") as pool:
        return list(pool.map(one, items))


def _download_one(
    cache_root: Path,
    package: Package,
    source: Source,
    *,
    force: bool,
    timeout: float,
    emit: Callable[[DownloadEvent], None],
) -> DownloadResult:
    label = f"{package.name} {package.version}"
    path = source_path(cache_root, package, source)

    def fail(message: str) -> DownloadResult:
        emit(DownloadEvent("failed", label, source.name, message))
        return DownloadResult(label, source.name, path, False, message)

    if source.download_manually:
        return fail(f"{path}: source {source.name!r} must be downloaded manually")
    if path.exists() and not force:
        return fail(f"{path}: already exists (use --force to download it again)")
    if source.hash_type not in HASH_TYPES:
        return fail(f"{path}: unsupported hash type {source.hash_type!r}")

    emit(DownloadEvent("start", label, source.name, source.url))
    try:
        warning = _fetch_verified(source, path, timeout=timeout)
    except SourceError as exc:
        return fail(str(exc))
    if warning:
        emit(DownloadEvent("warning", label, source.name, warning))
    emit(DownloadEvent("done", label, source.name, str(path)))
    return DownloadResult(label, source.name, path, True, warning)


def _fetch_verified(source: Source, path: Path, *, timeout: float) -> str:
    """Fetch ``source.url`` into ``path`` atomically; return a warning text or ""."""
    import requests

    path.parent.mkdir(parents=True, exist_ok=True)
    warning = ""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with requests.Session() as session:
            session.max_redirects = MAX_REDIRECTS
            session.headers["User-Agent"] = USER_AGENT
            try:
                response = session.get(source.url, stream=True, timeout=timeout)
            except requests.TooManyRedirects as exc:
                raise SourceError(f"{source.url}: more than {MAX_REDIRECTS} redirects") from exc
            except requests.RequestException as exc:
                raise SourceError(f"{source.url}: {exc}") from exc
            with response:
                if response.status_code != 200:
                    status = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
                    raise SourceError(f"{source.url}: {status}")
                content_type = response.headers.get("Content-Type", "")
                if not content_type:
                    warning = f"{source.url}: no Content-Type in the response"
                elif content_type.split(";")[0].strip().lower() == "text/html":
                    warning = f"{source.url}: Content-Type is text/html, probably not a source"
                digest = _hasher(source.hash_type)
                try:
                    with os.fdopen(fd, "wb") as out:
                        fd = -1
                        for chunk in response.iter_content(CHUNK_SIZE):
                            digest.update(chunk)
                            out.write(chunk)
                except requests.RequestException as exc:
                    raise SourceError(f"{source.url}: download interrupted: {exc}") from exc
        actual = digest.hexdigest()
        if actual != source.hash:
            raise SourceError(
                f"{source.url}: Hash mismatch, expected '{source.hash}', got '{actual}'"
            )
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
    return warning
