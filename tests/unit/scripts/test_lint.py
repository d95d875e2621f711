"""script_linter: the rendered script on stdin, non-zero exit = failure."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from airflow_butido.recipes.package import Phase
from airflow_butido.scripts.lint import LintError, check_phases, lint_script


def make_linter(directory: Path, body: str, name: str = "lint.sh") -> Path:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_valid_script_passes_bash_n(tmp_path: Path) -> None:
    linter = make_linter(tmp_path, "exec bash -n\n")
    result = lint_script(linter, "#!/bin/bash\necho ok\n", cwd=tmp_path)
    assert result.ok
    assert result.returncode == 0


def test_syntax_error_fails_with_the_linter_output(tmp_path: Path) -> None:
    linter = make_linter(tmp_path, "exec bash -n\n")
    result = lint_script(linter, "if then fi\n", cwd=tmp_path)
    assert not result.ok
    assert result.returncode != 0
    assert "syntax error" in result.output


def test_linter_reads_the_script_on_stdin(tmp_path: Path) -> None:
    linter = make_linter(tmp_path, 'grep -q "forbidden" && { echo "found it"; exit 3; }; exit 0\n')
    assert lint_script(linter, "echo fine\n", cwd=tmp_path).ok
    bad = lint_script(linter, "echo forbidden\n", cwd=tmp_path)
    assert (bad.ok, bad.returncode, bad.output) == (False, 3, "found it\n")


def test_relative_linter_path_is_resolved_against_the_repo_root(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    make_linter(tmp_path / "tools", "cat >/dev/null; echo checked >&2\n")
    result = lint_script(Path("tools/lint.sh"), "x\n", cwd=tmp_path)
    assert result.ok
    assert result.output == "checked\n"


def test_linter_that_hangs_times_out(tmp_path: Path) -> None:
    linter = make_linter(tmp_path, "cat >/dev/null; sleep 30; echo never\n")
    result = lint_script(linter, "x\n", cwd=tmp_path, timeout=0.5)
    assert not result.ok
    assert result.returncode is None
    assert "did not finish" in result.output


def test_missing_linter_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(LintError, match="cannot be run"):
        lint_script(tmp_path / "nope.sh", "x\n", cwd=tmp_path)


class _Pkg:
    label = "p 1"
    phases = (Phase("build", script="x"), Phase("extra", script="y"))


def test_check_phases_reports_missing_and_unknown_phases() -> None:
    assert check_phases(_Pkg(), ["fetch", "build"]) == (
        "p 1: phase 'fetch' is missing",
        "p 1: phase 'extra' is not in available_phases",
    )
    assert check_phases(_Pkg(), ["build", "extra"]) == ()
