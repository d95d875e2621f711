"""Script linting: the configured ``script_linter`` reads a rendered script on stdin.

A non-zero exit status is a lint failure; its output (stdout, then stderr) is the report.
``check_phases`` adds butido's ``lint`` rule that a package defines exactly the configured
phases.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_butido.errors import ButidoError
from airflow_butido.recipes.paths import confine

DEFAULT_TIMEOUT = 60.0


class LintError(ButidoError):
    """The linter itself cannot be run (missing, not executable)."""


@dataclass(frozen=True)
class LintResult:
    ok: bool
    output: str
    returncode: int | None = None  # None when the linter timed out


def resolve_linter(linter: Path, repo_root: Path) -> Path:
    """A relative linter path is relative to the repository root, and must stay in it."""
    return linter if linter.is_absolute() else confine(repo_root, linter, what="script_linter")


def lint_script(
    linter: Path, script: str, *, cwd: Path, timeout: float = DEFAULT_TIMEOUT
) -> LintResult:
    """Run ``linter`` (relative paths against ``cwd``, the repo root) with ``script`` on stdin."""
    program = resolve_linter(Path(linter), cwd)
    try:
        proc = subprocess.Popen(
            [str(program)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,  # so a timeout can stop the linter's children too
        )
    except OSError as exc:
        raise LintError(f"script linter {program} cannot be run: {exc.strerror or exc}") from None
    try:
        stdout, stderr = proc.communicate(script.encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        message = f"script linter {program} did not finish within {timeout:g} s"
        return LintResult(False, f"{_text(stdout)}{_text(stderr)}{message}\n", None)
    return LintResult(proc.returncode == 0, _text(stdout) + _text(stderr), proc.returncode)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def check_phases(package: Any, available_phases: Sequence[str]) -> tuple[str, ...]:
    """Problems with a package's phases for ``lint``: missing ones and unknown ones."""
    defined = [phase.name for phase in package.phases]
    missing = [name for name in available_phases if name not in defined]
    extra = [name for name in defined if name not in available_phases]
    problems = [f"{package.label}: phase '{name}' is missing" for name in missing]
    problems += [f"{package.label}: phase '{name}' is not in available_phases" for name in extra]
    return tuple(problems)
