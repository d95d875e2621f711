"""The build key: what makes two builds of a package the same.

A build key is the sha256 of a canonical JSON of everything that determines the output of a
build: the rendered script, the phase list, the image digest, the container environment, the
source hashes, the patch contents and the sha256 of every dependency artifact the job
receives. The JSON (with the script replaced by its sha256) is stored with the job, so that a
rebuild can say which input changed.

``butido build``, the plan, the package task and ``butido find-artifact`` all compute the key
here and nowhere else. Pure: it reads the repository's files and git, never Docker or a
database.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_butido.errors import ButidoError, ConfigError
from airflow_butido.recipes.config import Config
from airflow_butido.recipes.package import Package
from airflow_butido.recipes.paths import confine
from airflow_butido.run_inputs import masked_env

KEY_FORMAT = 1

Env = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class BuildKeyInputs:
    script: str
    phases: Sequence[str]
    image_digest: str
    environment: Mapping[str, str] = field(default_factory=dict)
    source_hashes: Mapping[str, str] = field(default_factory=dict)
    patch_hashes: Mapping[str, str] = field(default_factory=dict)
    dependency_artifacts: Sequence[str] = ()

    def to_json(self) -> dict[str, Any]:
        """The canonical form hashed into the key and stored with the job."""
        return {
            "format": KEY_FORMAT,
            "script_sha256": hashlib.sha256(self.script.encode("utf-8")).hexdigest(),
            "phases": list(self.phases),
            "image_digest": self.image_digest,
            "environment": {k: str(v) for k, v in sorted(self.environment.items())},
            "source_hashes": dict(sorted(self.source_hashes.items())),
            "patch_hashes": dict(sorted(self.patch_hashes.items())),
            # The order in which dependencies deliver artifacts is not meaningful.
            "dependency_artifacts": sorted(self.dependency_artifacts),
        }

    @property
    def key(self) -> str:
        return build_key(self)


def canonical_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_key(inputs: BuildKeyInputs) -> str:
    return hashlib.sha256(canonical_json(inputs.to_json()).encode("utf-8")).hexdigest()


def compare_inputs(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Field-by-field differences of two stored build-key input documents."""
    diffs: list[str] = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if name not in old:
                    diffs.append(f"{key}: {name} added ({new[name]!r})")
                elif name not in new:
                    diffs.append(f"{key}: {name} removed (was {old[name]!r})")
                elif old[name] != new[name]:
                    diffs.append(f"{key}: {name} changed from {old[name]!r} to {new[name]!r}")
        elif isinstance(old, list) and isinstance(new, list) and key != "phases":
            for item in sorted(set(map(str, new)) - set(map(str, old))):
                diffs.append(f"{key}: {item} added")
            for item in sorted(set(map(str, old)) - set(map(str, new))):
                diffs.append(f"{key}: {item} removed")
        elif key == "script_sha256":
            diffs.append("script: the rendered script differs")
        else:
            diffs.append(f"{key}: changed from {old!r} to {new!r}")
    return diffs


# -- the inputs of a package as it would be built now ------------------------------------------


def source_hashes(package: Package) -> dict[str, str]:
    """Declared source hashes; sources are verified against them before a build."""
    return {src.name: f"{src.hash_type}:{src.hash}" for src in package.sources}


def patch_hashes(package: Package, repo_root: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for patch in package.patches:
        path = confine(repo_root, patch, what=f"{package.path}: patch {patch}")
        try:
            hashes[patch] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise ButidoError(f"{package.path}: patches: {patch}: {exc.strerror}") from exc
    return hashes


def git_environment(config: Config, repo_root: Path) -> Env:
    """``<git_author>=<user.name>`` and ``<git_commit_hash>=<HEAD>`` when configured."""
    containers = config.containers
    pairs: list[tuple[str, str]] = []
    if containers.git_author:
        pairs.append((containers.git_author, _git(repo_root, "config", "user.name")))
    if containers.git_commit_hash:
        pairs.append((containers.git_commit_hash, _git(repo_root, "rev-parse", "HEAD")))
    return tuple(pairs)


def _git(repo_root: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo_root), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"{repo_root}: git {' '.join(args)} failed: {exc}") from exc
    return done.stdout.strip()


def container_environment(package: Package, cli_env: Env, git_env: Env) -> Env:
    """butido's order (reference 4.3): -E variables, git variables, package environment."""
    return (*cli_env, *git_env, *(package.environment or ()))


def key_inputs(
    package: Package,
    config: Config,
    repo_root: Path,
    *,
    image_digest: str,
    env: Env,
    dependency_sha256: Sequence[str],
    script: str | None = None,
    git_env: Env | None = None,
) -> BuildKeyInputs:
    """The BuildKeyInputs of ``package`` built now.

    ``env`` is the run's ``-E`` variables; ``dependency_sha256`` the sha256 of every artifact
    the job receives (every artifact of every transitive dependency); ``script`` is rendered
    from the recipe and ``git_env`` read from the repository unless given.
    """
    if script is None:
        from airflow_butido.scripts.render import render_script

        script = render_script(package, config)
    if git_env is None:
        git_env = git_environment(config, repo_root)
    return BuildKeyInputs(
        script=script,
        phases=tuple(config.available_phases),
        image_digest=image_digest,
        # a secret's value is never stored, so it is not part of the key either
        environment=dict(
            masked_env(container_environment(package, env, git_env), config.secret_env)
        ),
        source_hashes=source_hashes(package),
        patch_hashes=patch_hashes(package, repo_root),
        dependency_artifacts=tuple(dependency_sha256),
    )
