"""Artifact stores: the per-submit staging store, release stores, and safe extraction of a
container's ``/outputs`` tar stream into the staging store.

The tar stream is read in one pass (``tarfile`` stream mode over a chunk iterator), so a
gigabyte of outputs never sits in memory. Only regular files become artifacts; links,
devices, absolute paths and ``..`` are refused, and a refusal fails the job. Every file is
written under a temporary name, hashed while written, then renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import socket
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from airflow_butido.errors import BuildError, ConfigError, InfrastructureError
from airflow_butido.object_store import (
    StoreError,
    StorePath,
    describe,
    is_local,
    put_verified,
    remove,
    sha256_of,
    store_root,
    temporary_key,
    url_of,
)
from airflow_butido.recipes.paths import confine

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_butido.manifest import ArtifactRef
    from airflow_butido.recipes.config import Config

CHUNK_SIZE = 1 << 20
# Member data is read, hashed and written this much at a time. A megabyte per read is a new
# buffer above malloc's mmap threshold each time: mapped, faulted in page by page, unmapped;
# that doubled the CPU time of an extraction (3.5-4 s per GiB against 1.8-1.9 s).
PIECE_SIZE = 64 << 10
OUTPUTS_DIR = "outputs"
OWNERS_DIR = ".butido-owners"  # beside the stores: which package wrote which file
PART_SUFFIX = ".part"
STALE_PART_SECONDS = 3600.0  # a temporary file of another host not written for this long
NUL_BLOCK = bytes(tarfile.BLOCKSIZE)


class OutputsError(BuildError):
    """``/outputs`` contains an entry that must not be extracted."""


@dataclass(frozen=True)
class Artifact:
    path: str  # POSIX path relative to the store root
    sha256: str
    size: int

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


def staging_dir(staging_root: StorePath, submit_uuid: str) -> StorePath:
    """``<staging>/<submit uuid>``: one staging store per submit, never outside ``staging``."""
    what = f"staging directory of submit {submit_uuid}"
    if is_local(staging_root):
        confine(staging_root, str(submit_uuid), what=what)
        return Path(staging_root) / str(submit_uuid)
    if str(submit_uuid) in ("", ".", "..") or "/" in str(submit_uuid):
        raise ConfigError(f"{what}: must be one name below {url_of(staging_root)}")
    return staging_root / str(submit_uuid)


def release_dir(releases_root: StorePath, store: str) -> StorePath:
    """``<releases_root>/<store>``: one directory below the root (it may be a link to
    another disk, the store name may not climb out)."""
    if store in ("", ".", "..") or "/" in store or "\0" in store:
        raise ConfigError(
            f"release store {store!r} must be a directory name below {url_of(releases_root)}"
        )
    return releases_root / store


def release_dirs(releases_root: StorePath, stores: Iterable[str]) -> list[StorePath]:
    return [release_dir(releases_root, store) for store in stores]


def release_store_holding(
    staging_root: StorePath, release_store_dirs: Sequence[StorePath], submit_uuid: str, path: str
) -> str | None:
    """The release store (by name) holding ``path`` when its staged copy in the staging
    directory of ``submit_uuid`` is gone; None while the staged copy is there."""
    if (staging_dir(staging_root, submit_uuid) / path).is_file():
        return None
    return next((d.name for d in release_store_dirs if (d / path).is_file()), None)


def artifact_file(config: Config, ref: ArtifactRef) -> StorePath:
    """Where a manifest's artifact lies: its release store, or the staging directory of the
    submit that built it."""
    if ref.store:
        return release_dir(store_root(config, "releases_root"), ref.store) / ref.path
    return staging_dir(store_root(config, "staging"), ref.submit_uuid or "") / ref.path


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, holding at most one chunk."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._fill():
            return 0
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the current chunk, as they are: no buffer of ``size``
        bytes is allocated and zeroed per call, as RawIOBase.read would (tarfile asks
        for a megabyte at a time and the engine sends tens of kilobytes)."""
        if not self._fill():
            return b""
        n = len(self._current) if size is None or size < 0 else min(size, len(self._current))
        piece, self._current = self._current[:n], self._current[n:]
        whole = piece.obj
        if isinstance(whole, bytes) and len(whole) == n:
            return whole  # a whole chunk: no copy
        return piece.tobytes()

    def _fill(self) -> bool:
        while not self._current:
            try:
                self._current = memoryview(next(self._chunks))
            except StopIteration:
                return False
        return True


