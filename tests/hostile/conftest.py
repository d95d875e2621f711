"""The ``butido`` command run in-process, every command group registered."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from airflow_butido.cli import main as cli_main

CliRunner = Callable[..., tuple[int, str, str]]


@pytest.fixture
def butido(monkeypatch, capsys) -> CliRunner:
    """``butido(*args) -> (exit code, stdout, stderr)``, in-process, every command group."""
    for var in ("BUTIDO_CONFIG", "BUTIDO_SETTINGS", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: object) -> tuple[int, str, str]:
        code = cli_main.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
