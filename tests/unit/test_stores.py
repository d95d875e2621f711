"""Safe, streamed extraction of /outputs and artifact lookup in the stores."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_butido.stores import (
    Artifact,
    OutputsError,
    _ChunkReader,
    artifact_rel_path,
    extract_outputs,
    find_artifact,
    release_store_of,
    staging_dir,
)


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def entry(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_regular_files_are_extracted_without_the_outputs_component(tmp_path: Path) -> None:
    data = tar_bytes(
        entry("outputs", tarfile.DIRTYPE),
        reg("outputs/a-1.pkg", b"1\n"),
        entry("outputs/sub", tarfile.DIRTYPE),
        reg("outputs/sub/b.rpm", b"rpm"),
    )
    dest = tmp_path / "store"
    artifacts = extract_outputs(chunks(data), dest)
    assert artifacts == [
        Artifact("a-1.pkg", hashlib.sha256(b"1\n").hexdigest(), 2),
        Artifact("sub/b.rpm", hashlib.sha256(b"rpm").hexdigest(), 3),
    ]
    assert (dest / "a-1.pkg").read_bytes() == b"1\n"
    assert files_under(dest) == ["a-1.pkg", "sub/b.rpm"]


@pytest.mark.parametrize(
    ("name", "rel"),
    [
        ("outputs/x/y.rpm", "x/y.rpm"),
        ("outputs/x/outputs/y", "x/y"),  # every `outputs` component goes (butido's rule)
        ("./outputs/./a", "a"),
        ("plain", "plain"),
    ],
)
def test_artifact_rel_path_drops_outputs_components(name: str, rel: str) -> None:
    assert artifact_rel_path(name) == rel


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (reg("outputs/../../evil", b"x"), "'..' in path"),
        (reg("/etc/evil", b"x"), "absolute path"),
        (entry("outputs/passwd", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link to '/etc/passwd'"),
        (entry("outputs/hard", tarfile.LNKTYPE, "outputs/a"), "hard link"),
        (entry("outputs/dev", tarfile.CHRTYPE), "device file"),
        (entry("outputs/blk", tarfile.BLKTYPE), "device file"),
        (entry("outputs/fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
)
def test_hostile_entries_fail_and_leave_nothing_behind(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    data = tar_bytes(reg("outputs/good", b"ok"), member, reg("outputs/later", b"x"))
    dest = tmp_path / "a" / "b" / "store"
    with pytest.raises(OutputsError, match=message):
        extract_outputs(chunks(data), dest)
    assert files_under(tmp_path) == []
    assert not (tmp_path / "a" / "evil").exists()


def test_entry_named_only_outputs_as_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputsError, match="no file name"):
        extract_outputs(chunks(tar_bytes(reg("outputs", b"x"))), tmp_path)


def test_existing_file_is_replaced_atomically_and_no_temp_files_remain(tmp_path: Path) -> None:
    (tmp_path / "a.pkg").write_bytes(b"old")
    extract_outputs(chunks(tar_bytes(reg("outputs/a.pkg", b"new"))), tmp_path)
    assert (tmp_path / "a.pkg").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.pkg"]


def test_symlink_already_in_the_store_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.pkg").symlink_to(outside)
    with pytest.raises(OutputsError, match="not a regular file"):
        extract_outputs(chunks(tar_bytes(reg("outputs/a.pkg", b"new"))), store)
    assert outside.read_bytes() == b"keep"


def test_truncated_stream_is_an_outputs_error(tmp_path: Path) -> None:
    data = tar_bytes(reg("outputs/big", b"x" * 10_000))
    with pytest.raises(OutputsError, match="reading /outputs failed"):
        extract_outputs(chunks(data[:3000]), tmp_path)
    assert files_under(tmp_path) == []


def test_empty_outputs_directory_gives_no_artifacts(tmp_path: Path) -> None:
    assert extract_outputs(chunks(tar_bytes(entry("outputs", tarfile.DIRTYPE))), tmp_path) == []


def test_staging_dir_is_per_submit(tmp_path: Path) -> None:
    assert staging_dir(tmp_path, "1234") == tmp_path / "1234"


def test_find_artifact_prefers_staging_then_release_and_checks_hash(tmp_path: Path) -> None:
    staging, release = tmp_path / "staging", tmp_path / "release"
    (release / "x").mkdir(parents=True)
    (release / "x" / "a.pkg").write_bytes(b"released")
    assert find_artifact("x/a.pkg", None, [staging], [release]) == release / "x" / "a.pkg"
    (staging / "x").mkdir(parents=True)
    (staging / "x" / "a.pkg").write_bytes(b"staged")
    assert find_artifact("x/a.pkg", None, [staging], [release]) == staging / "x" / "a.pkg"
    sha = hashlib.sha256(b"released").hexdigest()
    assert find_artifact("x/a.pkg", sha, [staging], [release]) == release / "x" / "a.pkg"
    assert find_artifact("x/a.pkg", "0" * 64, [staging], [release]) is None


def test_the_release_store_a_file_was_found_in_is_named(tmp_path: Path) -> None:
    staging, stable, beta = tmp_path / "staging", tmp_path / "stable", tmp_path / "beta"
    for d in (staging, stable, beta):
        (d / "x").mkdir(parents=True)
    (beta / "x" / "a.pkg").write_bytes(b"released")
    found = find_artifact("x/./a.pkg", None, [staging], [stable, beta])
    assert found is not None and release_store_of(found, "x/./a.pkg", [stable, beta]) == "beta"
    (staging / "x" / "a.pkg").write_bytes(b"staged")
    found = find_artifact("x/a.pkg", None, [staging], [stable, beta])
    assert found is not None and release_store_of(found, "x/a.pkg", [stable, beta]) is None


@pytest.mark.parametrize("rel", ["../staging/x", "/etc/passwd", ""])
def test_find_artifact_never_leaves_the_stores(tmp_path: Path, rel: str) -> None:
    assert find_artifact(rel, None, [tmp_path / "s"], []) is None


def test_extraction_memory_does_not_grow_with_the_archive(tmp_path: Path) -> None:
    import tracemalloc

    size = 128 * 1024 * 1024
    block = bytes(range(256)) * 256  # 64 KiB

    def stream() -> Iterator[bytes]:
        header = tarfile.TarInfo("outputs/big.bin")
        header.size = size
        yield header.tobuf(format=tarfile.GNU_FORMAT)
        for _ in range(size // len(block)):
            yield block
        yield b"\0" * 1024  # end-of-archive marker

    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    tracemalloc.start()
    try:
        [artifact] = extract_outputs(stream(), tmp_path / "store")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (artifact.path, artifact.size) == ("big.bin", size)
    assert artifact.sha256 == expected.hexdigest()
    assert peak < 8 * 1024 * 1024  # a fixed few MiB of buffers; 128 MiB went through


def test_a_file_appears_under_its_name_only_when_complete(tmp_path: Path) -> None:
    data = tar_bytes(reg("outputs/big.pkg", b"y" * 200_000), reg("outputs/next", b"n"))
    dest = tmp_path / "store"
    seen_midway: list[tuple[bool, list[str]]] = []

    def stream() -> Iterator[bytes]:
        for i, chunk in enumerate(chunks(data, 8192)):
            if i == 12:  # about half of big.pkg has been read
                names = sorted(p.name for p in dest.iterdir()) if dest.exists() else []
                seen_midway.append(((dest / "big.pkg").exists(), names))
            yield chunk

    extract_outputs(stream(), dest)
    [(final_name_existed, names)] = seen_midway
    assert not final_name_existed
    assert len(names) == 1 and names[0] != "big.pkg"  # written under a temporary name
    assert sorted(p.name for p in dest.iterdir()) == ["big.pkg", "next"]
    assert (dest / "big.pkg").read_bytes() == b"y" * 200_000


def test_the_chunk_reader_hands_whole_chunks_over_and_splits_the_rest():
    first, second = b"a" * 10, b"b" * 4
    reader = _ChunkReader(iter([first, b"", second]))
    assert reader.read(1 << 20) is first  # no copy, no buffer of the size asked for
    assert reader.read(3) == b"bbb"
    assert reader.read(-1) == b"b"
    assert reader.read(5) == b""


def test_extraction_from_small_uneven_chunks_keeps_every_byte(tmp_path: Path):
    data = bytes(range(256)) * 4099
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("outputs/x.pkg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    chunks = [raw[i : i + 7777] for i in range(0, len(raw), 7777)]
    (artifact,) = extract_outputs(iter(chunks), tmp_path / "s")
    assert (tmp_path / "s" / "x.pkg").read_bytes() == data
    assert artifact.size == len(data)


def test_member_data_goes_through_in_small_pieces_whatever_the_chunks(tmp_path: Path) -> None:
    """The engine sends chunks of about 16 KiB: data read a megabyte at a time meant a new
    megabyte-sized buffer per piece (mapped and faulted in anew by malloc each time), which
    doubled the CPU time of an extraction; pieces stay a small fixed size."""
    import tracemalloc

    from airflow_butido.stores import PIECE_SIZE

    data = bytes(range(256)) * (16 * 1024)  # 4 MiB
    archive = tar_bytes(reg("outputs/f.bin", data))
    tracemalloc.start()
    try:
        [artifact] = extract_outputs(chunks(archive, 16 * 1024), tmp_path / "store")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert PIECE_SIZE <= 64 * 1024
    assert peak < 512 * 1024  # a megabyte per read peaked above 1 MiB


def test_member_data_hands_the_engines_chunks_over_without_joining_them(tmp_path: Path) -> None:
    """tarfile's stream joins chunks into pieces of the size asked for and slices off the
    rest (two copies of every byte); member data is read from the chunks directly, so
    every piece written is one the chunk iterator produced (or the buffered remainder of
    the chunk that held the header), and the members after it still parse."""
    from airflow_butido import stores

    first = bytes(range(256)) * 300  # 76,800 bytes: not a multiple of 512
    second = b"z" * 70_001
    archive = tar_bytes(reg("outputs/a.bin", first), reg("outputs/b.bin", second))
    sent = list(chunks(archive, 16 * 1024 + 3))
    pieces: list[int] = []
    real_write = stores._write_file

    def counting_write(root, rel, source, owners):  # type: ignore[no-untyped-def]
        assert source._direct  # tarfile's uncompressed stream is read directly
        read = source.read

        def read_and_count(size: int = -1) -> bytes:
            piece = read(size)
            pieces.append(len(piece))
            return piece

        source.read = read_and_count
        return real_write(root, rel, source, owners)

    stores._write_file = counting_write  # type: ignore[assignment]
    try:
        a, b = extract_outputs(iter(sent), tmp_path / "s")
    finally:
        stores._write_file = real_write  # type: ignore[assignment]
    assert (a.path, a.size, a.sha256) == ("a.bin", len(first), hashlib.sha256(first).hexdigest())
    assert (b.path, b.size, b.sha256) == ("b.bin", len(second), hashlib.sha256(second).hexdigest())
    assert (tmp_path / "s" / "b.bin").read_bytes() == second
    assert max(pieces) <= 16 * 1024 + 3  # never more than one chunk: nothing joined
