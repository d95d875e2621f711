"""Secret variables reach the container and nowhere else: not the build database (job env,
submit env, log, build-key inputs), not the plan, not the printed report."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_butido.errors import BuildError
from airflow_butido.run_inputs import SECRET_MASK, is_secret, masked_env, redactor
from tests.integration.test_jobs import pkg_toml, write_repo

VENV_BIN = Path(sys.executable).parent
TOKEN = "tok-4f9c2e71d0"
PIN = "pin-8a1b77c3"


@pytest.mark.parametrize(
    ("name", "secret"),
    [("API_TOKEN", True), ("db_password", True), ("HTTPS_PROXY", True), ("BUILD_PIN", True),
     ("CFLAGS", False), ("FOO", False)],
)  # fmt: skip
def test_secret_names_by_pattern_or_by_list(name: str, secret: bool) -> None:
    assert is_secret(name, ("BUILD_PIN",)) is secret


def test_masking_and_redaction() -> None:
    pairs = (("API_TOKEN", TOKEN), ("FOO", "bar"))
    assert masked_env(pairs) == (("API_TOKEN", SECRET_MASK), ("FOO", "bar"))
    redact = redactor(pairs)
    assert redact is not None
    assert redact(f"using {TOKEN} twice: {TOKEN}; bar stays") == "using *** twice: ***; bar stays"
    assert redactor((("FOO", "bar"),)) is None


@pytest.mark.docker
def test_a_secret_reaches_the_container_and_is_stored_nowhere(
    tmp_path: Path, build_image: str
) -> None:
    both = hashlib.sha256(f"{TOKEN}{PIN}".encode()).hexdigest()  # the recipe has no secret
    script = (
        'echo "token is $API_TOKEN and pin is $BUILD_PIN"\n'
        "mkdir /outputs\n"
        f'[ "$(printf %s "$API_TOKEN$BUILD_PIN" | sha256sum | cut -d" " -f1)" = {both} ] '
        "&& echo ok > /outputs/s-1.pkg"
    )
    repo = write_repo(
        tmp_path / "repo",
        build_image,
        {"s": pkg_toml("s", "1", script)},
        extra_config="",
    )
    config = repo / "config.toml"
    config.write_text(
        config.read_text().replace('allowed_env = ["FOO", "PKGVAR"]',
                                   'allowed_env = ["FOO", "PKGVAR", "API_TOKEN", "BUILD_PIN"]')
    )  # fmt: skip
    db = repo / "b.sqlite"
    (repo / "airflow-butido.toml").write_text(
        f'database_url = "sqlite:///{db}"\nsecret_env = ["BUILD_PIN"]\n'
    )
    env = {**os.environ, "BUTIDO_PARSE_CACHE": "off", "XDG_CACHE_HOME": str(tmp_path / "c")}
    for var in ("AIRFLOW_HOME", "BUTIDO_CONFIG", "BUTIDO_SETTINGS"):
        env.pop(var, None)

    def butido(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "butido"), "--repo", str(repo), *args],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    done = butido("build", "s", "-I", "test", "-E", f"API_TOKEN={TOKEN}", "-E", f"BUILD_PIN={PIN}",
                  "-v")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    artifact = next(repo.glob("staging/*/s-1.pkg"))
    assert artifact.read_text() == "ok\n"  # the container had both values
    for secret in (TOKEN, PIN):
        assert secret not in done.stdout + done.stderr
        assert secret.encode() not in db.read_bytes()  # job env, submit env, log, key inputs
    log = butido("db", "log-of", next(repo.glob("staging/*")).name, "--database-url",
                 f"sqlite:///{db}")  # fmt: skip
    envvars = butido("db", "envvars", "--database-url", f"sqlite:///{db}")
    assert "API_TOKEN" in envvars.stdout and SECRET_MASK in envvars.stdout
    assert TOKEN not in envvars.stdout + log.stdout


def test_the_plan_carries_no_secret_and_the_package_task_takes_it_from_the_run_conf(
    tmp_path: Path,
) -> None:
    import json

    from airflow_butido.package_build import with_secrets
    from airflow_butido.plan import RunRequest, resolve_plan
    from airflow_butido.recipes.repository import load_repository
    from tests.unit._repos import IMAGE_ONE
    from tests.unit._repos import write_repo as write_small_repo

    root = write_small_repo(tmp_path / "repo", {"p/1": ""})
    request = RunRequest(("p",), (("API_TOKEN", TOKEN), ("FOO", "bar")))
    plan = resolve_plan(load_repository(root), IMAGE_ONE, request)
    assert TOKEN not in json.dumps(plan.to_json())
    assert plan.env == (("API_TOKEN", SECRET_MASK), ("FOO", "bar"))
    assert plan.secret_names == ("API_TOKEN",)
    context = {"params": {"env": {"API_TOKEN": TOKEN, "FOO": "bar"}}}
    assert with_secrets(plan, context) == (("API_TOKEN", TOKEN), ("FOO", "bar"))
    with pytest.raises(BuildError, match="API_TOKEN: no value in the run conf"):
        with_secrets(plan, {"params": {"env": {}}})
