"""``strict_keys = false``: unknown keys in recipes and configuration become warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.errors import ConfigError
from airflow_butido.recipes import RecipeErrors, load_config, load_repository
from tests.hostile.repos import hostile_repo

TYPOS = """name = "p"
version = "1"
homepage = "https://example.org"
[sources.src]
url = "https://example.org/p.tar.gz"
hash = { type = "sha1", hash = "%s" }
mirror = "x"
[dependencies]
build = [{ name = "q =1", condition = { on_arch = "x" } }]
runtime = []
[phases.build]
script = "true"
""" % ("a" * 40)
Q = 'name = "q"\nversion = "1"\n[phases.build]\nscript = "true"\n'


def repo_with_typos(tmp_path: Path, *, config: str = "", settings: str = "") -> Path:
    return hostile_repo(
        tmp_path, TYPOS, extra_config=config, settings=settings, files={"q/1/pkg.toml": Q}
    )


def test_unknown_keys_are_errors_that_mention_the_switch(tmp_path: Path) -> None:
    with pytest.raises(RecipeErrors) as info:
        load_repository(repo_with_typos(tmp_path))
    keys = sorted(e.key or "" for e in info.value.errors)
    assert keys == ["dependencies.build[0].condition.on_arch", "homepage", "sources.src.mirror"]
    assert all("set strict_keys = false" in e.message for e in info.value.errors)


@pytest.mark.parametrize("where", ["config", "environment"])
def test_strict_keys_false_turns_them_into_warnings(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = "strict_keys = false\nbogus_top = 1" if where == "config" else "bogus_top = 1"
    settings = "[airflow]\nbogus_setting = 1\n"
    root = repo_with_typos(tmp_path, config=config, settings=settings)
    environ = {"BUTIDO_STRICT_KEYS": "false"} if where == "environment" else {}
    repo = load_repository(root, environ=environ)
    assert repo.get("p", "1").source("src") is not None
    assert repo.get("p", "1").dependencies[0].condition is not None
    assert sorted(w.key or "" for w in repo.warnings) == [
        "dependencies.build[0].condition.on_arch",
        "homepage",
        "sources.src.mirror",
    ]
    assert sorted(w.key or "" for w in repo.config.warnings) == [
        "airflow.bogus_setting",
        "bogus_top",
    ]
    assert "homepage: unknown key" in caplog.text and "bogus_top: unknown key" in caplog.text


def test_config_unknown_key_error_mentions_the_switch(tmp_path: Path) -> None:
    root = hostile_repo(tmp_path, Q, extra_config="bogus_top = 1")
    with pytest.raises(ConfigError, match="bogus_top: unknown key .*set strict_keys = false"):
        load_config(root, environ={})


def test_strict_keys_must_be_a_boolean(tmp_path: Path) -> None:
    root = hostile_repo(tmp_path, Q, extra_config='strict_keys = "no"')
    with pytest.raises(ConfigError, match="strict_keys: expected a boolean"):
        load_config(root, environ={})
