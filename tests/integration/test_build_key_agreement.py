"""``butido build`` and ``butido find-artifact`` compute the same build key for the same
``-E`` input: what a build recorded, find-artifact finds; another value makes both say
"rebuild". Real Docker engine, real ``butido`` processes, an embedded SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_jobs import pkg_toml, write_repo
from tests.support import run_butido as butido

pytestmark = [pytest.mark.docker]


def test_find_artifact_and_build_agree_on_the_key(tmp_path: Path, build_image: str) -> None:
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "lib": pkg_toml("lib", "1", 'mkdir /outputs; echo "$FOO" > /outputs/lib-1.pkg'),
            "app": pkg_toml(
                "app", "1", "mkdir /outputs; cat /inputs/lib-1.pkg > /outputs/app-1.pkg"
            ).replace("runtime = []", 'runtime = ["lib =1"]'),
        },
    )
    (repo / "airflow-butido.toml").write_text(f'database_url = "sqlite:///{repo / "b.sqlite"}"\n')

    built = butido(repo, "build", "app", "-I", "test", "-E", "FOO=a=b")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "2 built" in built.stdout

    same = butido(repo, "find-artifact", "app", "-I", "test", "-E", "FOO=a=b")
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.strip().endswith("app-1.pkg")

    other = butido(repo, "find-artifact", "app", "-I", "test", "-E", "FOO=c")
    assert other.returncode == 1
    assert "app 1 would be rebuilt" in other.stdout
    assert "FOO changed from 'a=b' to 'c'" in other.stdout

    again = butido(repo, "build", "app", "-I", "test", "-E", "FOO=a=b")
    assert again.returncode == 0 and "2 reused" in again.stdout, again.stdout + again.stderr
