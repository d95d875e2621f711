"""Running ``butido`` in-process for CLI tests of the read-only command groups."""

from __future__ import annotations

import pytest

from airflow_butido.cli import main as cli_main

OWN_MODULES = (
    "airflow_butido.cli.repo_commands",
    "airflow_butido.cli.source",
    "airflow_butido.cli.lint",
)


def butido_fixture(modules: tuple[str, ...] | None = OWN_MODULES):
    """A fixture ``run(*args) -> (exit code, stdout, stderr)`` via ``cli.main.main``.

    By default only the read-only command groups are registered, so these tests do not
    depend on the build, database or Airflow commands; ``modules=None`` keeps them all.
    """

    @pytest.fixture
    def run(monkeypatch, capsys, tmp_path_factory):
        # the repository commands load through the parse cache: a private one per test
        monkeypatch.setenv("BUTIDO_PARSE_CACHE", str(tmp_path_factory.mktemp("parse-cache")))
        if modules is not None:
            monkeypatch.setattr(cli_main, "COMMAND_MODULES", modules)
        for var in ("BUTIDO_CONFIG", "BUTIDO_SETTINGS", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(var, raising=False)

        def invoke(*args: object) -> tuple[int, str, str]:
            code = cli_main.main([str(a) for a in args])
            out, err = capsys.readouterr()
            return code, out, err

        return invoke

    return run
