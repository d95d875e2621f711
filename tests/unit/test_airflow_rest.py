"""The REST API v2 client and `butido trigger` against a scripted fake of Airflow's API."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_butido import airflow_rest
from airflow_butido.airflow_rest import AirflowApiError, AirflowClient
from airflow_butido.cli.main import main


class FakeResponse:
    def __init__(self, status: int, body: Any = None) -> None:
        self.status_code = status
        self._body = body
        self.content = b"" if body is None else json.dumps(body).encode()
        self.text = self.content.decode()
        self.reason = "reason"

    def json(self) -> Any:
        return self._body


class FakeAirflow:
    """Answers like Airflow's API server; records every request."""

    def __init__(self, *, tasks: int = 3, final_state: str = "success", polls: int = 1) -> None:
        self.headers: dict[str, str] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.tasks = [
            {"task_id": f"p-{i}", "state": "success", "duration": 1.5} for i in range(tasks)
        ]
        self.final_state = final_state
        self.polls_left = polls
        self.fail_next: list[int] = []

    def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        path = url.split("://", 1)[1].split("/", 1)[1]
        self.calls.append((method, "/" + path, kwargs))
        if self.fail_next:
            return FakeResponse(self.fail_next.pop(0), {"detail": "busy"})
        if path == "auth/token":
            if kwargs["json"] != {"username": "ci", "password": "pw"}:
                return FakeResponse(401, {"detail": "Invalid credentials"})
            return FakeResponse(201, {"access_token": "tok"})
        if self.headers.get("Authorization") != "Bearer tok":
            return FakeResponse(401, {"detail": "Not authenticated"})
        if path.endswith("/dagRuns") and method == "POST":
            return FakeResponse(200, {"dag_run_id": "run1"})
        if path.endswith("/taskInstances"):
            params = kwargs["params"]
            rows = self.tasks[params["offset"] : params["offset"] + params["limit"]]
            return FakeResponse(200, {"task_instances": rows, "total_entries": len(self.tasks)})
        if "/xcomEntries/" in path:
            return FakeResponse(200, {"value": {"packages": [{"artifacts": ["p-0.pkg"]}]}})
        if path.endswith("/dagRuns/run1"):
            if self.polls_left > 0:
                self.polls_left -= 1
                return FakeResponse(200, {"state": "running"})
            return FakeResponse(200, {"state": self.final_state})
        if method == "PATCH":
            return FakeResponse(200, {"is_paused": False})
        return FakeResponse(404, {"detail": "Not found"})


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(airflow_rest.time, "sleep", lambda _s: None)


def test_login_then_bearer_token_on_every_call():
    fake = FakeAirflow()
    client = AirflowClient("http://af", username="ci", password="pw", session=fake)
    assert client.login() == "tok"
    client.set_paused("butido_x", False)
    assert fake.calls[1][:2] == ("PATCH", "/api/v2/dags/butido_x")


def test_bad_credentials_name_the_status_and_detail():
    client = AirflowClient("http://af", username="ci", password="nope", session=FakeAirflow())
    with pytest.raises(AirflowApiError, match="HTTP 401: Invalid credentials"):
        client.login()


def test_task_instances_are_paginated_past_100():
    fake = FakeAirflow(tasks=250)
    client = AirflowClient("http://af", token="tok", session=fake)
    rows = client.task_instances("d", "run1")
    assert len(rows) == 250 and rows[-1]["task_id"] == "p-249"
    offsets = [c[2]["params"]["offset"] for c in fake.calls]
    assert offsets == [0, 100, 200]


def test_server_errors_are_retried_then_reported():
    fake = FakeAirflow()
    client = AirflowClient("http://af", token="tok", session=fake, retries=2)
    fake.fail_next = [503, 500]
    assert client.dag_run("d", "run1")["state"] == "running"
    fake.fail_next = [503, 503, 503]
    with pytest.raises(AirflowApiError, match="HTTP 503"):
        client.dag_run("d", "run1")


@pytest.mark.parametrize(("final", "code"), [("success", 0), ("failed", 1)])
def test_trigger_exits_with_the_run_state(monkeypatch, capsys, final, code):
    fake = FakeAirflow(final_state=final)
    monkeypatch.setattr(
        airflow_rest.requests,
        "Session",
        lambda: fake,  # the client's default session
    )
    argv = ["trigger", "--airflow", "http://af", "--user", "ci", "--password", "pw"]
    argv += ["--dag-id", "butido_x", "--poll", "0", "a", "b 2", "-I", "x", "-E", "K=v"]
    assert main(argv) == code
    out = capsys.readouterr().out
    assert "triggered butido_x run run1" in out and f"run run1: {final}" in out
    assert "artifact: p-0.pkg" in out
    trigger = next(c for c in fake.calls if c[0] == "POST" and c[1].endswith("/dagRuns"))
    body = dict(trigger[2]["json"])
    assert re.fullmatch(
        r"butido__a\+b-2__\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", body.pop("dag_run_id")
    )
    assert body == {
        "logical_date": None,
        "conf": {"packages": ["a", "b 2"], "env": {"K": "v"}, "force_rebuild": False},
    }
    assert any(c[0] == "PATCH" and c[2]["json"] == {"is_paused": False} for c in fake.calls)


