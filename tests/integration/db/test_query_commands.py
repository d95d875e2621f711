"""The ``db`` query commands: filters, limits and the three output formats."""

from __future__ import annotations

import csv
import io
import json

import pytest

from .builds import record_build
from .conftest import run_cli

pytestmark = pytest.mark.postgres


@pytest.fixture
def history(engine, tmp_path):
    builds = [record_build(engine, package=("a", "1")) for _ in range(12)]
    builds.append(record_build(engine, package=("b", "2"), contents={"b.deb": b"b", "b.rpm": b"r"}))
    return builds


def test_db_jobs_defaults_to_ten_jobs_and_0_means_unlimited(db_url, history) -> None:
    code, out = run_cli("db", "jobs", "--database-url", db_url, "--json")
    assert code == 0
    jobs = json.loads(out)
    assert len({j["Job"] for j in jobs}) == 10
    assert jobs[0]["Package"] == "b" and [j["Type"] for j in jobs[:2]] == ["DEB", "RPM"]
    code, out = run_cli("db", "jobs", "--database-url", db_url, "--json", "-L", "0")
    assert len({j["Job"] for j in json.loads(out)}) == 13
    code, out = run_cli("db", "jobs", "--database-url", db_url, "--csv", "--limit", "3", "-p", "a")
    parsed = list(csv.reader(io.StringIO(out)))
    assert parsed[0] == ["Submit", "Job", "Time", "Host", "State", "Package", "Version",
                         "Distro", "Type"]  # fmt: skip
    assert len(parsed) == 4 and {r[5] for r in parsed[1:]} == {"a"}


def test_db_jobs_filters_by_submit_env_endpoint_and_time(db_url, history) -> None:
    last = history[-1]
    code, out = run_cli("db", "jobs", "--database-url", db_url, "-S", last.submit_uuid)
    assert {line.split("\t")[1] for line in out.splitlines()} == {last.job_uuid}
    code, out = run_cli("db", "jobs", "--database-url", db_url, "-E", "FLAVOR=slow")
    assert out == ""
    code, out = run_cli("db", "jobs", "--database-url", db_url, "-E", "FLAVOR=fast", "-L", "1")
    assert last.job_uuid in out
    code, out = run_cli("db", "jobs", "--database-url", db_url, "-e", "elsewhere")
    assert out == ""
    code, out = run_cli("db", "jobs", "--database-url", db_url, "--older-than", "1h")
    assert out == ""
    code, out = run_cli("db", "jobs", "--database-url", db_url, "--newer-than", "1h", "-L", "0")
    assert len(out.splitlines()) == 14  # b has two artifacts


def test_db_submits_submit_job_and_artifacts(db_url, history) -> None:
    code, out = run_cli("db", "submits", "--database-url", db_url, "--for-pkg", "b", "--json")
    (submit,) = json.loads(out)
    assert submit["For Package"] == "b" and submit["Commit"].endswith("(dirty)")
    code, out = run_cli("db", "submits", "--database-url", db_url, "--with-pkg", "a", "-L", "0")
    assert len(out.splitlines()) == 12
    code, out = run_cli("db", "submit", submit["UUID"], "--database-url", db_url)
    assert "Jobs         1 success" in out and "b.rpm" not in out and "RPM" in out
    code, out = run_cli("db", "job", history[-1].job_uuid, "--database-url", db_url, "--json")
    job = json.loads(out)
    assert job["State"] == "success" and job["build_key_inputs"]["phases"] == ["build"]
    assert job["log"].endswith("#BUTIDO:STATE:OK\n")
    code, out = run_cli("db", "artifacts", "--database-url", db_url, "-J", history[-1].job_uuid)
    assert [line.split("\t")[:2] for line in out.splitlines()] == [["b.rpm", "no"], ["b.deb", "no"]]
    code, out = run_cli("db", "images", "--database-url", db_url, "--csv")
    assert out == "Name\ndebian:bookworm\n"
    code, out = run_cli("db", "envvars", "--database-url", db_url, "--json")
    assert json.loads(out) == [{"Name": "FLAVOR", "Value": "fast"}]


def test_unknown_uuids_are_reported_without_a_traceback(db_url, engine, capsys) -> None:
    code, _ = run_cli("db", "job", "00000000-0000-0000-0000-000000000000", "--database-url", db_url)
    assert code == 1
    assert "no job 00000000-0000-0000-0000-000000000000" in capsys.readouterr().err


