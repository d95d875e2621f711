"""The build-key inputs of a package as it would be built now.

Both the build (to record and look up its key) and ``butido find-artifact`` must
compute these the same way, so they live here, in one function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_butido.db.reuse import BuildKeyInputs
from airflow_butido.errors import ButidoError
from airflow_butido.recipes.paths import confine


def source_hashes(package: Any) -> dict[str, str]:
    """Declared source hashes; sources are verified against them before a build."""
    return {src.name: f"{src.hash_type}:{src.hash}" for src in package.sources}


def patch_hashes(package: Any, repo_root: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for patch in package.patches:
        path = confine(repo_root, patch, what=f"{package.path}: patch {patch}")
        try:
            hashes[patch] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise ButidoError(f"{package.path}: patches: {patch}: {exc.strerror}") from exc
    return hashes


def job_environment(
    package: Any,
    config: Any,
    repo_root: Path,
    env: Mapping[str, str] | Sequence[tuple[str, str]],
    git_env: Sequence[tuple[str, str]] | None = None,
) -> dict[str, str]:
    """The variables the container receives (``-E``, git variables, package
    environment; later wins). ``git_env`` is read from the repository when None."""
    from airflow_butido.jobs import container_environment, git_environment

    pairs = tuple(env.items()) if isinstance(env, Mapping) else tuple(env)
    if git_env is None:
        git_env = git_environment(config, repo_root)
    return dict(container_environment(package, pairs, tuple(git_env)))


def current_build_inputs(
    package: Any,
    config: Any,
    repo_root: Path,
    *,
    image_digest: str,
    env: Mapping[str, str] | Sequence[tuple[str, str]],
    dependency_artifacts: Sequence[str],
    script: str | None = None,
    git_env: Sequence[tuple[str, str]] | None = None,
) -> BuildKeyInputs:
    """BuildKeyInputs of ``package``; ``script`` is rendered from the recipe unless
    given; ``dependency_artifacts`` are the sha256 of the artifacts the job receives
    (every artifact of every transitive dependency); ``git_env`` is read from the
    repository unless given (the build passes the one its container gets)."""
    if script is None:
        from airflow_butido.scripts.render import render_script

        script = render_script(package, config)
    return BuildKeyInputs(
        script=script,
        phases=tuple(config.available_phases),
        image_digest=image_digest,
        environment=job_environment(package, config, repo_root, env, git_env),
        source_hashes=source_hashes(package),
        patch_hashes=patch_hashes(package, repo_root),
        dependency_artifacts=tuple(dependency_artifacts),
    )


def local_image_digest(image: str) -> str:
    """The image ID (``sha256:...``) of ``image`` on the local Docker engine."""
    try:
        import docker
        import docker.errors

        client = docker.from_env()
        try:
            return str(client.images.get(image).id)
        finally:
            client.close()
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise ButidoError("the docker package is needed to read the image digest") from exc
    except Exception as exc:  # engine unreachable or image absent
        raise ButidoError(f"cannot read the digest of image {image!r}: {exc}") from exc


def endpoint_image_digest(api: Any, image: str) -> str:
    """The image ID (``sha256:...``) of ``image`` on an endpoint (a docker APIClient)."""
    return str(api.inspect_image(image)["Id"])
