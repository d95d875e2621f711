"""The one set of rules for ``-E`` and the run conf's ``env`` (airflow_butido.run_inputs)."""

from __future__ import annotations

import pytest

from airflow_butido.plan import PlanError, parse_run_conf
from airflow_butido.recipes.config import ContainerConfig
from airflow_butido.run_inputs import (
    RunInputError,
    check_allowed_env,
    disallowed_env_names,
    env_pairs,
    parse_env_assignment,
)


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ('foo="bar"', ("foo", '"bar"')),
        ("foo=bar", ("foo", "bar")),
        ("foo=1", ("foo", "1")),
        ("FOO=bar", ("FOO", "bar")),
        ("_X1=a=b=c", ("_X1", "a=b=c")),  # split on the first '='
        ("A= ", ("A", " ")),
    ],
)
def test_assignment_accepted(text: str, pair: tuple[str, str]) -> None:
    assert parse_env_assignment(text) == pair


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=", "-E 'a=': a: empty value"),
        ("=", "-E '=': invalid variable name ''"),
        ("=a", "-E '=a': invalid variable name ''"),
        ("a", "-E 'a': expected NAME=VALUE"),
        ("1=1", "-E '1=1': invalid variable name '1'"),
        ("a-b=1", "-E 'a-b=1': invalid variable name 'a-b'"),
        ("ä=1", "-E 'ä=1': invalid variable name 'ä'"),
    ],
)
def test_assignment_refused_with_the_argument_named(text: str, message: str) -> None:
    with pytest.raises(RunInputError) as info:
        parse_env_assignment(text)
    assert str(info.value).startswith(message)


def test_pairs_are_sorted_and_the_last_value_wins() -> None:
    assert env_pairs(["B=2", "A=1", "B=3"]) == (("A", "1"), ("B", "3"))
    assert env_pairs(None) == ()


@pytest.mark.parametrize(
    ("check", "allowed", "names", "refused"),
    [
        (False, (), ["X", "Y"], []),
        (True, ("X",), ["X", "Y", "Z", "Y"], ["Y", "Z"]),
        (True, ("X", "Y"), ["X", "Y"], []),
    ],
)
def test_allowed_env(check: bool, allowed: tuple[str, ...], names, refused) -> None:
    containers = ContainerConfig(check_env_names=check, allowed_env=allowed)
    assert disallowed_env_names(names, containers) == refused
    if refused:
        with pytest.raises(RunInputError, match=f"-E {', '.join(refused)}: not in containers"):
            check_allowed_env(names, containers)
    else:
        check_allowed_env(names, containers)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"FLAVOR": ""}, "run conf: env: FLAVOR: empty value"),
        ({"1BAD": "x"}, "run conf: env: invalid variable name '1BAD'"),
        ({"FLAVOR": ["x"]}, "run conf: env: FLAVOR: value must be a string"),
        ({"FLAVOR": None}, "run conf: env: FLAVOR: value must be a string"),
    ],
)
def test_run_conf_env_follows_the_same_rules(env, problem: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_run_conf({"packages": ["a"], "env": env})
    assert problem in str(info.value)


def test_run_conf_env_keeps_equals_signs_and_numbers() -> None:
    request = parse_run_conf({"packages": ["a"], "env": {"FLAVOR": "a=b", "N": 3}})
    assert request.env == (("FLAVOR", "a=b"), ("N", "3"))
