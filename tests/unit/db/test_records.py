"""Log chunking: any log source, NUL bytes removed, invalid UTF-8 replaced."""

from __future__ import annotations

import io

import pytest

from airflow_butido.db.records import iter_log_chunks


@pytest.mark.parametrize(
    "source",
    [
        "a\x00b\nc€\n",
        b"a\x00b\nc\xe2\x82\xac\n",
        io.StringIO("a\x00b\nc€\n"),
        io.BytesIO(b"a\x00b\nc\xe2\x82\xac\n"),
    ],
    ids=["str", "bytes", "text file", "binary file"],
)
def test_every_log_source_gives_the_same_text(source: object) -> None:
    assert "".join(iter_log_chunks(source, chunk_chars=3)) == "ab\nc€\n"


def test_a_multibyte_character_split_across_chunks_survives() -> None:
    data = "é" * 10
    chunks = list(iter_log_chunks(io.BytesIO(data.encode()), chunk_chars=3))
    assert "".join(chunks) == data and len(chunks) > 3


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert "".join(iter_log_chunks(b"ok \xff\xfe end")) == "ok \ufffd\ufffd end"


def test_a_path_is_read_in_chunks(tmp_path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"x" * 10 + b"\x00")
    assert list(iter_log_chunks(path, chunk_chars=4)) == ["xxxx", "xxxx", "xx"]


def test_no_log_gives_nothing() -> None:
    assert list(iter_log_chunks(None)) == []
    assert list(iter_log_chunks("")) == []
