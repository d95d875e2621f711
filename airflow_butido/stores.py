"""Artifact stores: the per-submit staging store, release stores, and safe extraction of a
container's ``/outputs`` tar stream into the staging store.

The tar stream is read in one pass (``tarfile`` stream mode over a chunk iterator), so a
gigabyte of outputs never sits in memory. Only regular files become artifacts; links,
devices, absolute paths and ``..`` are refused, and a refusal fails the job. Every file is
written under a temporary name, hashed while written, then renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from airflow_butido.errors import BuildError, ConfigError, InfrastructureError
from airflow_butido.recipes.paths import confine

if TYPE_CHECKING:
    from airflow_butido.manifest import ArtifactRef
    from airflow_butido.recipes.config import Config

CHUNK_SIZE = 1 << 20
OUTPUTS_DIR = "outputs"


class OutputsError(BuildError):
    """``/outputs`` contains an entry that must not be extracted."""


@dataclass(frozen=True)
class Artifact:
    path: str  # POSIX path relative to the store root
    sha256: str
    size: int

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


def staging_dir(staging_root: Path, submit_uuid: str) -> Path:
    """``<staging>/<submit uuid>``: one staging store per submit, never outside ``staging``."""
    confine(staging_root, str(submit_uuid), what=f"staging directory of submit {submit_uuid}")
    return Path(staging_root) / str(submit_uuid)


def release_dir(releases_root: Path, store: str) -> Path:
    """``<releases_root>/<store>``: one directory below the root (it may be a link to
    another disk, the store name may not climb out)."""
    if store in ("", ".", "..") or "/" in store or "\0" in store:
        raise ConfigError(f"release store {store!r} must be a directory name below {releases_root}")
    return Path(releases_root) / store


def release_dirs(releases_root: Path, stores: Iterable[str]) -> list[Path]:
    return [release_dir(releases_root, store) for store in stores]


def release_store_holding(
    staging_root: Path, release_store_dirs: Sequence[Path], submit_uuid: str, path: str
) -> str | None:
    """The release store (by name) holding ``path`` when its staged copy in the staging
    directory of ``submit_uuid`` is gone; None while the staged copy is there."""
    if (staging_dir(staging_root, submit_uuid) / path).is_file():
        return None
    return next((Path(d).name for d in release_store_dirs if (Path(d) / path).is_file()), None)


def artifact_file(config: Config, ref: ArtifactRef) -> Path:
    """Where a manifest's artifact lies: its release store, or the staging directory of the
    submit that built it."""
    if ref.store:
        return release_dir(config.releases_root, ref.store) / ref.path
    return staging_dir(config.staging, ref.submit_uuid or "") / ref.path


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, holding at most one chunk."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._current:
            try:
                self._current = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


def artifact_rel_path(member_name: str) -> str:
    """The store-relative path of a tar member, or raise OutputsError.

    Every path component equal to ``outputs`` is dropped (butido's rule, reference 4.1),
    so ``outputs/x/y.rpm`` becomes ``x/y.rpm``.
    """
    if member_name.startswith("/"):
        raise OutputsError(f"/outputs entry {member_name!r} refused: absolute path")
    parts = PurePosixPath(member_name).parts
    if ".." in parts:
        raise OutputsError(f"/outputs entry {member_name!r} refused: '..' in path")
    kept = [p for p in parts if p not in (".", "", OUTPUTS_DIR)]
    return "/".join(kept)


def _member_kind(member: tarfile.TarInfo) -> str | None:
    """Why a member is refused, or None when it is a regular file or a directory."""
    if member.isreg() or member.isdir():
        return None
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
    return f"unsupported tar entry type {member.type!r}"


def extract_outputs(tar_chunks: Iterable[bytes], dest: Path) -> list[Artifact]:
    """Extract the regular files of a ``/outputs`` tar stream into ``dest``.

    Returns one Artifact per file (sorted by path). On a refused entry nothing written by
    this call is kept and OutputsError is raised.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: dict[str, Artifact] = {}
    try:
        with tarfile.open(fileobj=_ChunkReader(tar_chunks), mode="r|", bufsize=CHUNK_SIZE) as tar:
            for member in tar:
                reason = _member_kind(member)
                rel = artifact_rel_path(member.name)
                if reason:
                    raise OutputsError(f"/outputs entry {member.name!r} refused: {reason}")
                if member.isdir():
                    continue
                if not rel:
                    raise OutputsError(f"/outputs entry {member.name!r} refused: no file name")
                source = tar.extractfile(member)
                assert source is not None  # regular files always have data
                written[rel] = _write_file(root, rel, source)
    except tarfile.TarError as exc:
        _remove(root, written)
        raise OutputsError(f"reading /outputs failed: {exc}") from exc
    except OSError as exc:
        _remove(root, written)
        raise InfrastructureError(f"writing artifacts into {dest} failed: {exc}") from exc
    except BaseException:
        _remove(root, written)
        raise
    return sorted(written.values(), key=lambda a: a.path)


def _write_file(root: Path, rel: str, source: IO[bytes]) -> Artifact:
    target = root / rel
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    # The store holds no links we did not make, but check anyway: never leave ``root``.
    if not parent.resolve().is_relative_to(root):
        raise OutputsError(f"/outputs entry {rel!r} refused: leaves the store")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise OutputsError(f"/outputs entry {rel!r} refused: {target} is not a regular file")
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Artifact(rel, digest.hexdigest(), size)


def _remove(root: Path, written: dict[str, Artifact]) -> None:
    for rel in written:
        (root / rel).unlink(missing_ok=True)


def _safe_rel(rel_path: str) -> PurePosixPath | None:
    path = PurePosixPath(rel_path)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def hash_artifact(path: Path) -> str:
    """The sha256 (hex) of a file, read in chunks: artifacts can be large."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def find_artifact(
    rel_path: str,
    sha256: str | None,
    staging_dirs: Sequence[Path],
    release_dirs: Sequence[Path],
) -> Path | None:
    """The first regular file ``rel_path`` in the staging stores, then the release stores.

    With ``sha256`` given, a file with other contents does not count (it was rebuilt or
    replaced since the manifest was written).
    """
    rel = _safe_rel(rel_path)
    if rel is None:
        return None
    for store in [*staging_dirs, *release_dirs]:
        candidate = Path(store) / rel
        if (
            candidate.is_file()
            and not candidate.is_symlink()
            and (sha256 is None or hash_artifact(candidate) == sha256)
        ):
            return candidate
    return None
