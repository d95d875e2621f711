"""CLI commands on a real database (PostgreSQL and SQLite): -E of ``db jobs`` and
``find-artifact``, butido's --db-* flags, ``db cli``, ``metrics``, ``release rm``'s
confirmation on a terminal, and oversized numbers."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import upgrade
from tests.support import ENV_ARG_CASES, ENV_NOT_ALLOWED_CASE

from .builds import DIGEST, inputs_for, record_build, record_graph
from .conftest import run_cli

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[3]
CASES = [pytest.param(arg, error, id=case) for case, arg, error in ENV_ARG_CASES]


# --- -E -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arg", "error"), CASES)
def test_db_jobs_env_filter(engine, db_url, capsys, arg: str, error: str | None) -> None:
    record_build(engine, inputs=inputs_for(environment={"FLAVOR": "fast"}))
    wanted = record_build(engine, inputs=inputs_for("other", environment={"FLAVOR": "a=b"}))
    code, out = run_cli("db", "jobs", "--database-url", db_url, "--json", "-E", arg)
    if error is None:
        assert code == 0 and [r["Job"] for r in json.loads(out)] == [wanted.job_uuid]
    else:
        assert code == 1 and error in capsys.readouterr().err


@pytest.fixture
def flavoured_repo(example_repo: Path, tmp_path: Path) -> Path:
    """butido's example repository with FLAVOR in containers.allowed_env."""
    root = tmp_path / "repo"
    shutil.copytree(example_repo, root)
    config = root / "config.toml"
    text = config.read_text()
    assert "allowed_env     = [ ]" in text
    config.write_text(text.replace("allowed_env     = [ ]", 'allowed_env = ["FLAVOR"]'))
    return root


@pytest.mark.parametrize(
    ("arg", "error"), [*CASES, pytest.param(*ENV_NOT_ALLOWED_CASE[1:], id=ENV_NOT_ALLOWED_CASE[0])]
)
def test_find_artifact_env(
    engine, db_url, flavoured_repo, dirs, capsys, arg: str, error: str | None
) -> None:
    submit, _ = record_graph(engine, flavoured_repo, "h", "8", env={"FLAVOR": "a=b"})
    code, out = run_cli("--repo", str(flavoured_repo), "find-artifact", "^h$", "-I", "deb11",
                        "-E", arg, "--image-digest", DIGEST, "--database-url", db_url)  # fmt: skip
    if error is None:
        assert (code, out) == (0, f"[unknown] {dirs['staging'] / submit / 'h-8.pkg'}\n")
    else:
        err = capsys.readouterr().err
        assert code == 1 and error in err and out == ""
        if arg == ENV_NOT_ALLOWED_CASE[1]:
            assert "not in containers.allowed_env" in err


# --- find-artifact: REGEX and -S -------------------------------------------------------------


def test_find_artifact_name_is_an_unanchored_regex(engine, db_url, example_repo, dirs) -> None:
    submit, produced = record_graph(engine, example_repo, "a", "1")
    assert ("h", "8") in produced
    base = ("--repo", str(example_repo), "find-artifact")
    tail = ("-I", "deb11", "--image-digest", DIGEST, "--database-url", db_url)
    code, out = run_cli(*base, "^[ah]$", *tail)
    assert code == 0
    assert out.splitlines() == [
        f"[unknown] {dirs['staging'] / submit / 'a-1.pkg'}",
        f"[unknown] {dirs['staging'] / submit / 'h-8.pkg'}",
    ]
    code, out = run_cli(*base, "^h", "8", *tail)  # with a version constraint
    assert (code, out) == (0, f"[unknown] {dirs['staging'] / submit / 'h-8.pkg'}\n")
    assert run_cli(*base, "^zz", *tail)[0] == 1
    assert run_cli(*base, "(", *tail)[0] == 1


def test_find_artifact_no_script_filter(
    engine, db_url, example_repo, dirs, monkeypatch, capsys
) -> None:
    submit, _ = record_graph(engine, example_repo, "h", "8")
    monkeypatch.setenv("BUTIDO_SHEBANG", "#!/bin/sh")  # every script differs now
    base = ("--repo", str(example_repo), "find-artifact", "^h$", "-I", "deb11",
            "--image-digest", DIGEST, "--database-url", db_url)  # fmt: skip
    code, out = run_cli(*base)
    assert code == 1 and "script: the rendered script differs" in out
    for flag in ("-S", "--no-script-filter"):
        code, out = run_cli(*base, flag)
        assert (code, out) == (0, f"[unknown] {dirs['staging'] / submit / 'h-8.pkg'}\n")
    code, out = run_cli(*base[:-4], "--image-digest", "sha256:other", "-S", *base[-2:])
    assert code == 1  # -S ignores the script only


