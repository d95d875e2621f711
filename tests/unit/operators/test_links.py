"""Extra links and asset events of package tasks, from the manifest they leave."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_butido.operators import links

KEY = SimpleNamespace(dag_id="butido_bookworm", run_id="r:1", task_id="z-26", map_index=-1)
BUILT = {
    "job_uuid": "j2",
    "outcome": "built",
    "artifacts": [{"path": "z-26.pkg", "job_uuid": "j2"}],
    "reused_from": None,
}
REUSED = {
    "job_uuid": "j3",
    "outcome": "reused",
    "artifacts": [{"path": "z-26.pkg", "job_uuid": "j1"}],
    "reused_from": {"job_uuid": "j1", "submit_uuid": "s1", "reason": "same key"},
}


@pytest.fixture
def xcom(monkeypatch) -> dict[str, Any]:
    from airflow.sdk.bases.xcom import BaseXCom

    values: dict[str, Any] = {}
    monkeypatch.setattr(BaseXCom, "get_value", lambda ti_key, key: values.get(key))
    return values


def _links(op: Any = None) -> dict[str, str]:
    return {link.name: link.get_link(op, ti_key=KEY) for link in links.PACKAGE_TASK_LINKS}


def test_a_built_package_links_its_record_and_artifacts(xcom):
    xcom["return_value"] = BUILT
    got = _links()
    assert got["Build record"] == "/butido/tasks/butido_bookworm/r%3A1/z-26"
    assert got["Artifacts"] == "/butido/jobs/j2#artifacts" and got["Reused from"] == ""


def test_a_reused_package_links_the_run_that_built_it(xcom):
    xcom["return_value"] = REUSED
    got = _links()
    assert got["Reused from"] == "/butido/jobs/j1/run"
    assert got["Artifacts"] == "/butido/jobs/j1#artifacts"  # the producer's job


def test_a_failed_package_links_its_record_and_a_skipped_one_nothing(xcom):
    xcom["failure"] = {"message": "boom"}
    assert _links() == {
        "Build record": "/butido/tasks/butido_bookworm/r%3A1/z-26",
        "Reused from": "",
        "Artifacts": "",
    }
    xcom.clear()
    assert set(_links().values()) == {""}


def test_links_use_what_the_task_just_left_without_asking_xcom(monkeypatch):
    from airflow.sdk.bases.xcom import BaseXCom

    from airflow_butido.package_build import LeftValues

    asked: list[str] = []
    monkeypatch.setattr(BaseXCom, "get_value", lambda ti_key, key: asked.append(key))
    task = SimpleNamespace(left_values=LeftValues("r:1", "z-26", {"return_value": REUSED}))
    got = _links(task)
    assert got["Reused from"] == "/butido/jobs/j1/run" and asked == []
    task.left_values = LeftValues("r:1", "z-26", {"failure": {"message": "boom"}})
    assert _links(task)["Build record"] == "/butido/tasks/butido_bookworm/r%3A1/z-26"
    assert asked == []
    # another task instance's values are not taken for this one's
    task.left_values = LeftValues("r:0", "z-26", {"return_value": BUILT})
    assert set(_links(task).values()) == {""}
    assert "return_value" in asked


def test_the_plan_links_its_submit(xcom):
    xcom["return_value"] = {"submit_uuid": "s9"}
    (link,) = links.PLAN_TASK_LINKS
    assert link.get_link(None, ti_key=KEY) == "/butido/submits/s9"


def test_new_artifacts_update_the_asset_a_reuse_does_not():
    from airflow_butido.assets import package_asset
    from airflow_butido.operators.build import PackageBuildOperator

    asset = package_asset("bookworm", "z", "26")

    def operator() -> PackageBuildOperator:
        return PackageBuildOperator(
            task_id="z-26", repo_path="/r", package_name="z", package_version="26",
            image="img", outlets=[asset],
        )  # fmt: skip

    events: dict[Any, Any] = {}

    class Accessors(dict):
        def __missing__(self, key: Any) -> Any:
            self[key] = SimpleNamespace(extra={})
            return self[key]

    built, accessors = operator(), Accessors()
    built.announce({"outlet_events": accessors}, BUILT)
    assert built.outlets == [asset] and accessors[asset].extra == BUILT
    reused = operator()
    reused.announce({"outlet_events": events}, REUSED)
    assert reused.outlets == [] and not events  # no outlet left: Airflow emits nothing
    assert asset.uri == "butido://bookworm/z/26"
