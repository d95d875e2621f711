"""The inputs a user gives a run: ``-E NAME=VALUE`` assignments and the run conf's ``env``.

One set of rules for every command and for the plan, so that ``build``, ``trigger``,
``find-artifact``, ``tree-of``, ``lint`` and ``db jobs`` read the same arguments the same
way:

* the name is everything before the first ``=``, the value everything after it
  (``A=b=c`` sets ``A`` to ``b=c``);
* a name is a shell variable name, ``[A-Za-z_][A-Za-z0-9_]*``;
* the value must not be empty;
* where ``containers.check_env_names`` is on, a name must be in ``containers.allowed_env``.

Pure: no Airflow, Docker or SQLAlchemy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from airflow_butido.errors import ButidoError

if TYPE_CHECKING:
    from airflow_butido.recipes.config import ContainerConfig

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# A variable whose name contains one of these (any case) is secret, as Airflow's own
# sensitive-field names are; ``secret_env`` in airflow-butido.toml names more.
SENSITIVE_NAME_PARTS = (
    "access_key", "access_token", "api_key", "apikey", "auth_header", "authorization",
    "bearer", "connection_string", "dsn", "passphrase", "passwd", "password", "private_key",
    "proxy", "secret", "service_account", "service_key", "token", "keyfile_dict",
    "webhook_url",
)  # fmt: skip
SECRET_MASK = "***"


class RunInputError(ButidoError):
    """An ``-E`` assignment or a run conf ``env`` entry that breaks the rules."""


def env_value_problem(name: object, value: object) -> str | None:
    """Why ``name = value`` is not a valid environment entry, or None."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        return (
            f"invalid variable name {name!r}: use letters, digits and '_', "
            "not starting with a digit"
        )
    if not isinstance(value, str | int | float):
        return f"{name}: value must be a string"
    if str(value) == "":
        return f"{name}: empty value (give NAME=VALUE with a value)"
    return None


def parse_env_assignment(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of one ``-E`` argument; split on the first ``=``."""
    name, sep, value = text.partition("=")
    if not sep:
        raise RunInputError(f"-E {text!r}: expected NAME=VALUE")
    problem = env_value_problem(name, value)
    if problem is not None:
        raise RunInputError(f"-E {text!r}: {problem}")
    return name, value


def parse_env_assignments(items: Iterable[str] | None) -> dict[str, str]:
    """Every ``-E`` argument; a name given twice keeps its last value."""
    return dict(parse_env_assignment(item) for item in items or ())


def env_pairs(items: Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """``-E`` arguments as the sorted pairs a run request carries."""
    return tuple(sorted(parse_env_assignments(items).items()))


def disallowed_env_names(names: Iterable[str], containers: ContainerConfig) -> list[str]:
    """The names ``containers.allowed_env`` refuses (none when the check is off), sorted."""
    if not containers.check_env_names:
        return []
    allowed = set(containers.allowed_env)
    return sorted({name for name in names if name not in allowed})


def check_allowed_env(names: Iterable[str], containers: ContainerConfig) -> None:
    """Refuse ``-E`` names that ``containers.allowed_env`` does not list."""
    refused = disallowed_env_names(names, containers)
    if refused:
        raise RunInputError(
            f"-E {', '.join(refused)}: not in containers.allowed_env of config.toml "
            "(a build would refuse it)"
        )


def is_secret(name: str, secret_env: Iterable[str] = ()) -> bool:
    """Whether the value of variable ``name`` must never be stored: it is listed in
    ``secret_env`` or its name looks like a credential."""
    lowered = name.lower()
    return name in secret_env or any(part in lowered for part in SENSITIVE_NAME_PARTS)


def masked_env(
    pairs: Iterable[tuple[str, str]], secret_env: Iterable[str] = ()
) -> tuple[tuple[str, str], ...]:
    """``pairs`` with the value of every secret variable replaced by ``***``."""
    secret = tuple(secret_env)
    return tuple((k, SECRET_MASK if is_secret(k, secret) else v) for k, v in pairs)


def redactor(
    pairs: Iterable[tuple[str, str]], secret_env: Iterable[str] = ()
) -> Callable[[str], str] | None:
    """A function that replaces every secret value in a text by ``***`` (None when there
    is no secret to hide)."""
    secret = tuple(secret_env)
    values = sorted(
        {v for k, v in pairs if is_secret(k, secret) and len(v) >= 3}, key=len, reverse=True
    )
    if not values:
        return None
    pattern = re.compile("|".join(re.escape(v) for v in values))
    return lambda text: pattern.sub(SECRET_MASK, text)
