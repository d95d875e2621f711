"""The body of a chunked HTTP/1.1 response, read from its socket in large blocks.

The Docker engine sends an archive (``/outputs``) as a chunked response of 32 KiB chunks.
Read through requests, urllib3 and ``http.client``, every chunk costs two socket reads and
about thirty Python calls: for 1 GiB, most of the CPU time of reading the archive. Here one
socket read takes whatever the socket holds (up to ``block_size``), and the chunk framing is
parsed in place: one copy of each byte of data, one call per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

BLOCK_SIZE = 1 << 20
MAX_LINE = 4096  # a chunk-size line (hex size, optional extensions)
HEX_DIGITS = b"0123456789abcdefABCDEF"


class ChunkedBodyError(Exception):
    """The body broke the chunked framing, or ended before its last chunk."""


def chunked_body(
    read_into: Callable[[memoryview], int | None],
    buffered: bytes = b"",
    *,
    block_size: int = BLOCK_SIZE,
) -> Iterator[bytes]:
    """The data of a chunked body, piece by piece (no piece is empty).

    ``read_into`` is the connection's ``readinto`` (one read, returning how many bytes
    arrived, 0 at the end); ``buffered`` holds what was already read past the headers.
    Ends at the last (zero-size) chunk without reading its trailers: the caller closes the
    connection. A body that ends before it, or breaks the framing, raises ChunkedBodyError.
    """
    buf = bytearray(max(block_size, len(buffered)))
    view = memoryview(buf)
    left = 0  # data of the current chunk still to come
    line = bytearray()  # a chunk-size line split between two reads
    after_data = False  # a chunk's data ends with CRLF before the next size line
    end = len(buffered)
    view[:end] = buffered
    while True:
        pos = 0
        while pos < end:
            if left:
                take = min(left, end - pos)
                yield bytes(view[pos : pos + take])
                pos += take
                left -= take
                after_data = not left
                continue
            newline = buf.find(b"\n", pos, end)
            stop = end if newline < 0 else newline + 1
            line += view[pos:stop]
            pos = stop
            if len(line) > MAX_LINE:
                raise ChunkedBodyError(f"a chunk-size line longer than {MAX_LINE} bytes")
            if newline < 0:
                continue
            text = bytes(line).strip()
            line.clear()
            if after_data:
                if text:
                    raise ChunkedBodyError("a chunk's data is not followed by its line end")
                after_data = False
                continue
            left = _chunk_size(text)
            if not left:
                return
        end = read_into(view) or 0
        if not end:
            raise ChunkedBodyError("the connection closed before the body's last chunk")


def _chunk_size(text: bytes) -> int:
    digits = text.split(b";", 1)[0].strip()
    if not digits or digits.strip(HEX_DIGITS) or len(digits) > 16:
        raise ChunkedBodyError(f"a chunk size that is not a hexadecimal number: {text[:40]!r}")
    return int(digits, 16)