def test_trigger_timeout_exit_code_and_json_output(monkeypatch, capsys):
    fake = FakeAirflow(polls=10**6)
    monkeypatch.setattr(airflow_rest.requests, "Session", lambda: fake)
    argv = ["trigger", "--airflow", "http://af", "--user", "ci", "--password", "pw"]
    argv += ["--dag-id", "d", "--timeout", "0", "--json", "a", "-I", "x"]
    assert main(argv) == 3
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["state"] == "running" and result["run_id"] == "run1"
    assert "triggered d run run1" in captured.err


def test_trigger_with_a_token_from_the_environment_skips_the_login(monkeypatch, capsys):
    fake = FakeAirflow()
    monkeypatch.setattr(airflow_rest.requests, "Session", lambda: fake)
    monkeypatch.setenv("BUTIDO_AIRFLOW_TOKEN", "tok")
    monkeypatch.delenv("BUTIDO_AIRFLOW_USER", raising=False)
    argv = ["trigger", "--airflow", "http://af", "--dag-id", "d", "--poll", "0", "a", "-I", "x"]
    assert main(argv) == 0
    assert not any(c[1] == "/auth/token" for c in fake.calls)
    assert "run run1: success" in capsys.readouterr().out


def test_trigger_with_a_bad_token_names_the_status_without_a_traceback(monkeypatch, capsys):
    fake = FakeAirflow()
    monkeypatch.setattr(airflow_rest.requests, "Session", lambda: fake)
    monkeypatch.setenv("BUTIDO_AIRFLOW_TOKEN", "expired")
    argv = ["trigger", "--airflow", "http://af", "--dag-id", "d", "a", "-I", "x"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "HTTP 401: Not authenticated" in err and "Traceback" not in err


def test_trigger_shows_why_the_plan_failed(monkeypatch, capsys):
    """A run the plan refuses (bad input) ends with the plan's message, not just a state."""
    from airflow_butido.cli import trigger
    from airflow_butido.operators.plan import FAILURE_XCOM_KEY

    assert trigger.FAILURE_XCOM_KEY == FAILURE_XCOM_KEY
    fake = FakeAirflow(final_state="failed")
    fake.tasks = [
        {"task_id": "plan", "state": "failed"},
        {"task_id": "p-0", "state": "upstream_failed"},
        {"task_id": "report", "state": "failed"},
    ]
    real = fake.request

    def request(method: str, url: str, **kwargs: Any) -> FakeResponse:
        if url.endswith("/taskInstances/plan/xcomEntries/failure"):
            fake.calls.append((method, url, kwargs))
            message = "package 'nosuch' not found in the repository\nsecond problem"
            return FakeResponse(200, {"value": {"message": message}})
        if "/xcomEntries/" in url:
            fake.calls.append((method, url, kwargs))
            return FakeResponse(404, {"detail": "not found"})
        return real(method, url, **kwargs)

    fake.request = request  # type: ignore[method-assign]
    monkeypatch.setattr(airflow_rest.requests, "Session", lambda: fake)
    argv = ["trigger", "--airflow", "http://af", "--user", "ci", "--password", "pw"]
    base = [*argv, "--dag-id", "d", "--poll", "0", "nosuch", "-I", "x"]
    assert main(base) == 1
    out = capsys.readouterr().out
    assert "plan failed: package 'nosuch' not found in the repository\n    second problem" in out
    assert main([*base, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["failures"] == {
        "plan": "package 'nosuch' not found in the repository\nsecond problem"
    }


def test_run_ids_say_what_was_requested():
    from airflow_butido.cli.trigger import run_id_for

    now = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    assert run_id_for(["greet-suite"], now) == "butido__greet-suite__2026-11-30T12:00:00.123456"
    assert run_id_for([], now).startswith("butido__default__")
    assert run_id_for(["a b/c", "d 1"], now).startswith("butido__a-b_c+d-1__")
    long = run_id_for([f"pkg{i:04d}" for i in range(100)], now)
    assert len(long) < 250 and "..." in long
