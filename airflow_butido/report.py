"""The end-of-run report: what was built, reused, failed or not built, and why.

Pure: it folds the plan, the task states and the manifests/failure records into a value the
report task logs (and raises on) and ``butido build`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_butido.manifest import Manifest
from airflow_butido.plan import Plan

BUILT = "built"
REUSED = "reused"
FAILED = "failed"
NOT_BUILT = "not built"


@dataclass(frozen=True)
class PackageOutcome:
    task_id: str
    label: str
    outcome: str  # built | reused | failed | not built
    state: str | None  # the task state as the scheduler saw it
    message: str = ""
    log_tail: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()  # staging-relative paths


@dataclass(frozen=True)
class Finished:
    """What the report needs of a package task that succeeded: whether it reused an
    earlier build, and the artifacts. From its manifest, or read back from the build
    database (one query for a whole run, where the manifests are one XCom request each)."""

    reused: bool
    artifacts: tuple[str, ...]  # staging-relative paths

    @classmethod
    def of(cls, manifest: Manifest) -> Finished:
        return cls(manifest.reused, tuple(a.path for a in manifest.artifacts))


@dataclass(frozen=True)
class RunReport:
    submit_uuid: str
    image: str
    outcomes: tuple[PackageOutcome, ...]

    def of(self, outcome: str) -> list[PackageOutcome]:
        return [o for o in self.outcomes if o.outcome == outcome]

    @property
    def ok(self) -> bool:
        """Every planned package was built or reused."""
        return all(o.outcome in (BUILT, REUSED) for o in self.outcomes)

    def format(self) -> str:
        counts = ", ".join(
            f"{len(self.of(kind))} {kind}" for kind in (BUILT, REUSED, FAILED, NOT_BUILT)
        )
        lines = [f"submit {self.submit_uuid} on {self.image}: {counts}"]
        for o in self.outcomes:
            detail = f" ({o.message})" if o.message and o.outcome != FAILED else ""
            lines.append(f"  {o.outcome:<9} {o.label}{detail}")
        for o in self.of(FAILED):
            lines.append("")
            lines.append(f"{o.label} failed: {o.message or 'no message'}")
            lines.extend(f"  | {line}" for line in o.log_tail)
        return "\n".join(lines)


def summarize(
    plan: Plan,
    states: Mapping[str, str | None],
    manifests: Mapping[str, Manifest | Finished | None],
    failures: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> RunReport:
    """One outcome per planned package, in build order.

    ``states`` maps task ids to Airflow task states; ``manifests`` to the package tasks'
    manifests (or what the build database says of them: ``Finished``); ``failures`` to
    what a failed task recorded (``message``, ``log_tail``).
    """
    failures = failures or {}
    failed_ids = {t for t in plan.packages if states.get(t) == "failed" or t in plan.failures}
    outcomes = []
    for task_id in plan.packages:
        label = plan.labels.get(task_id, task_id)
        state = states.get(task_id)
        up_front = plan.reused.get(task_id)
        manifest = up_front or manifests.get(task_id)
        if up_front is not None:
            reason = up_front.reused_from.reason if up_front.reused_from else ""
            paths = tuple(a.path for a in up_front.artifacts)
            outcomes.append(
                PackageOutcome(
                    task_id, label, REUSED, state, f"up front: {reason}", artifacts=paths
                )
            )
        elif state == "success" and manifest is not None:
            finished = manifest if isinstance(manifest, Finished) else Finished.of(manifest)
            outcome = REUSED if finished.reused else BUILT
            outcomes.append(
                PackageOutcome(task_id, label, outcome, state, artifacts=finished.artifacts)
            )
        elif state == "failed" or task_id in plan.failures:
            failure = failures.get(task_id) or {"message": plan.failures.get(task_id)}
            tail = failure.get("log_tail") or ()
            if isinstance(tail, str):
                tail = tail.splitlines()
            message = str(failure.get("message") or "the task failed (see its log)")
            outcomes.append(
                PackageOutcome(task_id, label, FAILED, state, message, tuple(map(str, tail)))
            )
        else:
            culprits = [plan.labels[d] for d in plan.dependencies_of(task_id) if d in failed_ids]
            if culprits:
                message = f"dependency failed: {', '.join(culprits)}"
            elif state == "success":
                message = "the task returned no manifest"
            else:
                message = f"task state {state or 'none'}"
            outcomes.append(PackageOutcome(task_id, label, NOT_BUILT, state, message))
    return RunReport(plan.submit_uuid, plan.image, tuple(outcomes))


def report_json(report: RunReport) -> dict[str, Any]:
    """The report as the report task returns it (XCom) and ``butido build --json`` prints it."""
    return {
        "submit_uuid": report.submit_uuid,
        "image": report.image,
        "ok": report.ok,
        "packages": [
            {
                "task_id": o.task_id,
                "package": o.label,
                "outcome": o.outcome,
                "message": o.message,
                "artifacts": list(o.artifacts),
                "state": o.state,
                "log_tail": list(o.log_tail),
            }
            for o in report.outcomes
        ],
    }


def report_from_json(data: Mapping[str, Any]) -> RunReport:
    """The report back from :func:`report_json` (what ``butido trigger`` reads from XCom)."""
    return RunReport(
        str(data.get("submit_uuid") or ""),
        str(data.get("image") or ""),
        tuple(
            PackageOutcome(
                str(p.get("task_id") or ""),
                str(p.get("package") or ""),
                str(p.get("outcome") or NOT_BUILT),
                p.get("state"),
                str(p.get("message") or ""),
                tuple(str(line) for line in p.get("log_tail") or ()),
                tuple(str(path) for path in p.get("artifacts") or ()),
            )
            for p in data.get("packages") or ()
        ),
    )
