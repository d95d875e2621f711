"""The CLI's shared plumbing (cli/common.py, cli/main.py) and its module boundaries."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_butido.cli import common
from airflow_butido.cli import main as cli_main
from airflow_butido.errors import ButidoError

ROOT = Path(__file__).resolve().parents[3]
CLI_DIR = ROOT / "airflow_butido" / "cli"
PLUMBING = {"common", "output", "main", "__init__"}


def cli_imports() -> list[tuple[str, str, str]]:
    """(importing module, imported cli module, imported name) of every cli import."""
    found = []
    for path in sorted(CLI_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "airflow_butido.cli."
            ):
                target = (node.module or "").rsplit(".", 1)[1]
                found.extend((path.stem, target, alias.name) for alias in node.names)
    return found


def test_command_modules_share_only_the_plumbing_modules() -> None:
    """A command module takes helpers from cli.common / cli.output only; from another
    command module it may take a whole command (``cmd_*``), as ``release list`` does."""
    crossing = [
        (importer, target, name)
        for importer, target, name in cli_imports()
        if importer not in PLUMBING - {"main"}
        and target not in PLUMBING
        and target != importer
        and not name.startswith("cmd_")
    ]
    assert crossing == []
    assert cli_imports(), "the scan finds the imports at all"


def test_main_does_not_drop_a_command_group_that_fails_to_import(monkeypatch) -> None:
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("airflow_butido.cli.nosuchgroup",))
    with pytest.raises(ModuleNotFoundError, match="nosuchgroup"):
        cli_main.build_parser()


def test_every_command_group_registers() -> None:
    parser = cli_main.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = ("tree-of", "find-pkg", "metrics", "source", "lint", "build", "trigger", "db",
                "release", "find-artifact", "endpoint", "generate-completions")  # fmt: skip
    assert set(commands) <= set(subparsers.choices)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999999999999999", "--limit: 99999999999999999999 is out of range"),
        ("-1", "--limit: -1 is out of range"),
        ("ten", "--limit: 'ten' is not an integer"),
    ],
)
def test_limit_argument(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        common.limit_arg(text)


def test_limit_argument_accepts_zero_and_the_largest_bigint() -> None:
    assert common.limit_arg("0") == 0
    assert common.limit_arg(str(2**63 - 1)) == 2**63 - 1


NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2h", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("1d 12h", datetime(2024, 2, 29, 0, tzinfo=UTC)),
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, when: datetime) -> None:
    assert common.parse_when(text, now=NOW) == when


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999999999999999y", "reaches before the year 1"),
        ("3000y", "reaches before the year 1"),
        ("2 fortnights", "is neither a duration"),
        ("", "is neither a duration"),
    ],
)
def test_parse_when_refuses(text: str, message: str) -> None:
    with pytest.raises(ButidoError, match=message):
        common.parse_when(text, now=NOW)


def args_for(*argv: str) -> argparse.Namespace:
    return cli_main.build_parser().parse_args([*argv, "db", "jobs"])


@pytest.mark.parametrize(
    ("argv", "url"),
    [
        (
            ("--db-url", "db.example", "--db-name", "b"),
            "postgresql+psycopg2://db.example/b?connect_timeout=30",
        ),
        (
            ("--db-url", "h", "--db-port", "5433", "--db-user", "u", "--db-pw", "p:w",
             "--db-name", "n", "--db-timeout", "7"),
            "postgresql+psycopg2://u:p%3Aw@h:5433/n?connect_timeout=7",
        ),
        (("--database-url", "sqlite:///x.db", "--db-url", "h"), "sqlite:///x.db"),
    ],
)  # fmt: skip
def test_database_flags_make_the_url(argv: tuple[str, ...], url: str) -> None:
    assert common.database_url_for(args_for(*argv), None) == url


def test_database_flags_override_the_configured_keys(tmp_path: Path) -> None:
    from airflow_butido.recipes.config import load_config
    from tests.support import config_toml

    (tmp_path / "config.toml").write_text(
        config_toml(images=[("debian:bookworm", "deb12")])
        .replace("compatibility = 1", 'compatibility = 1\ndatabase_host = "cfg"\n'
                 'database_name = "cfgdb"\ndatabase_user = "cfguser"\ndatabase_port = 1111')
    )  # fmt: skip
    config = load_config(tmp_path)
    url = common.database_url_for(args_for("--db-url", "flag", "--db-port", "2222"), config)
    assert url == "postgresql+psycopg2://cfguser@flag:2222/cfgdb?connect_timeout=30"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_generate_completions(shell: str, capsys) -> None:
    assert cli_main.main(["generate-completions", shell]) == 0
    script = capsys.readouterr().out
    assert "butido" in script and "_ARGCOMPLETE" in script


def test_completion_answers_the_shell(tmp_path: Path) -> None:
    """What the generated script asks: the sub-commands after ``butido db se``."""
    answers = tmp_path / "answers"
    line = "butido db se"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_ARGCOMPLETE": "1",
           "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(answers)}  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "airflow_butido.cli.main"], env=env, check=True, timeout=60
    )
    assert answers.read_text().split() == ["setup"]


def test_butido_05_schema_is_needed_from_shared(monkeypatch, tmp_path: Path) -> None:
    """Missing ../shared: a skip that says so outside CI, a failure under CI."""
    import tests.conftest
    from tests.integration.db import conftest as db_conftest

    monkeypatch.setattr(db_conftest, "SCHEMA_05", tmp_path / "missing.sql")
    monkeypatch.setattr(tests.conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="butido 0.5's schema .* is not present"):
        db_conftest.butido_05_schema_sql()
    monkeypatch.setattr(tests.conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="required infrastructure missing in CI"):
        db_conftest.butido_05_schema_sql()


def test_hide_bars_is_accepted(capsys) -> None:
    """butido's scripts pass it; there are no progress bars to hide."""
    assert cli_main.main(["--hide-bars", "generate-completions", "fish"]) == 0
    assert "butido" in capsys.readouterr().out
