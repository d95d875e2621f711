from __future__ import annotations

import pytest

from airflow_butido.recipes.errors import InvalidValue
from airflow_butido.recipes.versions import VersionConstraint, parse_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", "1"),
        ("1.42", "1.42"),
        ("1.42.37", "1.42.37"),
        ("=1", "1"),
        ("=1.0.17", "1.0.17"),
        ("=1.0.17asejg", "1.0.17asejg"),
        ("=1-0B17-beta1247_commit_12653hasd", "1-0B17-beta1247_commit_12653hasd"),
    ],
)
def test_dependency_version_keeps_the_full_string(text: str, expected: str) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "=", "*1", ">1", "<1", "=a", "=.a", "=.1", "=a1", "a"])
def test_dependency_version_rejects(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_version(text)


@pytest.mark.parametrize("op", ["*", ">", "<"])
def test_unsupported_operators_are_named_in_the_error(op: str) -> None:
    with pytest.raises(InvalidValue, match=f"operator '\\{op}' is not supported"):
        parse_version(f"{op}1")


@pytest.mark.parametrize(
    ("constraint", "version", "matches"),
    [
        ("=2", "2", True),
        ("=2", "2.0", False),
        ("=1.1.1w", "1.1.1w", True),
        ("1", "1.0.0", True),
        ("1", "1.4.2", True),
        ("1", "2.0.0", False),
        ("1", "1", True),
        ("1.2", "1.2.0", True),
        ("1.2", "1.2.9", True),
        ("1.2", "1.3.0", False),
        ("1.2.3", "1.2.3", True),
        ("1.2.3", "1.2.4", False),
        ("19", "19.0", True),
        ("19.1", "19.1", True),
        ("19.1", "19.0", False),
        ("1.1.1", "1.1.1w", True),  # non-semver version: first three digit groups
        ("2024.1.15", "2024.01.15", True),
        ("1", "1.0.0-alpha", False),  # pre-releases only match when named
        ("1.0.0-alpha", "1.0.0-alpha", True),
        ("1.1.1w", "1.1.1w", True),  # not semver-like: exact string fallback
        ("1.1.1w", "1.1.1", False),
        ("2024.01.15", "2024.01.15", True),  # leading zero: exact fallback
        ("2024.01.15", "2024.1.15", False),
        ("1", "weird version!", False),  # butido panics here
        ("1", "abc", False),
        ("abc", "abc", True),
        ("1.*", "1.5.0", True),
        ("1.*", "2.5.0", False),
    ],
)
def test_cli_constraint_matching(constraint: str, version: str, matches: bool) -> None:
    assert VersionConstraint.parse(constraint).matches(version) is matches


def test_empty_constraint_is_an_error() -> None:
    with pytest.raises(InvalidValue):
        VersionConstraint.parse(" ")


def test_constraint_prints_as_written() -> None:
    assert str(VersionConstraint.parse("=1.2")) == "=1.2"
    assert str(VersionConstraint.parse("1.2")) == "1.2"
