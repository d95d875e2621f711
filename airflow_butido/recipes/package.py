"""A package: the merged, validated contents of one leaf ``pkg.toml`` and its layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_butido.recipes.dependency import Dependency

HASH_TYPES = ("sha1", "sha256", "sha512")


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    hash_type: str
    hash: str
    download_manually: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "hash": {"type": self.hash_type, "hash": self.hash},
            "download_manually": self.download_manually,
        }


@dataclass(frozen=True)
class Phase:
    """Exactly one of ``script`` (inline text) and ``path`` (unsupported by butido) is set."""

    name: str
    script: str | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"script": self.script} if self.script is not None else {"path": self.path}


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    version_is_semver: bool
    sources: tuple[Source, ...]
    dependencies: tuple[Dependency, ...]  # build first, then runtime, each as written
    patches: tuple[str, ...]  # repo-relative POSIX paths
    environment: tuple[tuple[str, str], ...] | None
    allowed_images: tuple[str, ...] | None
    denied_images: tuple[str, ...] | None
    phases: tuple[Phase, ...]
    meta: tuple[tuple[str, str], ...] | None
    path: str  # repo-relative path of the leaf pkg.toml
    layers: tuple[str, ...]  # repo-relative pkg.toml files merged, root first
    key: tuple[str, str] = field(init=False, repr=False, compare=False)  # (name, version)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.name, self.version))

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def build_dependencies(self) -> tuple[Dependency, ...]:
        return tuple(d for d in self.dependencies if d.kind == "build")

    @property
    def runtime_dependencies(self) -> tuple[Dependency, ...]:
        return tuple(d for d in self.dependencies if d.kind == "runtime")

    @property
    def environment_dict(self) -> dict[str, str]:
        return dict(self.environment or ())

    def phase(self, name: str) -> Phase | None:
        for phase in self.phases:
            if phase.name == name:
                return phase
        return None

    def source(self, name: str) -> Source | None:
        for source in self.sources:
            if source.name == name:
                return source
        return None

    def image_allowed(self, image: str) -> bool:
        """``allowed_images`` / ``denied_images`` against the full image name."""
        if self.allowed_images is not None and image not in self.allowed_images:
            return False
        return not (self.denied_images is not None and image in self.denied_images)

    def template_context(self) -> dict[str, Any]:
        """The package as scripts see it (``this.name``, ``this.dependencies.runtime``...).

        Dependencies appear as written (string or ``{name, condition}``), unfiltered by
        their condition; optional tables that are absent are left out, so a strict
        template referencing them fails.
        """
        deps: dict[str, list[Any]] = {"build": [], "runtime": []}
        for dep in self.dependencies:
            deps[dep.kind].append(_plain(dep.raw) if dep.raw is not None else dep_string(dep))
        ctx: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "version_is_semver": self.version_is_semver,
            "sources": {s.name: s.to_dict() for s in self.sources},
            "dependencies": deps,
            "patches": list(self.patches),
        }
        if self.environment is not None:
            ctx["environment"] = dict(self.environment)
        if self.allowed_images is not None:
            ctx["allowed_images"] = list(self.allowed_images)
        if self.denied_images is not None:
            ctx["denied_images"] = list(self.denied_images)
        if self.meta is not None:
            ctx["meta"] = dict(self.meta)
        ctx["phases"] = {p.name: p.to_dict() for p in self.phases}
        return ctx


def dep_string(dep: Dependency) -> str:
    return f"{dep.name} ={dep.version}"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
