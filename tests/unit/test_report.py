"""The run report: outcomes from task states, manifests and failure records."""

from __future__ import annotations

from airflow_butido.manifest import ArtifactRef, Manifest
from airflow_butido.plan import Plan
from airflow_butido.report import BUILT, FAILED, NOT_BUILT, REUSED, summarize

PLAN = Plan(
    submit_uuid="s1",
    image="img:1",
    env=(),
    force_rebuild=False,
    requested=("app-1",),
    packages=("lib-1", "tool-1", "mid-1", "app-1"),
    labels={"lib-1": "lib 1", "tool-1": "tool 1", "mid-1": "mid 1", "app-1": "app 1"},
    edges=(("mid-1", "lib-1"), ("app-1", "mid-1"), ("app-1", "tool-1")),
)


def manifest(name: str, reused: bool = False) -> Manifest:
    artifact = ArtifactRef(f"{name}.deb", "0" * 64, 1, "s1", f"job-{name}")
    outcome = REUSED if reused else BUILT
    return Manifest(name, "1", "img:1", "s1", f"job-{name}", outcome, (artifact,))


def test_all_built_or_reused_is_ok():
    report = summarize(
        PLAN,
        dict.fromkeys(PLAN.packages, "success"),
        {t: manifest(t, reused=(t == "tool-1")) for t in PLAN.packages},
    )
    assert report.ok
    assert [o.outcome for o in report.outcomes] == [BUILT, REUSED, BUILT, BUILT]
    assert report.outcomes[0].artifacts == ("lib-1.deb",)
    assert "3 built, 1 reused, 0 failed, 0 not built" in report.format()


def test_failure_names_the_culprit_for_every_dependent():
    states = {
        "lib-1": "failed",
        "tool-1": "success",
        "mid-1": "upstream_failed",
        "app-1": "upstream_failed",
    }
    failures = {"lib-1": {"message": "lib 1: exit 2 in phase 'build'", "log_tail": ["x", "y"]}}
    report = summarize(PLAN, states, {"tool-1": manifest("tool-1")}, failures)
    assert not report.ok
    by_id = {o.task_id: o for o in report.outcomes}
    assert by_id["lib-1"].outcome == FAILED and by_id["lib-1"].log_tail == ("x", "y")
    assert by_id["mid-1"].outcome == NOT_BUILT
    assert by_id["mid-1"].message == "dependency failed: lib 1"
    assert by_id["app-1"].message == "dependency failed: lib 1"
    text = report.format()
    assert "lib 1 failed: lib 1: exit 2 in phase 'build'" in text and "  | y" in text


def test_failure_without_record_and_success_without_manifest_are_not_ok():
    states = {"lib-1": "failed", "tool-1": "success", "mid-1": None, "app-1": None}
    report = summarize(PLAN, states, {})
    by_id = {o.task_id: o for o in report.outcomes}
    assert by_id["lib-1"].message == "the task failed (see its log)"
    assert by_id["tool-1"].outcome == NOT_BUILT
    assert by_id["tool-1"].message == "the task returned no manifest"
    assert by_id["mid-1"].message == "dependency failed: lib 1"
