"""``-E NAME=VALUE`` reads the same on every command that takes it (the cases:
tests.support.ENV_ARG_CASES); commands with a database: tests/integration/db."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_butido import airflow_rest
from airflow_butido.cli.main import main
from airflow_butido.errors import ButidoError
from tests.support import ENV_ARG_CASES, ENV_NOT_ALLOWED_CASE
from tests.unit._repos import write_repo
from tests.unit.cli.runner import butido_fixture
from tests.unit.recipes import repo_factory
from tests.unit.test_airflow_rest import FakeAirflow

run = butido_fixture()

CASES = [pytest.param(arg, error, id=case) for case, arg, error in ENV_ARG_CASES]


@pytest.mark.parametrize(("arg", "error"), CASES)
def test_tree_of(run, tmp_path: Path, arg: str, error: str | None) -> None:
    condition = '{ name = "b =1", condition.env_eq = { FLAVOR = "a=b" } }'
    root = repo_factory.write_repo(
        tmp_path,
        {"a/pkg.toml": repo_factory.leaf("a", "1", [condition]),
         "b/pkg.toml": repo_factory.leaf("b", "1")},
    )  # fmt: skip
    code, out, err = run("--repo", root, "tree-of", "a", "-E", arg)
    if error is None:
        assert (code, out) == (0, "a 1\n└── b 1\n")  # the condition FLAVOR == "a=b" holds
    else:
        assert code == 1 and error in err and "Traceback" not in err


@pytest.mark.parametrize(("arg", "error"), CASES)
def test_trigger(monkeypatch, capsys, arg: str, error: str | None) -> None:
    """Checked before anything goes over the network; the value reaches the run conf."""
    fake = FakeAirflow()
    monkeypatch.setattr(airflow_rest.requests, "Session", lambda: fake)
    monkeypatch.setattr(airflow_rest.time, "sleep", lambda _s: None)
    argv = ["trigger", "--airflow", "http://af", "--user", "ci", "--password", "pw"]
    argv += ["--dag-id", "butido_x", "--poll", "0", "a", "-I", "x", "-E", arg]
    code = main(argv)
    err = capsys.readouterr().err
    if error is None:
        posted = next(c for c in fake.calls if c[0] == "POST" and c[1].endswith("/dagRuns"))
        assert code == 0 and posted[2]["json"]["conf"]["env"] == {"FLAVOR": "a=b"}
    else:
        assert code == 1 and error in err and fake.calls == []


@pytest.fixture
def build_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    return write_repo(tmp_path / "repo", {"a/1": ""}, check_env_names=True, allowed_env=["FLAVOR"])


class RecordingPlan:
    """Stands in for the plan: records the run conf and stops the run."""

    confs: list[dict[str, Any]] = []

    def __call__(self, repo_path: Any, image: str, request: Any, **_kwargs: Any) -> Any:
        self.confs.append(request.to_conf())
        raise ButidoError("stopped by the test")


@pytest.mark.parametrize(("arg", "error"), CASES)
def test_build(build_repo: Path, monkeypatch, capsys, arg: str, error: str | None) -> None:
    from airflow_butido import run_steps

    recording = RecordingPlan()
    monkeypatch.setattr(run_steps, "plan_run", recording)
    RecordingPlan.confs.clear()
    code = main(["--repo", str(build_repo), "build", "a", "-I", "one", "-E", arg])
    err = capsys.readouterr().err
    if error is None:
        assert RecordingPlan.confs[0]["env"] == {"FLAVOR": "a=b"}
    else:
        assert code == 1 and error in err and RecordingPlan.confs == []


def test_build_refuses_a_name_not_in_allowed_env_before_any_container(
    build_repo: Path, capsys
) -> None:
    """The real plan, in process: it stops the run; no package task starts."""
    _case, arg, name = ENV_NOT_ALLOWED_CASE
    code = main(["--repo", str(build_repo), "build", "a", "-I", "one", "-E", arg])
    shown = "".join(capsys.readouterr())
    assert code == 1
    assert f"environment variable {name} is not allowed" in shown
    assert "plan: failed" in shown and "] a" not in shown  # no package task ran
