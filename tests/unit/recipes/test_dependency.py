from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest

from airflow_butido.recipes.dependency import (
    Condition,
    Dependency,
    parse_condition,
    parse_dependency,
    parse_dependency_string,
)
from airflow_butido.recipes.errors import InvalidValue


@pytest.mark.parametrize(
    ("text", "name", "version"),
    [
        ("vim =8.2", "vim", "8.2"),
        ("gtk15 =1b", "gtk15", "1b"),
        ("foo-bar1.2.3 =0.123", "foo-bar1.2.3", "0.123"),
        ("7z =42", "7z", "42"),
        ("foobar =1.42.37", "foobar", "1.42.37"),
        ("0ad_ =42", "0ad_", "42"),
        ("2048-cli_0.0 =42", "2048-cli_0.0", "42"),
        ("b 2", "b", "2"),  # without the operator: same meaning
    ],
)
def test_dependency_string_parses(text: str, name: str, version: str) -> None:
    assert parse_dependency_string(text) == (name, version)


@pytest.mark.parametrize(
    "text", ["0] =42", "a\\ =42", "a =.0", "a =", "", " ", "a *", "a >2", "a <2", "a  =1", "a=1"]
)
def test_dependency_string_rejects(text: str) -> None:
    with pytest.raises(InvalidValue, match="invalid dependency"):
        parse_dependency_string(text)


@pytest.mark.parametrize("text", ["a >2", "a <2", "a *"])
def test_operators_other_than_equals_are_rejected_clearly(text: str) -> None:
    with pytest.raises(InvalidValue, match="is not supported; only '=' "):
        parse_dependency_string(text)


def _settings(toml: str) -> list:
    data = tomllib.loads(toml)
    value = data.get("settings", data.get("setting"))
    return value if isinstance(value, list) else [value]


COND = Condition(in_image=("bar",))


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('setting = "foo =1"', [Dependency("foo", "1", "runtime")]),
        (
            'setting = { name = "foo =1", condition = { in_image = "bar" } }',
            [Dependency("foo", "1", "runtime", COND)],
        ),
        (
            '[setting]\nname = "foo =1"\n[setting.condition]\nin_image = "bar"\n',
            [Dependency("foo", "1", "runtime", COND)],
        ),
        (
            'settings = [{ name = "foo =1", condition = { in_image = "bar" } }, "baz =2"]',
            [Dependency("foo", "1", "runtime", COND), Dependency("baz", "2", "runtime")],
        ),
        (
            '[[settings]]\nname = "foo =1"\ncondition = { in_image = "bar" }\n',
            [Dependency("foo", "1", "runtime", COND)],
        ),
        (
            '[[settings]]\nname = "foo =1"\ncondition.in_image = "bar"\n',
            [Dependency("foo", "1", "runtime", COND)],
        ),
        (
            '[[settings]]\nname = "foo =1"\ncondition.in_image = "bar"\n'
            '[[settings]]\nname = "baz =2"\ncondition.in_image = "bar"\n',
            [Dependency("foo", "1", "runtime", COND), Dependency("baz", "2", "runtime", COND)],
        ),
    ],
    ids=["simple", "inline", "pretty", "list", "pretty-list", "pretty-list-2", "pretty-list-3"],
)
@pytest.mark.parametrize("kind", ["build", "runtime"])
def test_dependency_forms(toml: str, expected: list[Dependency], kind: str) -> None:
    """butido pins the same forms for build.rs and runtime.rs."""
    wanted = [replace(d, kind=kind) for d in expected]
    assert [parse_dependency(v, kind) for v in _settings(toml)] == wanted


def test_raw_keeps_the_value_as_written() -> None:
    value = {"name": "foo =1", "condition": {"has_env": "X"}}
    assert parse_dependency(value, "build").raw == value
    assert parse_dependency("foo 1", "build").raw == "foo 1"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('has_env = "A"', Condition(has_env=("A",))),
        ('has_env = ["A", "B"]', Condition(has_env=("A", "B"))),
        ('env_eq = { A = "1" }', Condition(env_eq=(("A", "1"),))),
        ('in_image = "img"', Condition(in_image=("img",))),
        ('in_image = ["i1", "i2"]', Condition(in_image=("i1", "i2"))),
        ("", Condition()),
    ],
)
def test_condition_shapes(toml: str, expected: Condition) -> None:
    assert parse_condition(tomllib.loads(toml)) == expected


@pytest.mark.parametrize(
    ("condition", "image", "env", "result"),
    [
        (Condition(), None, {}, True),
        (Condition(in_image=("img",)), None, {}, False),
        (Condition(in_image=("img",)), "img", {}, True),
        (Condition(in_image=("img",)), "other", {}, False),
        (Condition(in_image=("a", "img")), "img", {}, True),
        (Condition(in_image=()), "img", {}, False),
        (Condition(has_env=("A",)), None, {}, False),
        (Condition(has_env=("A",)), None, {"A": ""}, True),
        (Condition(has_env=("A", "B")), None, {"A": "1"}, False),
        (Condition(env_eq=(("A", "1"),)), None, {}, False),
        (Condition(env_eq=(("A", "1"),)), None, {"A": "2"}, False),
        (Condition(env_eq=(("A", "1"),)), None, {"A": "1"}, True),
        (Condition(has_env=("A",), in_image=("img",)), "img", {}, False),  # AND
        (Condition(has_env=("A",), in_image=("img",)), "img", {"A": "x"}, True),
    ],
)
def test_condition_evaluation(condition, image, env, result) -> None:
    assert condition.evaluate(image, env) is result


def test_depends_on_env() -> None:
    assert Condition(has_env=("A",)).depends_on_env
    assert Condition(env_eq=(("A", "1"),)).depends_on_env
    assert not Condition(in_image=("x",)).depends_on_env


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"name": "a =1", "condition": {"in_imag": "x"}}, "condition.in_imag"),
        ({"name": "a =1", "condition": {"has_env": 3}}, "condition.has_env"),
        ({"name": "a =1", "condition": {"env_eq": {"A": 1}}}, "condition.env_eq"),
        ({"name": "a =1", "conditon": {}}, "conditon"),
        ({"condition": {}}, "name"),
        ({"name": "a >1", "condition": {"in_image": "never"}}, "name"),
    ],
)
def test_bad_tables_are_rejected_with_the_key(value, key: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_dependency(value, "runtime")
    assert info.value.key == key


def test_string_is_validated_even_if_the_condition_is_false() -> None:
    with pytest.raises(InvalidValue, match="not supported"):
        parse_dependency({"name": "a >1", "condition": {"in_image": "never"}}, "build")


@pytest.mark.parametrize("value", [3, ["a =1"], True])
def test_other_value_types_are_rejected(value) -> None:
    with pytest.raises(InvalidValue):
        parse_dependency(value, "runtime")
