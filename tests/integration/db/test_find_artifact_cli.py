"""``find-artifact`` and ``release`` through the CLI, on butido's example repository."""

from __future__ import annotations

import re

import pytest

from .builds import DIGEST, record_graph
from .conftest import run_cli

pytestmark = pytest.mark.postgres


def test_find_artifact_prints_reusable_artifacts_or_why_not(
    engine, db_url, example_repo, dirs
) -> None:
    submit, _ = record_graph(engine, example_repo, "a", "1")
    args = ("--repo", str(example_repo), "find-artifact", "a", "1", "-I", "deb11",
            "--database-url", db_url)  # fmt: skip

    code, out = run_cli(*args, "--image-digest", DIGEST)
    assert code == 0
    assert out == f"[unknown] {dirs['staging'] / submit / 'a-1.pkg'}\n"

    code, out = run_cli(*args, "--image-digest", "sha256:other")
    assert code == 1
    assert out.splitlines()[0] == "a 1 would be rebuilt:"
    assert "dependencies would be rebuilt" in out and "image_digest: changed from" in out

    (dirs["staging"] / submit / "h-8.pkg").write_bytes(b"corrupted")
    code, out = run_cli(*args, "--image-digest", DIGEST)
    assert code == 1 and "h 8" in out.splitlines()[1]


def test_release_commands_through_the_cli(engine, db_url, example_repo, dirs) -> None:
    submit, _ = record_graph(engine, example_repo, "h", "8")
    base = ("--repo", str(example_repo), "release")
    code, out = run_cli(*base, "new", submit, "--to", "default", "--database-url", db_url)
    assert code == 0 and out == f"{dirs['releases'] / 'default' / 'h-8.pkg'}\n"
    code, _ = run_cli(*base, "new", submit, "--to", "default", "--database-url", db_url)
    assert code == 1
    update = ("--update", "--non-interactive")
    code, out = run_cli(*base, "new", submit, "--to", "default", *update, "--database-url", db_url)
    assert code == 0 and out.endswith("(updated)\n")
    code, out = run_cli(*base, "list", "--database-url", db_url, "--json")
    assert code == 0 and out.count('"Package": "h"') == 2
    code, _ = run_cli(*base, "new", submit, "--to", "nightly", "--database-url", db_url)
    assert code == 1
    code, out = run_cli(
        *base, "rm", "--from", "default", "h", "8", "--non-interactive", "--database-url", db_url
    )
    assert code == 0 and not (dirs["releases"] / "default" / "h-8.pkg").exists()


def test_release_new_takes_name_and_version_after_the_store_option(
    engine, db_url, example_repo, dirs
) -> None:
    submit, produced = record_graph(engine, example_repo, "a", "1")
    assert len(produced) > 1  # a and its dependencies: only a must be released
    base = ("--repo", str(example_repo), "release", "new", submit)
    code, out = run_cli(*base, "--to", "default", "a", "1", "--database-url", db_url)
    assert code == 0 and out == f"{dirs['releases'] / 'default' / 'a-1.pkg'}\n"
    update = ("--update", "--non-interactive")
    code, out = run_cli(*base, "--to", "default", "a", "1", *update, "--database-url", db_url)
    assert code == 0 and out == f"{dirs['releases'] / 'default' / 'a-1.pkg'} (updated)\n"
    assert sorted(p.name for p in (dirs["releases"] / "default").iterdir()) == ["a-1.pkg"]


def test_find_artifact_shows_the_release_date_of_the_reusable_artifact_itself(
    engine, db_url, example_repo, dirs
) -> None:
    older, _ = record_graph(engine, example_repo, "h", "8")
    newer, _ = record_graph(engine, example_repo, "h", "8")  # same key: the newest is reused
    find = ("--repo", str(example_repo), "find-artifact", "h", "8", "-I", "deb11",
            "--image-digest", DIGEST, "--database-url", db_url)  # fmt: skip
    release = ("--repo", str(example_repo), "release", "new")
    assert run_cli(*release, older, "--to", "default", "--database-url", db_url)[0] == 0
    code, out = run_cli(*find)
    assert code == 0 and out == f"[unknown] {dirs['staging'] / newer / 'h-8.pkg'}\n"
    update = ("--update", "--non-interactive")
    assert run_cli(*release, newer, "--to", "default", *update, "--database-url", db_url)[0] == 0
    code, out = run_cli(*find)
    assert code == 0 and re.fullmatch(
        rf"\[\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\] {dirs['staging'] / newer / 'h-8.pkg'}\n", out
    )
