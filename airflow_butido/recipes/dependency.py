"""Dependencies of a package: ``"NAME =VERSION"`` strings, optionally with a condition.

Both forms of butido are accepted: the plain string and the table
``{ name = "NAME =VERSION", condition = {...} }``. The string is always validated, even
when its condition is false, so a typo never hides behind an unused condition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from airflow_butido.recipes.errors import InvalidValue, UnknownKey, type_name
from airflow_butido.recipes.versions import parse_version

KINDS = ("build", "runtime")

# NAME, one space, VERSION: names may start with a digit (7z, 0ad_).
_DEPENDENCY_RE = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*) (?P<version>\S+)")
_CONDITION_KEYS = ("has_env", "env_eq", "in_image")
_DEPENDENCY_TABLE_KEYS = ("name", "condition")


@dataclass(frozen=True)
class Condition:
    """All given parts must hold (AND). ``in_image`` is any-of; ``None`` = no image check."""

    has_env: tuple[str, ...] = ()
    env_eq: tuple[tuple[str, str], ...] = ()
    in_image: tuple[str, ...] | None = None

    @property
    def depends_on_env(self) -> bool:
        return bool(self.has_env or self.env_eq)

    def evaluate_image(self, image: str | None) -> bool:
        """The image part alone; without a known image an ``in_image`` condition is false."""
        if self.in_image is None:
            return True
        return image is not None and image in self.in_image

    def evaluate_env(self, env: Mapping[str, str]) -> bool:
        if any(name not in env for name in self.has_env):
            return False
        return all(env.get(name) == value for name, value in self.env_eq)

    def evaluate(self, image: str | None, env: Mapping[str, str]) -> bool:
        return self.evaluate_image(image) and self.evaluate_env(env)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.has_env:
            out["has_env"] = list(self.has_env)
        if self.env_eq:
            out["env_eq"] = dict(self.env_eq)
        if self.in_image is not None:
            out["in_image"] = list(self.in_image)
        return out

    def __str__(self) -> str:
        parts = [f"has_env {','.join(self.has_env)}"] if self.has_env else []
        parts += [f"{k}={v}" for k, v in self.env_eq]
        if self.in_image is not None:
            parts.append(f"in_image {','.join(self.in_image) or '(none)'}")
        return " and ".join(parts) or "always"


@dataclass(frozen=True)
class Dependency:
    """``raw`` is the value as written in pkg.toml (string or table), for templates."""

    name: str
    version: str
    kind: str
    condition: Condition | None = None
    raw: Any = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


@lru_cache(maxsize=1 << 16)
def _parse_string(text: str) -> tuple[str, str]:
    m = _DEPENDENCY_RE.fullmatch(text)
    if not m:
        raise InvalidValue(
            f'invalid dependency {text!r}: expected "NAME =VERSION" (exactly one space; the '
            "name starts with a letter or digit and contains letters, digits, '.', '_', '-')"
        )
    try:
        version = parse_version(m["version"])
    except InvalidValue as exc:
        raise InvalidValue(f"invalid dependency {text!r}: {exc.message}") from None
    return m["name"], version


@lru_cache(maxsize=1 << 16)
def _string_dependency(text: str, kind: str) -> Dependency:
    """A plain-string dependency, cached: the same strings recur across a repository, and a
    frozen dependency can be shared by every package that writes it."""
    name, version = _parse_string(text)
    return Dependency(name, version, kind, None, text)


def parse_dependency_string(text: str) -> tuple[str, str]:
    """``"vim =8.2"`` or ``"vim 8.2"`` -> ``("vim", "8.2")`` (cached: strings repeat)."""
    if not isinstance(text, str):
        raise InvalidValue(f'expected a string "NAME VERSION", got {type_name(text)}')
    return _parse_string(text)


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidValue("expected a string or a list of strings", key)


def _unknown_keys(
    table: dict[str, Any], allowed: tuple[str, ...], unknown: list[InvalidValue] | None, at: str
) -> None:
    """Raise UnknownKey for a key not in ``allowed``, or collect it in ``unknown``."""
    for key in table:
        if key not in allowed:
            exc = UnknownKey(f"unknown key {key!r} (allowed: {', '.join(allowed)})", at + key)
            if unknown is None:
                raise exc
            unknown.append(exc)


def parse_condition(value: Any, unknown: list[InvalidValue] | None = None) -> Condition:
    """A ``condition`` table; unknown keys raise, or are collected in ``unknown``."""
    if not isinstance(value, dict):
        raise InvalidValue(f"expected a table, got {type_name(value)}")
    _unknown_keys(value, _CONDITION_KEYS, unknown, "")
    has_env = _string_list(value["has_env"], "has_env") if "has_env" in value else ()
    env_eq: tuple[tuple[str, str], ...] = ()
    if "env_eq" in value:
        table = value["env_eq"]
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise InvalidValue("expected a table of strings", "env_eq")
        env_eq = tuple(table.items())
    in_image = _string_list(value["in_image"], "in_image") if "in_image" in value else None
    return Condition(has_env, env_eq, in_image)


def parse_dependency(
    value: Any, kind: str, unknown: list[InvalidValue] | None = None
) -> Dependency:
    """One entry of ``dependencies.build`` / ``dependencies.runtime``; unknown keys raise
    UnknownKey, or are collected in ``unknown`` (keys relative to the entry)."""
    if isinstance(value, str):
        return _string_dependency(value, kind)
    if not isinstance(value, dict):
        raise InvalidValue(f"expected a string or a table, got {type_name(value)}")
    _unknown_keys(value, _DEPENDENCY_TABLE_KEYS, unknown, "")
    if "name" not in value:
        raise InvalidValue("missing key 'name'", "name")
    try:
        name, version = parse_dependency_string(value["name"])
    except InvalidValue as exc:
        raise InvalidValue(exc.message, "name") from None
    condition = None
    if "condition" in value:
        inner: list[InvalidValue] | None = None if unknown is None else []
        try:
            condition = parse_condition(value["condition"], inner)
        except InvalidValue as exc:
            key = "condition" + (f".{exc.key}" if exc.key else "")
            raise type(exc)(exc.message, key) from None
        if unknown is not None and inner:
            unknown.extend(UnknownKey(e.message, f"condition.{e.key}") for e in inner)
    return Dependency(name, version, kind, condition, value)
