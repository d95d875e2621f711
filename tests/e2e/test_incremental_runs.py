"""The plan decides up front: what is reused never starts, a broken package fails alone, and
the report waits for every branch. ``butido build`` on the real Docker engine runs the same
plan, package and report tasks as an Airflow deployment."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.test_jobs import pkg_toml, write_repo
from tests.support import run_butido as butido

pytestmark = [pytest.mark.docker]


def depends(text: str, *deps: str) -> str:
    listed = ", ".join(f'"{d} =1"' for d in deps)
    return text.replace("runtime = []", f"runtime = [{listed}]")


def events(output: str) -> dict[str, list[tuple[float, str]]]:
    """``[  12.3s] task: text`` lines, per task."""
    found: dict[str, list[tuple[float, str]]] = {}
    for match in re.finditer(r"^\[\s*([\d.]+)s\] ([^:]+): (.*)$", output, re.M):
        found.setdefault(match[2], []).append((float(match[1]), match[3]))
    return found


def jobs(repo: Path) -> list[tuple[str, str, str]]:
    engine = sa.create_engine(f"sqlite:///{repo / 'b.sqlite'}")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select s.uuid, p.name, j.state from jobs j join packages p on p.id = j.package_id"
                " join submits s on s.id = j.submit_id order by j.id"
            )
        ).all()
    engine.dispose()
    return [(str(r[0]), r[1], r[2]) for r in rows]


@pytest.fixture
def diamond(tmp_path: Path, build_image: str) -> Path:
    """top needs left and right; left needs deep, which fails unless OK is set; right takes
    a while, so it is still building when deep has failed."""
    out = 'mkdir /outputs; echo "$1" > /outputs/'
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {
            "deep": pkg_toml(
                "deep", "1", '[ -n "$FOO" ] || exit 3\nmkdir /outputs; echo d > /outputs/deep-1.pkg'
            ),
            "left": depends(pkg_toml("left", "1", f"{out}left-1.pkg"), "deep"),
            "right": pkg_toml("right", "1", f"sleep 8\n{out}right-1.pkg"),
            "top": depends(pkg_toml("top", "1", f"{out}top-1.pkg"), "left", "right"),
            "alone": pkg_toml("alone", "1", f"{out}alone-1.pkg"),
        },
    )
    (repo / "airflow-butido.toml").write_text(f'database_url = "sqlite:///{repo / "b.sqlite"}"\n')
    return repo


def recorded_outcomes(repo: Path, submit: str) -> dict[str, str]:
    """How `butido db submit` says each package of the submit ended."""
    shown = butido(repo, "db", "submit", submit, "--json", "--database-url",
                   f"sqlite:///{repo / 'b.sqlite'}")  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return {p["package"]: p["outcome"] for p in json.loads(shown.stdout)["packages"]}


def test_a_failure_deep_in_a_diamond_waits_for_the_other_branch(diamond: Path) -> None:
    done = butido(diamond, "build", "top", "-I", "test", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    report = {p["package"]: p for p in result["packages"]}
    assert report["deep 1"]["outcome"] == "failed"
    assert report["left 1"]["outcome"] == "not built"
    assert report["top 1"]["outcome"] == "not built"
    assert report["right 1"]["outcome"] == "built"  # the other branch kept building
    seen = events(done.stderr)
    left_failed = min(t for t, text in seen["left-1"] if text.startswith("upstream_failed"))
    right_done = max(t for t, text in seen["right-1"] if text.startswith("built"))
    report_started = min(t for t, text in seen["report"] if text.startswith("running"))
    assert left_failed < right_done  # left was marked while right was still building
    assert report_started >= right_done  # and the report waited for right
    # the submit records how every package ended, the one outside the request too
    assert recorded_outcomes(diamond, result["submit_uuid"]) == {
        "deep": "failed", "left": "not built", "right": "built", "top": "not built",
        "alone": "not requested",
    }  # fmt: skip


def test_nothing_changed_starts_no_container(diamond: Path, docker_client) -> None:
    first = butido(diamond, "build", "top", "-I", "test", "-E", "FOO=1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 built, 0 reused" in first.stdout
    again = butido(diamond, "build", "top", "-I", "test", "-E", "FOO=1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 built, 4 reused" in again.stdout
    assert again.stdout.count("reused up front") == 4
    seen = events(again.stdout)
    assert not any(text == "running" for t in ("deep-1", "left-1", "right-1", "top-1")
                   for _, text in seen.get(t, []))  # fmt: skip
    recorded = jobs(diamond)
    second_submit = recorded[-1][0]
    assert (
        sorted(state for submit, _, state in recorded if submit == second_submit) == ["reused"] * 4
    )
    # the artifacts are where the first build put them
    created = again.stdout.split("Packages created:\n", 1)[1].split()
    assert len(created) == 4 and all(Path(p).is_file() for p in created)
    # A changed script rebuilds that package; its dependent reuses at run time when the new
    # output is byte-identical (early cut-off), and builds when it is not.
    script = diamond / "right" / "pkg.toml"
    script.write_text(script.read_text().replace("sleep 8", "sleep 1"))
    assert outcomes_of(diamond) == {
        "deep 1": "reused", "left 1": "reused", "right 1": "built", "top 1": "reused",
    }  # fmt: skip
    script.write_text(script.read_text().replace('echo "$1"', "echo changed"))
    assert outcomes_of(diamond) == {
        "deep 1": "reused", "left 1": "reused", "right 1": "built", "top 1": "built",
    }  # fmt: skip


def outcomes_of(repo: Path) -> dict[str, str]:
    done = butido(repo, "build", "top", "-I", "test", "-E", "FOO=1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return {p["package"]: p["outcome"] for p in json.loads(done.stdout)["packages"]}


def test_a_broken_package_fails_alone_in_a_nightly_run(diamond: Path) -> None:
    """A missing source fails that package's task at once; everything else builds."""
    deep = diamond / "deep" / "pkg.toml"
    deep.write_text(
        deep.read_text().replace(
            "[sources]",
            '[sources.src]\nurl = "https://example.com/deep.tar"\nhash.type = "sha1"\n'
            'hash.hash = "0000000000000000000000000000000000000000"',
        )
    )
    done = butido(diamond, "build", "top", "-I", "test", "-E", "FOO=1", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = {p["package"]: p for p in json.loads(done.stdout)["packages"]}
    assert report["deep 1"]["outcome"] == "failed"
    assert "source src" in report["deep 1"]["message"]
    assert report["right 1"]["outcome"] == "built"
    assert report["left 1"]["outcome"] == "not built"


def imported(stderr: str) -> set[str]:
    """The modules a process imported, from its ``-X importtime`` lines."""
    return {m[1] for m in re.finditer(r"^import time:.*\|\s*(\S+)$", stderr, re.M)}


def test_nothing_changed_is_decided_without_importing_airflow(
    diamond: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every package reused up front: the command plans, reports and records the run
    itself; Airflow (the DAG, the operators, the task runner) is never imported."""
    first = butido(diamond, "build", "top", "-I", "test", "-E", "FOO=1")
    assert first.returncode == 0, first.stdout + first.stderr
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # -X importtime, in the subprocess
    again = butido(diamond, "build", "top", "-I", "test", "-E", "FOO=1", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    modules = imported(again.stderr)
    assert "airflow_butido.planned_reuse" in modules  # the lines are there
    assert not {m for m in modules if m.split(".")[0] in ("airflow", "alembic")}
    assert "airflow_butido.dag_factory" not in modules
    # the same progress and report as a run through the DAG
    seen = events(again.stderr)
    assert [text for _, text in seen["plan"]] == ["running", "success"]
    assert [text for _, text in seen["report"]] == ["running", "success"]
    for task in ("deep-1", "left-1", "right-1", "top-1"):
        assert [text for _, text in seen[task]] == ["reused up front"]
    assert "alone-1" not in seen
    result = json.loads(again.stdout)
    assert {p["package"]: p["outcome"] for p in result["packages"]} == dict.fromkeys(
        ("deep 1", "left 1", "right 1", "top 1"), "reused"
    )
    assert len(result["paths"]) == 4 and all(Path(p).is_file() for p in result["paths"])
    # recorded: the submit with its run, how every package ended, the reused jobs
    monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
    assert recorded_outcomes(diamond, result["submit_uuid"]) == {
        "deep": "reused up front", "left": "reused up front", "right": "reused up front",
        "top": "reused up front", "alone": "not requested",
    }  # fmt: skip
    submit_uuid = uuid.UUID(result["submit_uuid"])
    assert sorted(
        (name, state) for submit, name, state in jobs(diamond) if uuid.UUID(submit) == submit_uuid
    ) == [("deep", "reused"), ("left", "reused"), ("right", "reused"), ("top", "reused")]
    from airflow_butido.db import schema

    engine = sa.create_engine(f"sqlite:///{diamond / 'b.sqlite'}")
    with engine.connect() as conn:
        submits = schema.submits
        dag_id, run_id = conn.execute(
            sa.select(submits.c.dag_id, submits.c.run_id).where(
                submits.c.uuid == result["submit_uuid"]
            )
        ).one()
    engine.dispose()
    assert dag_id == "butido_test" and run_id.startswith("local__")
