"""Stores on object storage: ``staging``, ``releases_root`` and ``source_cache`` given as
``s3://bucket/prefix`` (or ``gs://``) in config.toml.

A store is a *store path*: a local ``Path`` or Airflow's ``ObjectStoragePath``. Both
offer the pathlib operations the stores need (``/``, ``open``, ``exists``, ``is_file``,
``stat().st_size``, ``iterdir``, ``unlink``, ``name``), so most code is written once
over the union. What differs is writing: object storage has no atomic rename, so a
file is streamed to a temporary key, checked (size and sha256 read back), and only
then copied into place (``put_verified``).

Airflow and its filesystems are imported only here and only when a URL store is
opened: local stores cost nothing, and the pure core never imports this module at
the top.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeAlias

from airflow_butido.errors import ButidoError
from airflow_butido.recipes.config import DEFAULT_STORES_CONN_ID, Config, StoreUrl

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from typing_extensions import TypeIs  # in annotations only: no import at run time

StorePath: TypeAlias = "Path | ObjectStoragePath"

CHUNK_SIZE = 1 << 20
UPLOAD_BLOCK = 8 << 20  # the part size of a streamed upload: what one write holds in memory
TMP_SUFFIX = ".part"


class StoreError(ButidoError):
    """An object-storage store cannot be reached, read or written."""


def is_local(path: StorePath) -> TypeIs[Path]:
    return isinstance(path, Path)


def store_root(config: Config, key: str) -> StorePath:
    """The root of the store configured as ``key`` (``staging``, ``releases_root`` or
    ``source_cache``): a local Path, or the object-storage path, checked to be
    reachable once per process."""
    value = getattr(config, key)
    if isinstance(value, Path):
        return value
    if not isinstance(value, StoreUrl):
        raise TypeError(f"{key} is neither a path nor a store URL: {value!r}")
    return open_store(key, value, config.stores_conn_id)


_OPENED: dict[tuple[str, str], ObjectStoragePath] = {}
_OPEN_LOCK = threading.Lock()


def open_store(key: str, url: StoreUrl, conn_id: str | None) -> ObjectStoragePath:
    """The ``ObjectStoragePath`` of ``url`` with the credentials of the Airflow connection
    ``conn_id`` (resolved the usual way: AIRFLOW_CONN_<ID>, a secrets backend, or the
    metadata database; inside a task through the task's API). A store that cannot be
    reached is a StoreError naming the key, the URL and the connection."""
    conn = conn_id or DEFAULT_STORES_CONN_ID
    with _OPEN_LOCK:
        found = _OPENED.get((url.url, conn))
        if found is not None:
            return found
        where = f"{key} = {url.url} (Airflow connection {conn!r})"
        _quiet_client_logs()
        try:
            from airflow.sdk import ObjectStoragePath
        except ImportError as exc:  # pragma: no cover - Airflow is a dependency
            raise StoreError(f"{where}: Airflow's object storage is not available: {exc}") from exc
        _require_filesystem(where, url)
        _require_connection(where, conn)
        try:
            root = ObjectStoragePath(url.url, conn_id=conn)
            _probe(root)
        except StoreError as exc:
            raise StoreError(f"{where}: {exc}") from exc
        except Exception as exc:
            raise StoreError(f"{where}: the store cannot be reached: {describe(exc)}") from exc
        _OPENED[(url.url, conn)] = root
        return root


def _quiet_client_logs() -> None:
    """The S3 filesystem logs at INFO how it found its credentials, and Airflow's logging
    writes that on the standard output of a command (a `--json` listing would not parse).
    Where Airflow's logging is not set up yet (a `butido` command), the amazon provider
    logs warnings only; a task process keeps its deployment's settings."""
    quiet = "airflow.providers.amazon=WARNING"
    levels = os.environ.get("AIRFLOW__LOGGING__NAMESPACE_LEVELS", "")
    if "airflow.providers.amazon" not in levels and "airflow.sdk" not in sys.modules:
        os.environ["AIRFLOW__LOGGING__NAMESPACE_LEVELS"] = f"{levels} {quiet}".strip()


# What each scheme needs installed: the Airflow provider that attaches its filesystem
# (credentials from the connection) and the fsspec implementation, and how to get them.
FILESYSTEM_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "s3": (("airflow.providers.amazon", "s3fs"), "pip install 'airflow-butido[s3]'"),
    "gs": (
        ("airflow.providers.google", "gcsfs"),
        "pip install apache-airflow-providers-google gcsfs",
    ),
}
FILESYSTEM_PACKAGES["gcs"] = FILESYSTEM_PACKAGES["gs"]