# --- butido's database flags -----------------------------------------------------------------


def pg_flags(url: str) -> list[str]:
    parsed = sa.engine.make_url(url)
    return [
        "--db-url", str(parsed.host), "--db-port", str(parsed.port or 5432),
        "--db-user", str(parsed.username), "--db-pw", str(parsed.password),
        "--db-name", str(parsed.database), "--db-timeout", "5",
    ]  # fmt: skip


def test_database_flags_name_the_postgresql_database_and_win_over_config(
    pg_url, example_repo, monkeypatch, capsys
) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    built = record_build(engine)
    engine.dispose()
    # config.toml names another database; the environment another host: the flags win.
    monkeypatch.setenv("BUTIDO_DATABASE_HOST", "nowhere.invalid")
    repo = ("--repo", str(example_repo))
    code, out = run_cli(*repo, *pg_flags(pg_url), "db", "jobs", "--json")
    assert code == 0 and [r["Job"] for r in json.loads(out)] == [built.job_uuid]
    # after the sub-command, too, and --db-password is --db-pw
    flags = pg_flags(pg_url)
    flags[flags.index("--db-pw")] = "--db-password"
    code, out = run_cli(*repo, "db", "jobs", "--json", *flags)
    assert code == 0 and len(json.loads(out)) == 1
    # without a repository config, host and name are enough to need
    code, _ = run_cli("--repo", "/nonexistent", "--db-url", "127.0.0.1", "db", "jobs")
    assert code == 1
    assert "the --db-* flags need a database host and name: give --db-name NAME" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--db-port", "0", "--db-port: 0 is out of range (1 to 65535)"),
        ("--db-port", "99999999999999999999", "--db-port: 99999999999999999999 is out of range"),
        ("--db-port", "x", "--db-port: 'x' is not an integer"),
        ("--db-timeout", "-1", "--db-timeout: -1 is out of range"),
    ],
)
def test_database_flag_values_are_checked(capsys, flag: str, value: str, message: str) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(flag, value, "db", "jobs")
    assert info.value.code == 2 and message in capsys.readouterr().err


# --- oversized numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "99999999999999999999"], "--limit: 99999999999999999999 is out of range"),
        (["--older-than", "99999999999999999999y"], "reaches before the year 1"),
        (["--newer-than", "99999999999999999999y"], "reaches before the year 1"),
    ],
)
def test_oversized_numbers_are_clear_errors(engine, db_url, capsys, args, message) -> None:
    try:
        code, _ = run_cli("db", "jobs", "--database-url", db_url, *args)
    except SystemExit as exc:  # a usage error of argparse
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and "Traceback" not in err


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_counts_the_rows_of_every_table(engine, db_url, example_repo) -> None:
    record_build(engine)
    record_build(engine, contents={"b.deb": b"b", "b.rpm": b"r"})
    code, out = run_cli("--repo", str(example_repo), "metrics", "--json", "--database-url", db_url)
    assert code == 0
    values = {r["metric"]: int(r["value"]) for r in json.loads(out)}
    assert values["packages"] == 29 and values["images"] == 1
    assert values["rows in submits"] == 2 and values["rows in jobs"] == 2
    assert values["rows in artifacts"] == 3 and values["rows in releases"] == 0


# --- db cli ----------------------------------------------------------------------------------


def butido(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    """``butido ARGS`` as a separate process (``db cli`` replaces its process)."""
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_butido.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_db_cli_opens_the_database(engine, db_url) -> None:
    record_build(engine)
    backend = sa.engine.make_url(db_url).get_backend_name()
    if backend == "postgresql":
        flags = pg_flags(db_url)
        stdin = "\\pset format unaligned\nSELECT 'count=' || count(*) FROM jobs;\n"
    else:
        if shutil.which("sqlite3") is None:
            from tests.conftest import unavailable

            unavailable("sqlite3 is not installed (scripts/ensure-services installs it)")
        flags = ["--database-url", db_url]
        stdin = "SELECT 'count=' || count(*) FROM jobs;\n"
    code, out = butido("--repo", "/nonexistent", *flags, "db", "cli", stdin=stdin)
    assert code == 0, out
    assert "count=1" in out


def test_db_cli_passes_the_password_in_the_environment_only(tmp_path: Path, pg_url) -> None:
    """A stand-in psql records what it was given: the password is not among its arguments."""
    record = tmp_path / "record"
    fake = tmp_path / "bin" / "psql"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "PW=$PGPASSWORD" >> {record}\n'
    )
    fake.chmod(0o755)
    flags = pg_flags(pg_url)
    password = "s3cret-only-in-the-environment"
    flags[flags.index("--db-pw") + 1] = password  # the stand-in does not connect
    path = f"{fake.parent}:{os.environ['PATH']}"
    code, out = butido("--repo", "/nonexistent", *flags, "db", "cli", env={"PATH": path})
    assert code == 0, out
    lines = record.read_text().splitlines()
    assert lines[-1] == f"PW={password}"
    assert password not in lines[:-1]
    assert lines[:-1] == ["-h", flags[1], "-p", flags[3], "-U", flags[5], "-d", flags[9]]


