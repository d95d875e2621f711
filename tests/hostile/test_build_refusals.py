"""On the real Docker engine: a build never copies a host file into its container."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_butido.endpoints import LocalSlots
from airflow_butido.errors import BuildError
from airflow_butido.jobs import run_job
from tests.integration.test_jobs import job_containers, pkg_toml, request_for, write_repo

pytestmark = pytest.mark.docker


def test_a_patch_swapped_for_a_link_after_loading_stops_the_build(
    tmp_path: Path, build_image: str, docker_client
) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("root:secret\n")
    script = "cat /patches/a/fix.patch > /outputs/leak || true\nmkdir -p /outputs"
    repo = write_repo(
        tmp_path / "repo", build_image, {"a": pkg_toml("a", "1", script, patches=("fix.patch",))}
    )
    (repo / "a" / "fix.patch").write_text("harmless\n")
    request = request_for(repo, "a", "1")  # loaded while the patch is a regular file
    (repo / "a" / "fix.patch").unlink()
    os.symlink(secret, repo / "a" / "fix.patch")

    with pytest.raises(BuildError, match=r"a/fix.patch is a symbolic link to .*host-secret"):
        run_job(request, slots=LocalSlots())
    assert job_containers(docker_client, request.job_uuid) == []
    assert not (repo / "staging" / request.submit_uuid / "leak").exists()
