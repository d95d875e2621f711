"""The artifact manifest: what a package hands its dependents, the report and CI (XCom).

A manifest names files, never holds them: each artifact's store-relative path, sha256 and
size, and where it lies (the staging directory of the submit that built it, or a release
store when the staged copy is gone). It carries a version so that a reader can refuse what it
does not understand instead of misreading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MANIFEST_KIND = "butido.manifest"
MANIFEST_VERSION = 2

BUILT = "built"
REUSED = "reused"
OUTCOMES = (BUILT, REUSED)

# Beside the manifest (``return_value``), the XCom a failed package task leaves for the
# report and CI: the message and the log tail.
FAILURE_XCOM_KEY = "failure"


class ManifestError(ValueError):
    """Data that is not a manifest this version understands."""


@dataclass(frozen=True)
class ArtifactRef:
    """One artifact: a file in a store, and the job that produced it."""

    path: str  # relative to the producing submit's staging directory (or the release store)
    sha256: str
    size: int
    submit_uuid: str | None = None  # whose staging directory holds it
    job_uuid: str | None = None  # the job that built it
    store: str | None = None  # the release store holding it when the staged copy is gone

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "submit_uuid": self.submit_uuid,
            "job_uuid": self.job_uuid,
        }
        if self.store:
            data["store"] = self.store
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArtifactRef:
        try:
            return cls(
                path=str(data["path"]),
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                submit_uuid=_opt(data.get("submit_uuid")),
                job_uuid=_opt(data.get("job_uuid")),
                store=_opt(data.get("store")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"artifact entry {dict(data)!r}: {exc}") from exc

    @property
    def location(self) -> tuple[str, str]:
        """What makes two references the same file: (store or submit, path)."""
        return (self.store or self.submit_uuid or "", self.path)


@dataclass(frozen=True)
class ReusedFrom:
    """The earlier job whose artifacts were reused, and why."""

    job_uuid: str
    submit_uuid: str
    reason: str
    run: str | None = None  # "<dag_id>/<run_id>" of the run that built it, when known

    def to_json(self) -> dict[str, Any]:
        return {
            "job_uuid": self.job_uuid,
            "submit_uuid": self.submit_uuid,
            "reason": self.reason,
            "run": self.run,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReusedFrom:
        return cls(
            str(data["job_uuid"]),
            str(data["submit_uuid"]),
            str(data.get("reason") or ""),
            _opt(data.get("run")),
        )


@dataclass(frozen=True)
class Manifest:
    """What one package task produced (or reused) in one run."""

    package: str
    version: str
    image: str
    submit_uuid: str  # the run's submit
    job_uuid: str  # this run's job of the package
    outcome: str  # built | reused
    artifacts: tuple[ArtifactRef, ...]
    inputs: tuple[ArtifactRef, ...] = ()  # the dependency artifacts it received
    endpoint: str = ""
    build_key: str | None = None
    reused_from: ReusedFrom | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ManifestError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")

    @property
    def label(self) -> str:
        return f"{self.package} {self.version}"

    @property
    def reused(self) -> bool:
        return self.outcome == REUSED

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": MANIFEST_KIND,
            "manifest_version": MANIFEST_VERSION,
            "package": self.package,
            "version": self.version,
            "image": self.image,
            "submit_uuid": self.submit_uuid,
            "job_uuid": self.job_uuid,
            "outcome": self.outcome,
            "endpoint": self.endpoint,
            "build_key": self.build_key,
            "artifacts": [a.to_json() for a in self.artifacts],
            "inputs": [a.to_json() for a in self.inputs],
            "reused_from": self.reused_from.to_json() if self.reused_from else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        if not is_manifest(data):
            raise ManifestError(
                f"not a {MANIFEST_KIND} version {MANIFEST_VERSION} document: "
                f"kind {data.get('kind')!r}, version {data.get('manifest_version')!r}"
            )
        try:
            reused = data.get("reused_from")
            return cls(
                package=str(data["package"]),
                version=str(data["version"]),
                image=str(data["image"]),
                submit_uuid=str(data["submit_uuid"]),
                job_uuid=str(data["job_uuid"]),
                outcome=str(data["outcome"]),
                artifacts=tuple(ArtifactRef.from_json(a) for a in data.get("artifacts") or ()),
                inputs=tuple(ArtifactRef.from_json(a) for a in data.get("inputs") or ()),
                endpoint=str(data.get("endpoint") or ""),
                build_key=_opt(data.get("build_key")),
                reused_from=ReusedFrom.from_json(reused) if reused else None,
            )
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"manifest of {data.get('package')!r}: missing {exc}") from exc


def is_manifest(data: object) -> bool:
    """Whether ``data`` (an XCom value) is a manifest of this version."""
    return (
        isinstance(data, Mapping)
        and data.get("kind") == MANIFEST_KIND
        and data.get("manifest_version") == MANIFEST_VERSION
    )


def _opt(value: object) -> str | None:
    return None if value in (None, "") else str(value)
