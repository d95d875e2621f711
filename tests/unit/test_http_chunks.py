"""Reading a chunked HTTP body in large blocks: framing, cut-off bodies, bad sizes."""

from __future__ import annotations

import random

import pytest

from airflow_butido.http_chunks import ChunkedBodyError, chunked_body


def encode(pieces: list[bytes], *, extension: bytes = b"", trailer: bytes = b"") -> bytes:
    framed = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in pieces)
    return framed + b"0\r\n" + trailer + b"\r\n"


class Socket:
    """``readinto`` over fixed bytes, at most ``step`` bytes per call; counts the calls."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.pos = 0
        self.step = step
        self.reads = 0

    def readinto(self, view: memoryview) -> int:
        self.reads += 1
        n = min(len(view), self.step, len(self.data) - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def read_all(data: bytes, step: int, *, buffered: int = 0, block_size: int = 1 << 20) -> bytes:
    socket = Socket(data[buffered:], step)
    pieces = list(chunked_body(socket.readinto, data[:buffered], block_size=block_size))
    assert all(pieces), "no piece is empty"
    return b"".join(pieces)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 4096, 1 << 20])
@pytest.mark.parametrize("buffered", [0, 1, 5, 100])
def test_the_pieces_are_the_body_however_the_reads_split_it(step: int, buffered: int) -> None:
    rng = random.Random(step * 1000 + buffered)
    body = [rng.randbytes(rng.choice([1, 2, 15, 16, 17, 300, 5000])) for _ in range(40)]
    wire = encode(body)
    assert read_all(wire, step, buffered=buffered, block_size=64) == b"".join(body)
    assert read_all(wire, step, buffered=buffered) == b"".join(body)


def test_extensions_upper_case_sizes_and_line_ends_are_accepted() -> None:
    wire = b"A;name=value\r\n0123456789\r\n3 \n" + b"abc\n" + b"0\r\n\r\n"
    assert read_all(wire, 5) == b"0123456789abc"
    assert read_all(encode([b"xyz"], extension=b";a=b"), 2) == b"xyz"


def test_reading_stops_at_the_last_chunk_without_its_trailers() -> None:
    wire = encode([b"hello"], trailer=b"X-Trailer: 1\r\n")
    # the socket ends right after the zero chunk's line: one more read would find the end
    # of the connection and raise
    socket = Socket(wire[: wire.index(b"0\r\n") + 3], 4)
    assert b"".join(chunked_body(socket.readinto)) == b"hello"
    assert socket.pos == len(socket.data)


def test_an_empty_body_is_its_last_chunk_alone() -> None:
    assert read_all(b"0\r\n\r\n", 1) == b""


@pytest.mark.parametrize("cut", [0, 1, 4, 9, 12, 20])
def test_a_body_cut_off_before_its_last_chunk_is_an_error(cut: int) -> None:
    wire = encode([b"0123456789", b"abcdef"])
    with pytest.raises(ChunkedBodyError, match="closed before the body's last chunk"):
        read_all(wire[:cut], 3)


@pytest.mark.parametrize(
    "size_line", [b"zz", b"0x10", b"-1", b"+1", b"1_0", b"", b";ext", b"1 2", b"1" * 17]
)
def test_a_size_that_is_not_hexadecimal_is_an_error(size_line: bytes) -> None:
    with pytest.raises(ChunkedBodyError, match="not a hexadecimal number"):
        read_all(size_line + b"\r\nabc\r\n0\r\n\r\n", 4)


def test_data_not_followed_by_its_line_end_is_an_error() -> None:
    with pytest.raises(ChunkedBodyError, match="not followed by its line end"):
        read_all(b"3\r\nabcd\r\n0\r\n\r\n", 100)


def test_an_endless_size_line_is_an_error_not_unbounded_memory() -> None:
    with pytest.raises(ChunkedBodyError, match="longer than 4096 bytes"):
        read_all(b"1" + b" " * 10_000, 512)
