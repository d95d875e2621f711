"""The ``butido`` command run in-process, every command group registered."""

from __future__ import annotations

from collections.abc import Callable

from tests.unit.cli.runner import butido_fixture

CliRunner = Callable[..., tuple[int, str, str]]

butido = butido_fixture(modules=None)
