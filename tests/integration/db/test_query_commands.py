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
    code, out = run_cli("db", "jobs", "--db-url", db_url, "--json")
    assert code == 0
    jobs = json.loads(out)
    assert len({j["Job"] for j in jobs}) == 10
    assert jobs[0]["Package"] == "b" and [j["Type"] for j in jobs[:2]] == ["DEB", "RPM"]
    code, out = run_cli("db", "jobs", "--db-url", db_url, "--json", "-L", "0")
    assert len({j["Job"] for j in json.loads(out)}) == 13
    code, out = run_cli("db", "jobs", "--db-url", db_url, "--csv", "--limit", "3", "-p", "a")
    parsed = list(csv.reader(io.StringIO(out)))
    assert parsed[0] == ["Submit", "Job", "Time", "Host", "State", "Package", "Version",
                         "Distro", "Type"]  # fmt: skip
    assert len(parsed) == 4 and {r[5] for r in parsed[1:]} == {"a"}


def test_db_jobs_filters_by_submit_env_endpoint_and_time(db_url, history) -> None:
    last = history[-1]
    code, out = run_cli("db", "jobs", "--db-url", db_url, "-S", last.submit_uuid)
    assert {line.split("\t")[1] for line in out.splitlines()} == {last.job_uuid}
    code, out = run_cli("db", "jobs", "--db-url", db_url, "-E", "FLAVOR=slow")
    assert out == ""
    code, out = run_cli("db", "jobs", "--db-url", db_url, "-E", "FLAVOR=fast", "-L", "1")
    assert last.job_uuid in out
    code, out = run_cli("db", "jobs", "--db-url", db_url, "-e", "elsewhere")
    assert out == ""
    code, out = run_cli("db", "jobs", "--db-url", db_url, "--older-than", "1h")
    assert out == ""
    code, out = run_cli("db", "jobs", "--db-url", db_url, "--newer-than", "1h", "-L", "0")
    assert len(out.splitlines()) == 14  # b has two artifacts


def test_db_submits_submit_job_and_artifacts(db_url, history) -> None:
    code, out = run_cli("db", "submits", "--db-url", db_url, "--for-pkg", "b", "--json")
    (submit,) = json.loads(out)
    assert submit["For Package"] == "b" and submit["Commit"].endswith("(dirty)")
    code, out = run_cli("db", "submits", "--db-url", db_url, "--with-pkg", "a", "-L", "0")
    assert len(out.splitlines()) == 12
    code, out = run_cli("db", "submit", submit["UUID"], "--db-url", db_url)
    assert "Jobs         1 success" in out and "b.rpm" not in out and "RPM" in out
    code, out = run_cli("db", "job", history[-1].job_uuid, "--db-url", db_url, "--json")
    job = json.loads(out)
    assert job["State"] == "success" and job["build_key_inputs"]["phases"] == ["build"]
    assert job["log"].endswith("#BUTIDO:STATE:OK\n")
    code, out = run_cli("db", "artifacts", "--db-url", db_url, "-J", history[-1].job_uuid)
    assert [line.split("\t")[:2] for line in out.splitlines()] == [["b.rpm", "no"], ["b.deb", "no"]]
    code, out = run_cli("db", "images", "--db-url", db_url, "--csv")
    assert out == "Name\ndebian:bookworm\n"
    code, out = run_cli("db", "envvars", "--db-url", db_url, "--json")
    assert json.loads(out) == [{"Name": "FLAVOR", "Value": "fast"}]


def test_unknown_uuids_are_reported_without_a_traceback(db_url, engine, capsys) -> None:
    code, _ = run_cli("db", "job", "00000000-0000-0000-0000-000000000000", "--db-url", db_url)
    assert code == 1
    assert "no job 00000000-0000-0000-0000-000000000000" in capsys.readouterr().err


def test_db_commands_on_an_empty_database_ask_for_setup(tmp_path, capsys) -> None:
    code, _ = run_cli("db", "jobs", "--db-url", f"sqlite:///{tmp_path}/new.sqlite")
    assert code == 1 and "run `butido db setup`" in capsys.readouterr().err
