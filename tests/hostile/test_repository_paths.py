"""A recipe cannot make the tools read a host file through a symbolic link or a ``..``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_butido.build_key import patch_hashes
from airflow_butido.errors import BuildError, ButidoError, ConfigError
from airflow_butido.jobs import job_inputs
from airflow_butido.recipes import RecipeErrors, load_repository
from airflow_butido.scripts.lint import resolve_linter

from .conftest import CliRunner
from .repos import hostile_repo

LEAF = 'name = "p"\nversion = "1"\n[phases.build]\nscript = "true"\n'


def with_patches(*patches: str) -> str:
    listed = ", ".join(f'"{p}"' for p in patches)
    return f"patches = [{listed}]\n" + LEAF


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A host file outside the repository that a recipe must never reach."""
    path = tmp_path / "host" / "shadow"
    path.parent.mkdir()
    path.write_text("root:secret\n")
    return path


def test_symlinked_patch_is_refused_by_lint(
    tmp_path: Path, secret: Path, butido: CliRunner
) -> None:
    repo = hostile_repo(tmp_path, with_patches("shadow.patch"))
    os.symlink(secret, repo / "p/1/shadow.patch")
    code, out, err = butido("--repo", repo, "lint")
    assert code == 1
    assert "p/1/pkg.toml" in err and "p/1/shadow.patch is a symbolic link to" in err
    assert str(secret) in err and "Traceback" not in err


def test_symlinked_directory_on_the_patch_path_is_named(tmp_path: Path, secret: Path) -> None:
    repo = hostile_repo(tmp_path, with_patches("host/shadow"))
    os.symlink(secret.parent, repo / "p/1/host")
    with pytest.raises(RecipeErrors, match=r"p/1/host is a symbolic link to .*host"):
        load_repository(repo)


def test_a_link_inside_the_repository_is_fine(tmp_path: Path) -> None:
    repo = hostile_repo(tmp_path, with_patches("fix.patch"), files={"common/x": "x\n"})
    os.symlink("../../common/x", repo / "p/1/fix.patch")
    assert load_repository(repo).get("p", "1").patches == ("p/1/fix.patch",)


def test_the_build_refuses_a_patch_replaced_by_a_link_after_loading(
    tmp_path: Path, secret: Path
) -> None:
    repo = hostile_repo(tmp_path, with_patches("x.patch"), files={"p/1/x.patch": "x"})
    loaded = load_repository(repo)
    package = loaded.get("p", "1")
    (repo / "p/1/x.patch").unlink()
    os.symlink(secret, repo / "p/1/x.patch")
    with pytest.raises(BuildError, match=r"p/1/x.patch is a symbolic link to .*shadow"):
        job_inputs(package, loaded.config, repo, [], "#!/bin/bash\n")
    with pytest.raises(ButidoError, match="symbolic link"):
        patch_hashes(package, repo)


def test_path_phase_leaving_the_repository_is_refused(tmp_path: Path, secret: Path) -> None:
    leaf = 'name = "p"\nversion = "1"\n[phases.build]\npath = "build.sh"\n'
    repo = hostile_repo(tmp_path, leaf)
    os.symlink(secret, repo / "p/1/build.sh")
    with pytest.raises(RecipeErrors, match=r"phases.build.path: .*build.sh is a symbolic link"):
        load_repository(repo)


def test_script_linter_leaving_the_repository_is_refused(tmp_path: Path, secret: Path) -> None:
    repo = hostile_repo(tmp_path, LEAF, extra_config='script_linter = "lint.sh"')
    os.symlink(secret, repo / "lint.sh")
    with pytest.raises(ConfigError, match=r"script_linter: .*lint.sh is a symbolic link"):
        load_repository(repo)
    with pytest.raises(BuildError, match="symbolic link"):
        resolve_linter(Path("lint.sh"), repo)


def test_relative_tls_file_leaving_the_repository_is_refused(tmp_path: Path) -> None:
    settings = '[endpoints.local.tls]\nca_cert = "../../host/ca.pem"\n'
    repo = hostile_repo(tmp_path, LEAF, settings=settings)
    with pytest.raises(ConfigError, match=r"endpoints.local.tls.ca_cert: .*outside"):
        load_repository(repo)


def test_symlinked_pkg_toml_is_refused(tmp_path: Path) -> None:
    repo = hostile_repo(tmp_path, LEAF, files={"elsewhere/pkg.toml": LEAF.replace('"1"', '"2"')})
    (repo / "q").mkdir()
    os.symlink(repo / "elsewhere/pkg.toml", repo / "q/pkg.toml")
    with pytest.raises(RecipeErrors, match=r"q/pkg.toml: is a symbolic link to .*a pkg.toml must"):
        load_repository(repo)


def test_symlinked_directory_is_skipped_with_a_warning(
    tmp_path: Path, butido: CliRunner, caplog: pytest.LogCaptureFixture
) -> None:
    outside = hostile_repo(tmp_path / "other", LEAF.replace('"p"', '"q"'))
    repo = hostile_repo(tmp_path, LEAF)
    os.symlink(outside / "p", repo / "linked")
    loaded = load_repository(repo)
    assert [p.name for p in loaded] == ["p"]
    assert [(w.file, "not searched" in w.message) for w in loaded.warnings] == [("linked", True)]
    assert "linked: is a symbolic link to" in caplog.text