def test_db_cli_refuses_a_tool_of_the_other_database(tmp_path: Path, capsys) -> None:
    db = tmp_path / "b.sqlite"
    db.touch()
    code, _ = run_cli("--database-url", f"sqlite:///{db}", "db", "cli", "--tool", "psql")
    assert code == 1 and "--tool psql does not open sqlite databases" in capsys.readouterr().err


# --- release rm / new --update: confirmation on a terminal ------------------------------------


def on_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run butido with a pseudo-terminal as stdin and stderr; answer its question."""
    main_fd, sub_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_butido.cli.main", *args],
        stdin=sub_fd,
        stdout=subprocess.PIPE,
        stderr=sub_fd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    os.close(sub_fd)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 1)
            if ready:
                seen += os.read(main_fd, 4096)
        if b"[y/N]" in seen:
            os.write(main_fd, answer.encode() + b"\n")
        out, _ = proc.communicate(timeout=60)
        with_rest = seen
        while select.select([main_fd], [], [], 0.2)[0]:
            try:
                with_rest += os.read(main_fd, 4096)
            except OSError:
                break
    finally:
        os.close(main_fd)
    return proc.returncode, with_rest.decode(errors="replace") + out.decode()


def test_release_rm_asks_on_a_terminal(engine, db_url, example_repo, dirs, capsys) -> None:
    submit, _ = record_graph(engine, example_repo, "h", "8")
    repo = ["--repo", str(example_repo)]
    assert run_cli(*repo, "release", "new", submit, "--to", "default",
                   "--database-url", db_url)[0] == 0  # fmt: skip
    released = dirs["releases"] / "default" / "h-8.pkg"
    rm = [*repo, "release", "rm", "--from", "default", "h", "8", "--database-url", db_url]

    code, shown = on_terminal(rm, "n")
    assert "Remove the newest release of h 8 from default? [y/N]" in shown
    assert code == 1 and "not removed (declined)" in shown and released.is_file()

    code, _ = run_cli(*rm)  # no terminal to ask on: an error, nothing removed
    assert code == 1 and released.is_file()
    assert "confirmation needs a terminal (or pass --non-interactive)" in capsys.readouterr().err

    code, shown = on_terminal(rm, "y")
    assert code == 0 and f"removed {released}" in shown and not released.exists()

    assert run_cli(*repo, "release", "new", submit, "--to", "default",
                   "--database-url", db_url)[0] == 0  # fmt: skip
    code, out = run_cli(*rm, "--non-interactive")
    assert (code, out) == (0, f"removed {released}\n") and not released.exists()


def test_release_new_update_asks_on_a_terminal(engine, db_url, example_repo, dirs) -> None:
    submit, _ = record_graph(engine, example_repo, "h", "8")
    new = ["--repo", str(example_repo), "release", "new", submit, "--to", "default",
           "--database-url", db_url]  # fmt: skip
    assert run_cli(*new)[0] == 0
    code, shown = on_terminal([*new, "--update"], "n")
    assert code == 1 and "Going to update" in shown and "not updated (declined)" in shown
    code, shown = on_terminal([*new, "--update"], "y")
    assert code == 0 and "(updated)" in shown
    code, out = run_cli(*new, "--update", "--non-interactive")
    assert code == 0 and out.endswith("(updated)\n")


def test_db_job_script_numbering_and_highlighting(engine, db_url, example_repo, capsys) -> None:
    built = record_build(engine, inputs=inputs_for("#!/bin/bash\necho a\n"))
    job = ("--repo", str(example_repo), "db", "job", built.job_uuid, "--database-url", db_url)
    code, out = run_cli(*job, "-s", "--line-numbers")
    assert code == 0 and "1 | #!/bin/bash\n2 | echo a\n" in out
    code, out = run_cli(*job, "-s", "--no-line-numbers")
    assert code == 0 and "\n#!/bin/bash\necho a\n" in out
    code, out = run_cli(*job, "-s", "--highlighting")  # a theme is configured; piped: plain
    assert code == 0 and "\n#!/bin/bash\necho a\n" in out and "\x1b[" not in out
    no_config = ("--repo", "/nonexistent", *job[2:])
    code, _ = run_cli(*no_config, "-s", "--highlighting")
    assert code == 1 and "--highlighting needs script_highlight_theme" in capsys.readouterr().err
