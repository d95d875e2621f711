"""The read-only repository commands end the process without freeing every object: the
output is complete, the exit status kept and the atexit handlers run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.recipes.repo_factory import leaf, write_repo

UNUSED = ("pickle", "signal", "subprocess", "tempfile", "typing_extensions", "uuid")
SCRIPT = f"""
import atexit, sys, threading
atexit.register(lambda: print("atexit handler ran", file=sys.stderr))
loaded = lambda: [m for m in {UNUSED!r} if m in sys.modules]
atexit.register(lambda: print("imported:", loaded(), file=sys.stderr))
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, args=(1,)).start()
sys.argv = ["butido", "--repo", sys.argv[2], *sys.argv[3:]]
from airflow_butido.cli.main import main
code = main()
print("main returned", code, file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(
        tmp_path / "repo", {"a/pkg.toml": leaf("a", "1", ["b =1"]), "b/pkg.toml": leaf("b", "1")}
    )


def butido(repo: Path, tmp_path: Path, *args: str, thread: bool = False):
    env = {**os.environ, "BUTIDO_PARSE_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-c", SCRIPT, "thread" if thread else "-", str(repo), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_a_query_exits_at_once_after_its_output_and_the_atexit_handlers(
    repo: Path, tmp_path: Path
) -> None:
    done = butido(repo, tmp_path, "tree-of", "a", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["packages"] == ["a 1", "b 1"]
    assert "atexit handler ran" in done.stderr
    assert "main returned" not in done.stderr  # the process ended inside main


def test_a_failing_query_keeps_its_exit_status(repo: Path, tmp_path: Path) -> None:
    done = butido(repo, tmp_path, "tree-of", "nope", "--json")
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "main returned" not in done.stderr


def test_with_another_thread_running_main_returns(repo: Path, tmp_path: Path) -> None:
    done = butido(repo, tmp_path, "versions-of", "a", thread=True)
    assert done.returncode == 0 and done.stdout.strip() == "1"
    assert "main returned 0" in done.stderr and "atexit handler ran" in done.stderr


def test_other_commands_return_from_main(repo: Path, tmp_path: Path) -> None:
    done = butido(repo, tmp_path, "lint")
    assert "main returned" in done.stderr, done.stderr


def test_a_cold_query_imports_none_of_what_only_other_commands_or_the_writer_use(
    repo: Path, tmp_path: Path
) -> None:
    done = butido(repo, tmp_path, "tree-of", "a", "--json")  # an empty cache: loaded afresh
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stderr  # the pickle is written by the forked child