class _MemberData(io.RawIOBase):
    """The data of the current member of a stream-mode archive, read straight from the
    archive's stream: ``extractfile`` would add a buffered layer and one more copy of
    every byte.

    Reads return the engine's chunks as they arrive (a piece may be shorter than asked
    for). ``tarfile``'s own stream would join them into pieces of the size asked for and
    slice off the rest, two more copies of every byte: a fifth of an extraction's CPU
    time. When the archive's stream is ``tarfile``'s uncompressed one, its buffer is
    drained first and then its source read directly, the stream's position kept right;
    any other stream is read through its ``read``."""

    def __init__(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        assert tar.fileobj is not None
        self._stream = tar.fileobj
        self._left = member.size
        stream = self._stream
        self._direct = (
            type(stream) is getattr(tarfile, "_Stream", None)
            and getattr(stream, "comptype", None) == "tar"
            and isinstance(getattr(stream, "buf", None), bytes)
            and isinstance(getattr(stream, "pos", None), int)
            and hasattr(getattr(stream, "fileobj", None), "read")
        )

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        if not wanted:
            return b""
        data = self._read_direct(wanted) if self._direct else self._stream.read(wanted)
        if not data or (not self._direct and len(data) != wanted):
            raise tarfile.ReadError("unexpected end of data")
        self._left -= len(data)
        return data

    def _read_direct(self, wanted: int) -> bytes:
        stream: Any = self._stream
        if stream.buf:
            data = stream.buf[:wanted]
            stream.buf = stream.buf[len(data) :]
        else:
            data = stream.fileobj.read(wanted)
        stream.pos += len(data)
        return bytes(data)


def artifact_rel_path(member_name: str) -> str:
    """The store-relative path of a tar member, or raise OutputsError.

    Every path component equal to ``outputs`` is dropped (butido's rule, reference 4.1),
    so ``outputs/x/y.rpm`` becomes ``x/y.rpm``. Two members that end up with the same
    path are refused by ``extract_outputs``.
    """
    if member_name.startswith("/"):
        raise OutputsError(f"/outputs entry {member_name!r} refused: absolute path")
    parts = PurePosixPath(member_name).parts
    if ".." in parts:
        raise OutputsError(f"/outputs entry {member_name!r} refused: '..' in path")
    try:
        member_name.encode("utf-8")
    except UnicodeEncodeError:
        raw = member_name.encode("utf-8", "surrogateescape")
        raise OutputsError(
            f"/outputs entry {raw!r} refused: its file name is not valid UTF-8: {raw!r}"
        ) from None
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


def extract_outputs(
    tar_chunks: Iterable[bytes], dest: StorePath, *, owner: str | None = None
) -> list[Artifact]:
    """Extract the regular files of a ``/outputs`` tar stream into ``dest``.

    Returns one Artifact per file (sorted by path). On a refused entry, a transport or a
    disk error, nothing written by this call is kept, and the stream is closed at once
    (when it has a ``close()``), so the sender stops instead of blocking on a full pipe.
    A refusal raises OutputsError (the build's fault), a disk error InfrastructureError.

    ``owner`` (e.g. ``"name version"``) names the package writing: a file another owner
    wrote into ``dest`` is never overwritten, the extraction is refused naming both.
    """
    written: dict[str, Artifact] = {}
    sources: dict[str, str] = {}  # artifact path -> member name, to name collisions
    sink: _LocalSink | _ObjectSink | None = None
    try:
        sink = _LocalSink(dest, owner) if is_local(dest) else _ObjectSink(dest, owner)
        with tarfile.open(fileobj=_ChunkReader(tar_chunks), mode="r|", bufsize=CHUNK_SIZE) as tar:
            while (member := _next_member(tar)) is not None:
                reason = _member_kind(member)
                rel = artifact_rel_path(member.name)
                if reason:
                    raise OutputsError(f"/outputs entry {member.name!r} refused: {reason}")
                if member.isdir():
                    continue
                if not rel:
                    raise OutputsError(f"/outputs entry {member.name!r} refused: no file name")
                if rel in sources:
                    raise OutputsError(
                        f"/outputs entry {member.name!r} refused: it would be stored as "
                        f"{rel!r} like {sources[rel]!r} (every 'outputs' directory name is "
                        "dropped from artifact paths)"
                    )
                sources[rel] = member.name
                source = _MemberData(tar, member)
                written[rel] = sink.write(rel, source)
            _require_end_marker(tar)
    except tarfile.TarError as exc:
        _abort(tar_chunks, sink, written)
        raise OutputsError(f"reading /outputs failed: {exc}") from exc
    except OSError as exc:
        _abort(tar_chunks, sink, written)
        if exc.errno == errno.ENAMETOOLONG:
            raise OutputsError(f"/outputs entry refused: file name too long: {exc}") from exc
        raise InfrastructureError(f"writing artifacts into {url_of(dest)} failed: {exc}") from exc
    except BaseException:
        _abort(tar_chunks, sink, written)
        raise
    _close(tar_chunks)
    sink.close()
    return sorted(written.values(), key=lambda a: a.path)


def _next_member(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    """The next member of a stream-mode archive, without keeping the earlier ones:
    ``TarFile`` lists every member it has read, 100,000 outputs would all stay in memory."""
    member = tar.next()
    tar.members.clear()  # type: ignore[attr-defined]
    return member


def _require_end_marker(tar: tarfile.TarFile) -> None:
    """Refuse an archive that stopped without its end marker (two zero blocks).

    ``tarfile`` ends iteration silently when the data simply stops at a member boundary,
    so a cut-off stream would look complete with its later files missing. It has read
    one zero block when it saw the marker; the second must follow."""
    stream = tar.fileobj
    assert stream is not None
    seen = stream.tell() - tar.offset
    rest = stream.read(tarfile.BLOCKSIZE) if seen == tarfile.BLOCKSIZE else b""
    if seen != tarfile.BLOCKSIZE or rest != NUL_BLOCK:
        raise OutputsError(
            "reading /outputs failed: the archive ended without its end-of-archive marker "
            "(the stream was cut off)"
        )


def _close(chunks: Iterable[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def _abort(
    chunks: Iterable[bytes], sink: _LocalSink | _ObjectSink | None, written: dict[str, Artifact]
) -> None:
    """Close the stream first (the sender may be blocked writing it), then remove."""
    try:
        _close(chunks)
    finally:
        if sink is not None:
            sink.abort(written)


class _LocalSink:
    """Artifacts into a local directory: temporary file, hard link or rename into place."""

    def __init__(self, dest: Path, owner: str | None) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.root = dest.resolve()
        self.owners = _Owners(self.root, owner) if owner is not None else None

    def write(self, rel: str, source: _MemberData) -> Artifact:
        return _write_file(self.root, rel, source, self.owners)

    def abort(self, written: dict[str, Artifact]) -> None:
        _remove(self.root, written)
        if self.owners is not None:
            self.owners.discard()

    def close(self) -> None:
        if self.owners is not None:
            self.owners.close()


class _ObjectSink:
    """Artifacts into object storage: each streamed to a temporary key at the top of the
    staging store (where remove_stale_parts looks), read back and checked, then copied
    into place (put_verified).

    Which package wrote a key is one small object per artifact path under
    ``<staging>/.butido-owners/<submit>/``: an artifact of another package is never
    overwritten, the extraction is refused naming both (as for a local store)."""

    def __init__(self, dest: ObjectStoragePath, owner: str | None) -> None:
        self.root = dest
        self.owner = owner
        self.owners_dir = dest.parent / OWNERS_DIR / dest.name
        self.markers: list[ObjectStoragePath] = []

    def write(self, rel: str, source: _MemberData) -> Artifact:
        target = self.root / rel
        marker = self.owners_dir / hashlib.sha256(rel.encode("utf-8")).hexdigest()[:40]

        def claim(_sha256: str, _size: int) -> None:
            if self.owner is None:
                return
            if target.exists():
                other = _marker_owner(marker)
                if other != self.owner:
                    raise _overwrite_refused(rel, self.owner, other)
                return  # our own earlier try of the same package
            marker.write_text(json.dumps(self.owner), encoding="utf-8")
            self.markers.append(marker)

        chunks = iter(lambda: source.read(CHUNK_SIZE), b"")
        try:
            sha256, size = put_verified(
                target, chunks, temporary_key(self.root.parent, part_prefix()), before_place=claim
            )
        except (OutputsError, OSError, tarfile.TarError):
            raise
        except StoreError as exc:
            raise InfrastructureError(f"writing {url_of(target)} failed: {exc}") from exc
        except Exception as exc:  # the object store's client errors
            raise InfrastructureError(f"writing {url_of(target)} failed: {describe(exc)}") from exc
        return Artifact(rel, sha256, size)

    def abort(self, written: dict[str, Artifact]) -> None:
        for path in [*(self.root / rel for rel in written), *self.markers]:
            with contextlib.suppress(Exception):
                remove(path)

    def close(self) -> None:
        pass


def _marker_owner(marker: ObjectStoragePath) -> str | None:
    try:
        return str(json.loads(marker.read_text(encoding="utf-8")))
    except (FileNotFoundError, ValueError):
        return None


class _Owners:
    """Which package wrote which file of a staging store.

    One small file per package in ``<staging>/.butido-owners/<submit>/``, beside the store
    so the store holds artifacts only: its first line names the package, each further
    line (JSON) a path it wrote, listed once the file is in place.
    """

    def __init__(self, root: Path, owner: str) -> None:
        self.dir = root.parent / OWNERS_DIR / root.name
        self.owner = owner
        name = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]
        self.file = self.dir / name
        self.created = False
        self._out: IO[str] | None = None

    def claim(self, rel: str) -> None:
        if self._out is None:
            if not self.file.exists():
                self.dir.mkdir(parents=True, exist_ok=True)
                self.file.write_text(json.dumps(self.owner) + "\n", encoding="utf-8")
                self.created = True
            self._out = open(self.file, "a", encoding="utf-8")  # noqa: SIM115 (see close)
        self._out.write(json.dumps(rel) + "\n")
        self._out.flush()  # a concurrent writer looks it up at once

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def discard(self) -> None:
        """Forget what this extraction claimed (it failed, its files are removed)."""
        self.close()
        if self.created:
            self.file.unlink(missing_ok=True)
            for directory in (self.dir, self.dir.parent):
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when empty

    def owner_of(self, rel: str) -> str | None:
        """The package that wrote ``rel`` (another than ours when several did)."""
        wanted = json.dumps(rel)
        found: str | None = None
        if not self.dir.is_dir():
            return None
        for path in sorted(self.dir.iterdir()):
            with open(path, encoding="utf-8") as fh:
                owner = json.loads(fh.readline() or "null")
                if any(line.rstrip("\n") == wanted for line in fh):
                    if owner != self.owner:
                        return str(owner)
                    found = owner
        return found


def _write_file(
    root: Path, rel: str, source: IO[bytes] | _MemberData, owners: _Owners | None
) -> Artifact:
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
    # Short temporary names in the store's top directory: any file name that fits the
    # file system also fits here, and a crashed writer's leftovers are found in one place.
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=part_prefix(), suffix=PART_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(PIECE_SIZE):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        os.chmod(tmp_name, 0o644)
        _place(tmp_name, target, rel, owners)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Artifact(rel, digest.hexdigest(), size)


def _place(tmp_name: str, target: Path, rel: str, owners: _Owners | None) -> None:
    """Rename the finished file into place; never over another package's file."""
    if owners is None:
        os.replace(tmp_name, target)
        return
    try:
        os.link(tmp_name, target)  # fails when the name exists: no overwrite race
    except FileExistsError:
        other = owners.owner_of(rel)
        for _ in range(20):  # the writer may be between its link and its claim
            if other is not None:
                break
            time.sleep(0.05)
            other = owners.owner_of(rel)
        if other != owners.owner:
            raise _overwrite_refused(rel, owners.owner, other) from None
        os.replace(tmp_name, target)  # our own earlier try of the same package
    else:
        os.unlink(tmp_name)
        owners.claim(rel)


def _overwrite_refused(rel: str, owner: str, other: str | None) -> OutputsError:
    writer = other if other is not None else "an unknown job"
    return OutputsError(
        f"/outputs entry {rel!r} of {owner} refused: the staging store "
        f"already holds {rel!r}, already written by {writer} in this submit; "
        "artifacts of one submit never overwrite each other"
    )


def _remove(root: Path, written: dict[str, Artifact]) -> None:
    for rel in written:
        (root / rel).unlink(missing_ok=True)


def discard_artifacts(dest: StorePath, artifacts: Iterable[Artifact]) -> None:
    """Remove extracted files whose job could not be recorded: unrecorded files in a
    staging store would be orphans nothing refers to."""
    for artifact in artifacts:
        with contextlib.suppress(Exception):
            remove(dest / artifact.path)


# -- temporary files of dead writers ----------------------------------------------------------

_PART_RE = re.compile(r"^\.butido-(\d+)@([A-Za-z0-9_-]*)\.[^.]*\.part$")
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40]


def part_prefix() -> str:
    """``.butido-<pid>@<host>.``: a temporary file names the process writing it."""
    return f".butido-{os.getpid()}@{_HOST}."


def remove_stale_parts(
    root: StorePath, *, max_age_seconds: float = STALE_PART_SECONDS
) -> list[StorePath]:
    """Delete the temporary files of dead writers in ``root`` and its subdirectories
    one level down (the staging stores of the submits, the source cache's package dirs).

    A file of a process on this host that no longer exists is dead at once; one of
    another host is dead when it has not grown for ``max_age_seconds``."""
    if not is_local(root):
        return _remove_stale_keys(root, max_age_seconds)
    removed: list[StorePath] = []
    try:
        dirs = [root, *(d for d in Path(root).iterdir() if d.is_dir() and not d.is_symlink())]
    except OSError:
        return removed
    now = time.time()
    for directory in dirs:
        try:
            names = [e for e in os.scandir(directory) if e.name.endswith(PART_SUFFIX)]
        except OSError:
            continue
        for entry in names:
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
                if _stale(entry.name, mtime, now, max_age_seconds):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                continue
    return removed


def _stale(name: str, mtime: float, now: float, max_age_seconds: float) -> bool:
    match = _PART_RE.match(name)
    if match is None:
        return False
    if match.group(2) == _HOST:
        return not _pid_alive(int(match.group(1)))
    return now - mtime > max_age_seconds


def _remove_stale_keys(root: ObjectStoragePath, max_age_seconds: float) -> list[StorePath]:
    """The temporary keys of dead writers at the top of an object store (where
    put_verified puts them)."""
    removed: list[StorePath] = []
    now = time.time()
    try:
        entries = [e for e in root.iterdir() if e.name.endswith(PART_SUFFIX)]
    except Exception:  # housekeeping: the job itself goes on
        return removed
    for entry in entries:
        with contextlib.suppress(Exception):
            if _stale(entry.name, entry.stat().st_mtime, now, max_age_seconds):
                remove(entry)
                removed.append(entry)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe_rel(rel_path: str) -> PurePosixPath | None:
    path = PurePosixPath(rel_path)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def hash_artifact(path: StorePath) -> str:
    """The sha256 (hex) of a file, read in chunks: artifacts can be large."""
    return sha256_of(path)


def release_store_of(
    found: StorePath, rel_path: str, release_dirs: Sequence[StorePath]
) -> str | None:
    """The name of the release store among ``release_dirs`` in which ``find_artifact``
    found ``rel_path`` as ``found``; None when it was found elsewhere (a staging store)."""
    rel = _safe_rel(rel_path)
    if rel is None:
        return None
    return next((d.name for d in release_dirs if str(d / str(rel)) == str(found)), None)


def find_artifact(
    rel_path: str,
    sha256: str | None,
    staging_dirs: Sequence[StorePath],
    release_dirs: Sequence[StorePath],
) -> StorePath | None:
    """The first regular file ``rel_path`` in the staging stores, then the release stores.

    With ``sha256`` given, a file with other contents does not count (it was rebuilt or
    replaced since the manifest was written).
    """
    rel = _safe_rel(rel_path)
    if rel is None:
        return None
    for store in [*staging_dirs, *release_dirs]:
        candidate = store / str(rel)
        if (
            candidate.is_file()
            and not candidate.is_symlink()
            and (sha256 is None or hash_artifact(candidate) == sha256)
        ):
            return candidate
    return None
