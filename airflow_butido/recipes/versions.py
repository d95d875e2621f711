"""Version strings and the version constraints of the command line.

In dependencies a version is an exact string (``"b =2"`` and ``"b 2"`` both mean the
package whose ``version`` is exactly ``2``). On the command line a bare version is a
semver-style *partial* match (``1`` matches ``1.0.0`` and ``1.4.2``, ``1.2`` matches
``1.2.x``); ``=X`` is exact. Versions that do not look like semver are compared via
their first three digit groups (``1.1.1w`` -> 1.1.1) and never raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_butido.recipes.errors import InvalidValue

# A version as written in a dependency string after the optional "=".
VERSION_RE = re.compile(r"[0-9][-_.A-Za-z0-9]*")

_NUM = r"(?:0|[1-9][0-9]*)"
_WILD = r"(?:\*|x|X)"
_IDENT = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_PARTIAL_RE = re.compile(
    rf"^(?P<major>{_NUM})"
    rf"(?:\.(?P<minor>{_NUM}|{_WILD})"
    rf"(?:\.(?P<patch>{_NUM}|{_WILD})"
    rf"(?:-(?P<pre>{_IDENT}))?(?:\+{_IDENT})?)?)?$"
)
_SEMVER_RE = re.compile(
    rf"^(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_IDENT}))?(?:\+{_IDENT})?$"
)
_DIGITS_RE = re.compile(r"[0-9]+")


def parse_version(text: str) -> str:
    """Validate a dependency version (``=1.2`` or ``1.2``) and return it without ``=``."""
    body = text[1:] if text.startswith("=") else text
    if text[:1] in ("*", ">", "<"):
        raise InvalidValue(
            f"version operator {text[0]!r} is not supported; only '=' (exact version) is"
        )
    if not VERSION_RE.fullmatch(body):
        raise InvalidValue(
            f"invalid version {text!r}: expected an optional '=' and a version that starts "
            "with a digit and contains only letters, digits, '.', '-' and '_'"
        )
    return body


@dataclass(frozen=True)
class _Semver:
    major: int
    minor: int
    patch: int
    pre: str


def _as_semver(version: str) -> _Semver | None:
    m = _SEMVER_RE.match(version)
    if m:
        return _Semver(int(m["major"]), int(m["minor"]), int(m["patch"]), m["pre"] or "")
    groups = _DIGITS_RE.findall(version)[:3]
    if not groups:
        return None
    nums = [int(g) for g in groups] + [0] * (3 - len(groups))
    return _Semver(nums[0], nums[1], nums[2], "")


@dataclass(frozen=True)
class VersionConstraint:
    """``=X`` (exact string) or ``X`` (semver partial, or exact when X is not semver-like)."""

    text: str
    exact: bool
    major: int | None = None
    minor: int | None = None
    patch: int | None = None
    pre: str = ""

    @classmethod
    def parse(cls, text: str) -> VersionConstraint:
        text = text.strip()
        if not text:
            raise InvalidValue("empty version constraint")
        if text.startswith("="):
            return cls(text[1:], exact=True)
        m = _PARTIAL_RE.match(text)
        if not m:
            return cls(text, exact=True)

        def num(group: str) -> int | None:
            value = m[group]
            return None if value is None or value in "*xX" else int(value)

        minor = num("minor")
        patch = num("patch") if minor is not None else None
        return cls(
            text, exact=False, major=int(m["major"]), minor=minor, patch=patch, pre=m["pre"] or ""
        )

    def matches(self, version: str) -> bool:
        if self.exact:
            return version == self.text
        v = _as_semver(version)
        if v is None:
            return version == self.text
        if v.major != self.major:
            return False
        if self.minor is not None and v.minor != self.minor:
            return False
        if self.patch is not None and v.patch != self.patch:
            return False
        if v.pre:
            # A pre-release only matches a constraint naming that very pre-release.
            return self.patch is not None and v.pre == self.pre
        return not self.pre

    def __str__(self) -> str:
        return f"={self.text}" if self.exact else self.text