def _require_filesystem(where: str, url: StoreUrl) -> None:
    modules, install = FILESYSTEM_PACKAGES.get(url.scheme, ((), ""))
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise StoreError(
            f"{where}: {url.scheme}:// stores need {' and '.join(missing)} (not installed "
            f"here): {install}"
        )


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _require_connection(where: str, conn_id: str) -> None:
    """A connection that does not exist would silently fall back to anonymous access."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        Connection.get(conn_id)
    except AirflowNotFoundException:
        raise StoreError(
            f"{where}: the connection is not defined; set AIRFLOW_CONN_{conn_id.upper()} "
            "(JSON or URI) or add it to Airflow, or name another in [stores] conn_id of "
            "airflow-butido.toml"
        ) from None


def _probe(root: ObjectStoragePath) -> None:
    """Fail now, with a clear message, when the bucket is missing or the endpoint or the
    credentials are wrong: not halfway through a build."""
    fs = root.fs
    bucket = root.path.split("/", 1)[0]
    try:
        info = fs.info(bucket)
    except FileNotFoundError:
        raise StoreError(
            f"{root.protocol}://{bucket}: no such bucket (or the connection may not see it)"
        ) from None
    except PermissionError as exc:
        raise StoreError(
            f"access denied, check the connection's credentials ({describe(exc)})"
        ) from None
    if info.get("type") not in ("directory", None):
        raise StoreError(f"{root.protocol}://{bucket}: not a bucket")


def describe(exc: BaseException) -> str:
    """A one-line reason: the error's own message, its type when it has none."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def url_of(path: StorePath) -> str:
    """How a store path is shown: a local path as is, an object as ``s3://bucket/key``
    (without the connection id ObjectStoragePath puts in its ``str``)."""
    if is_local(path):
        return str(path)
    return f"{path.protocol}://{path.path}"


def file_size(path: StorePath) -> int:
    return int(path.stat().st_size)


@contextlib.contextmanager
def reading(path: StorePath) -> Iterator[IO[bytes]]:
    """``path`` opened for reading in chunks (an object is streamed, never fetched whole)."""
    if is_local(path):
        with open(path, "rb") as fh:
            yield fh
        return
    with path.fs.open(path.path, "rb", block_size=CHUNK_SIZE * 4) as fh:
        yield fh


def sha256_of(path: StorePath) -> str:
    digest = hashlib.sha256()
    with reading(path) as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def chunks_of(path: StorePath) -> Iterator[bytes]:
    with reading(path) as fh:
        while chunk := fh.read(CHUNK_SIZE):
            yield chunk


def temporary_key(root: ObjectStoragePath, prefix: str) -> ObjectStoragePath:
    """A fresh temporary key at the top of ``root``: ``<prefix><random>.part``."""
    import uuid

    return root / f"{prefix}{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"


class UploadMismatch(StoreError):
    """The object read back differs from what was sent: nothing was put in place."""


def put_verified(
    dest: ObjectStoragePath,
    chunks: Iterable[bytes],
    tmp: ObjectStoragePath,
    *,
    before_place: Callable[[str, int], None] | None = None,
) -> tuple[str, int]:
    """Stream ``chunks`` into ``dest`` through the temporary key ``tmp``; return the
    sha256 (hex) and the size.

    The upload goes to ``tmp`` in parts (at most UPLOAD_BLOCK bytes in memory), is
    checked by reading it back (its size and sha256 must be what was sent), then
    ``before_place(sha256, size)`` may refuse (raise), and only then is it copied into
    place and ``tmp`` deleted. On any failure ``tmp`` is deleted and ``dest`` untouched.
    """
    fs = dest.fs
    digest = hashlib.sha256()
    size = 0
    try:
        with fs.open(tmp.path, "wb", block_size=UPLOAD_BLOCK) as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        sent = digest.hexdigest()
        _check_copy(tmp, sent, size)
        if before_place is not None:
            before_place(sent, size)
        fs.copy(tmp.path, dest.path)
        stored = int(fs.info(dest.path, refresh=True)["size"])
        if stored != size:
            raise UploadMismatch(f"{url_of(dest)}: {stored} bytes stored, {size} sent")
    finally:
        with contextlib.suppress(Exception):
            fs.rm(tmp.path)
    return sent, size


def _check_copy(tmp: ObjectStoragePath, sha256: str, size: int) -> None:
    stored = int(tmp.fs.info(tmp.path, refresh=True)["size"])
    if stored != size:
        raise UploadMismatch(f"{url_of(tmp)}: {stored} bytes stored, {size} sent")
    read_back = sha256_of(tmp)
    if read_back != sha256:
        raise UploadMismatch(f"{url_of(tmp)}: the stored sha256 {read_back} differs from {sha256}")


def remove(path: StorePath) -> None:
    """Delete a file or object; a missing one is no error."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
