"""Errors in a package repository, as data: file, key, line and message.

Loading collects every error of every file and raises them together, so one run of
``butido lint`` shows the whole list instead of the first problem only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from airflow_butido.errors import ButidoError


@dataclass(frozen=True)
class RecipeError:
    """One problem: ``file`` is repo-relative, ``key`` a dotted path (``sources.src.url``)."""

    file: str
    key: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


class RecipeErrors(ButidoError):
    """All problems found while loading a repository; ``str()`` gives one per line."""

    def __init__(self, errors: Iterable[RecipeError]) -> None:
        unique: dict[RecipeError, None] = dict.fromkeys(errors)
        self.errors: tuple[RecipeError, ...] = tuple(unique)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __reduce__(self):  # keep picklable despite the custom __init__
        return (type(self), (self.errors,))


class InvalidValue(ValueError):
    """A value is malformed; ``key`` is the dotted path below the value being parsed."""

    def __init__(self, message: str, key: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.line = line


class UnknownKey(InvalidValue):
    """A key the format does not know: an error, or a warning with ``strict_keys = false``."""


STRICT_KEYS_HINT = "set strict_keys = false to accept unknown keys with a warning"


def type_name(value: Any) -> str:
    """How an error message names the TOML type of a value."""
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