def test_db_commands_on_an_empty_database_ask_for_setup(tmp_path, capsys) -> None:
    code, _ = run_cli("db", "jobs", "--database-url", f"sqlite:///{tmp_path}/new.sqlite")
    assert code == 1 and "run `butido db setup`" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ("db", "job", "zz"),
        ("db", "submit", "zz"),
        ("db", "log-of", "zz"),
        ("db", "jobs", "-S", "zz"),
        ("db", "artifacts", "-J", "zz"),
        ("release", "new", "zz", "--to", "default"),
    ],
)
def test_a_malformed_uuid_is_a_usage_error_not_a_database_error(
    argv, db_url, engine, capsys
) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(*argv, "--database-url", db_url)
    assert info.value.code == 2
    assert "'zz' is not a UUID" in capsys.readouterr().err


def test_uuids_are_accepted_in_any_spelling(db_url, history) -> None:
    job = history[-1].job_uuid
    code, out = run_cli("db", "log-of", job.upper().replace("-", ""), "--database-url", db_url)
    assert code == 0 and out.endswith("#BUTIDO:STATE:OK\n")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:secret@host/db", "mysql://u:***@host/db: only PostgreSQL and SQLite"),
        ("nonsense", "invalid database URL 'nonsense'"),
    ],
)
def test_unsupported_database_urls_are_refused_by_name(url, message, capsys) -> None:
    code, _ = run_cli("db", "setup", "--database-url", url)
    assert code == 1 and message in capsys.readouterr().err


def test_a_query_does_not_create_a_missing_sqlite_database(tmp_path, capsys) -> None:
    path = tmp_path / "nowhere" / "butido.sqlite"
    code, _ = run_cli("db", "submits", "--database-url", f"sqlite:///{path}")
    assert code == 1
    assert f"database {path} does not exist: run `butido db setup`" in capsys.readouterr().err
    assert not path.parent.exists()


def test_db_submits_and_jobs_filter_by_commit_and_image(db_url, history) -> None:
    code, out = run_cli("db", "submits", "--database-url", db_url, "--commit", "ccc", "-L", "0")
    assert code == 0 and len(out.splitlines()) == 13
    code, out = run_cli("db", "submits", "--database-url", db_url, "--commit", "ddd")
    assert code == 0 and out == ""
    code, out = run_cli(
        "db", "submits", "--database-url", db_url, "-I", "debian:bookworm", "-L", "2"
    )
    assert len(out.splitlines()) == 2
    code, out = run_cli("db", "submits", "--database-url", db_url, "-I", "debian:bullseye")
    assert code == 0 and out == ""
    code, out = run_cli("db", "jobs", "--database-url", db_url, "-I", "debian:bullseye")
    assert code == 0 and out == ""
    code, out = run_cli("db", "jobs", "--database-url", db_url, "-I", "debian:bookworm", "-L", "1")
    assert history[-1].job_uuid in out


def test_db_releases_and_release_list_filter_by_store_package_and_time(
    db_url, engine, tmp_path
) -> None:
    from airflow_butido.release import release_new

    staging, releases = tmp_path / "staging", tmp_path / "releases"
    for package, store in ((("a", "1"), "default"), (("b", "2"), "stable")):
        built = record_build(engine, staging=staging, package=package)
        release_new(
            engine, submit_uuid=built.submit_uuid, store=store, staging_root=staging,
            releases_root=releases, stores=("default", "stable"),
        )  # fmt: skip

    def packages(*argv: str) -> list[str]:
        code, out = run_cli(*argv, "--database-url", db_url, "--json")
        assert code == 0
        return sorted(r["Package"] for r in json.loads(out))

    assert packages("db", "releases") == ["a", "b"]
    assert packages("db", "releases", "--to", "stable") == ["b"]
    assert packages("release", "list", "--to", "default") == ["a"]
    assert packages("db", "releases", "-p", "a") == ["a"]
    assert packages("db", "releases", "--newer-than", "1h") == ["a", "b"]
    assert packages("db", "releases", "--older-than", "1h") == []
    assert packages("release", "list", "-L", "1") in (["a"], ["b"])
