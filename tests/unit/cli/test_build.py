"""`butido build` argument checks that need no Docker (the builds: tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.cli.main import main


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_parallel_must_be_a_positive_number(value, capsys, example_repo: Path):
    with pytest.raises(SystemExit) as info:
        main(["--repo", str(example_repo), "build", "a", "-I", "deb11", "--parallel", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--parallel: expected a whole number of at least 1" in err
    assert "Traceback" not in err


def test_unknown_image_is_named_without_a_traceback(
    capsys, example_repo: Path, monkeypatch, tmp_path: Path
):
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    # what the command sets up for Airflow, restored after the test
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    assert main(["--repo", str(example_repo), "build", "a", "-I", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "image 'nosuch' is not configured in docker.images" in err
    assert "Traceback" not in err
