from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.errors import ConfigError
from airflow_butido.recipes.config import (
    DEFAULT_PROGRESS_FORMAT,
    AirflowSettings,
    Config,
    TlsConfig,
    load_config,
)
from tests.unit.recipes.repo_factory import CONFIG


def write(root: Path, text: str = CONFIG, name: str = "config.toml") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
    return root


def load(root: Path, **env: str) -> Config:
    return load_config(root, environ={"HOME": str(root / "home"), **env})


def error_of(root: Path, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(root, **env)
    return str(info.value)


def test_loading_example_repo_configuration_file(example_repo: Path) -> None:
    config = load_config(example_repo, environ={})
    assert config.compatibility == 1
    assert config.script_highlight_theme == "Solarized (dark)"
    assert config.releases_root == Path("/tmp/butido-test-releases")
    assert config.release_stores == ("default",)
    assert config.database_host == "localhost" and config.database_port == 5432
    assert config.available_phases == ("sourcecheck", "patchcheck", "depcheck", "build")
    assert config.resolve_image("deb11") == "debian:bullseye"
    (endpoint,) = config.endpoints
    assert (endpoint.name, endpoint.uri, endpoint.endpoint_type, endpoint.maxjobs) == (
        "testhostname",
        "http://0.0.0.0:8095",
        "http",
        1,
    )
    assert endpoint.timeout == 10
    assert config.containers.check_env_names is True
    assert config.containers.allowed_env == ()


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load(write(tmp_path))
    assert config.log_dir == tmp_path / "logs"  # relative to the repo; need not exist
    assert config.staging == tmp_path / "staging"
    assert not config.staging.exists()
    assert config.strict_script_interpolation is True
    assert config.progress_format == DEFAULT_PROGRESS_FORMAT
    assert config.build_error_lines == 10
    assert config.shebang == "#!/bin/bash"
    assert config.database_connection_timeout == 30
    assert config.database_default_query_limit == 10
    assert config.database_host is None and config.database_url is None
    assert config.script_dialect == "handlebars"
    assert config.airflow == AirflowSettings()
    assert config.script_linter is None and config.script_highlight_theme is None


def test_database_password_is_not_in_the_repr(tmp_path: Path) -> None:
    text = CONFIG.replace("compatibility = 1", 'compatibility = 1\ndatabase_password = "s3cret"')
    config = load(write(tmp_path, text))
    assert config.database_password == "s3cret"
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "outdated (0 < 1); required changes: 1: compatibility changed from semver string"),
        ("2", "butido too old"),
        ('"0.1.0"', "must be an integer"),
        ("true", "must be an integer"),
    ],
)
def test_compatibility_check(tmp_path: Path, value: str, message: str) -> None:
    text = CONFIG.replace("compatibility = 1", f"compatibility = {value}")
    assert message in error_of(write(tmp_path, text))


def test_compatibility_as_string_is_accepted(tmp_path: Path) -> None:
    text = CONFIG.replace("compatibility = 1", 'compatibility = "1"')
    assert load(write(tmp_path, text)).compatibility == 1


def test_missing_compatibility(tmp_path: Path) -> None:
    assert "compatibility: missing" in error_of(
        write(tmp_path, CONFIG.replace("compatibility = 1\n", ""))
    )


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        (
            "compatibility = 1",
            "compatibility = 1\nverify_images_present = true",
            "verify_images_present",
        ),
        ("[docker]", "[docker]\nimagess = []", "docker.imagess"),
        ("maxjobs = 2", "maxjobs = 2\nmax_jobs = 3", "docker.endpoints.local.max_jobs"),
        ("check_env_names = false", "check_env_names = false\ncheck = 1", "containers.check"),
        (
            '{ name = "fooimage", short_name = "foo" }',
            '{ name = "fooimage", short_name = "foo", tag = "x" }',
            "docker.images[1].tag",
        ),
    ],
)
def test_unknown_keys_are_rejected_at_every_depth(tmp_path: Path, old, new, key) -> None:
    message = error_of(write(tmp_path, CONFIG.replace(old, new)))
    assert "config.toml:" in message
    assert f": {key}: unknown key" in message


def test_unknown_key_error_names_the_line(tmp_path: Path) -> None:
    text = CONFIG.replace("maxjobs = 2", "maxjobs = 2\nmax_jobs = 3")
    line = text.splitlines().index("max_jobs = 3") + 1
    assert f"config.toml:{line}: docker.endpoints.local.max_jobs" in error_of(write(tmp_path, text))


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('staging = "staging"\n', "", "staging: missing required key"),
        ('release_stores = ["default"]', "release_stores = []", "release_stores: must not be"),
        ('available_phases = ["build"]', "available_phases = []", "available_phases: must not"),
        ("maxjobs = 2", "maxjobs = 0", "maxjobs: must be at least 1"),
        ("maxjobs = 2", "maxjobs = 'two'", "maxjobs: expected an integer"),
        ('endpoint_type = "socket"', 'endpoint_type = "tcp"', 'must be "http" or "socket"'),
        ('uri = "/var/run/docker.sock"', 'uri = "docker.sock"', "expected a socket path"),
        (
            "compatibility = 1",
            'compatibility = 1\nscript_highlight_theme = "Nope"',
            "unknown theme 'Nope'",
        ),
        ('short_name = "bar"', 'short_name = "foo"', "image name 'foo' is used more than once"),
        ("[containers]\n", "[containers]\nallowed_env = 'x'\n", ""),
    ],
)
def test_validation_errors(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    assert old in CONFIG
    assert fragment in error_of(write(tmp_path, CONFIG.replace(old, new, 1)))


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    text = CONFIG.replace("maxjobs = 2", "maxjobs = 0").replace('staging = "staging"\n', "")
    message = error_of(write(tmp_path, text))
    assert "maxjobs" in message and "staging" in message


def test_toml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, CONFIG.replace("maxjobs = 2", "maxjobs = ")))
    line = CONFIG.splitlines().index("maxjobs = 2") + 1
    assert f"config.toml:{line}: TOML syntax error" in message


def test_socket_uri_may_be_a_unix_url(tmp_path: Path) -> None:
    text = CONFIG.replace('uri = "/var/run/docker.sock"', 'uri = "unix:///run/d.sock"')
    from airflow_butido.endpoints import base_url

    (endpoint,) = load(write(tmp_path, text)).endpoints
    assert base_url(endpoint) == "unix:///run/d.sock"
    (plain,) = load(write(tmp_path / "b")).endpoints
    assert base_url(plain) == "unix:///var/run/docker.sock"


@pytest.mark.parametrize(
    ("name", "full"),
    [("deb12", "debian:bookworm"), ("debian:bookworm", "debian:bookworm"), ("foo", "fooimage")],
)
def test_resolve_image(tmp_path: Path, name: str, full: str) -> None:
    assert load(write(tmp_path)).resolve_image(name) == full


def test_resolve_unknown_image_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"debian:bookworm \(deb12\)"):
        load(write(tmp_path)).resolve_image("ubuntu")


# ----------------------------------------------------------------- layers and overrides


def test_xdg_layer_merges_tables_and_replaces_arrays(tmp_path: Path) -> None:
    root = write(tmp_path / "repo")
    xdg = tmp_path / "xdg"
    write(xdg / "butido", 'available_phases = ["a", "b"]\n[docker.endpoints.local]\nmaxjobs = 7\n')
    config = load(root, XDG_CONFIG_HOME=str(xdg))
    assert config.available_phases == ("a", "b")
    (endpoint,) = config.endpoints
    assert endpoint.maxjobs == 7 and endpoint.endpoint_type == "socket"  # deep-merged
    assert config.files == (root / "config.toml", xdg / "butido" / "config.toml")


def test_home_config_is_the_default_xdg_location(tmp_path: Path) -> None:
    write(tmp_path / "home" / ".config" / "butido", "build_error_lines = 3\n")
    assert load(write(tmp_path)).build_error_lines == 3


def test_butido_config_overlay_and_environment_override(tmp_path: Path) -> None:
    root = write(tmp_path / "repo")
    overlay = write(tmp_path / "o", 'shebang = "#!/bin/sh"\nbuild_error_lines = 4\n')
    config = load(
        root,
        BUTIDO_CONFIG=str(overlay / "config.toml"),
        BUTIDO_BUILD_ERROR_LINES="5",
        BUTIDO_STAGING="/abs/staging",
        BUTIDO_STRICT_SCRIPT_INTERPOLATION="false",
        BUTIDO_DATABASE_HOST="db.example",
        BUTIDO_REPO="/ignored",
    )
    assert config.shebang == "#!/bin/sh"
    assert config.build_error_lines == 5
    assert config.staging == Path("/abs/staging")
    assert config.strict_script_interpolation is False
    assert config.database_host == "db.example"


def test_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    message = error_of(write(tmp_path), BUTIDO_DATABASE_PORT="many")
    expected = "environment variable BUTIDO_DATABASE_PORT: database_port: expected an integer"
    assert expected in message


def test_missing_overlay_file_is_an_error(tmp_path: Path) -> None:
    assert "BUTIDO_CONFIG" in error_of(write(tmp_path), BUTIDO_CONFIG=str(tmp_path / "nope"))


def test_missing_config_is_an_error(tmp_path: Path) -> None:
    assert "config.toml does not exist" in error_of(tmp_path)


# ----------------------------------------------------------------- airflow-butido.toml

SETTINGS = """\
script_dialect = "jinja2"
database_url = "sqlite:////tmp/x.db"

[endpoints.local.tls]
ca_cert = "certs/ca.pem"
verify = false

[airflow]
dag_id_prefix = "pkg_"
schedule = "@daily"
tags = ["butido"]
default_packages = ["a", "b 2"]
max_active_runs = 2
"""


def test_settings_file(tmp_path: Path) -> None:
    root = write(write(tmp_path), SETTINGS, "airflow-butido.toml")
    config = load(root)
    assert config.script_dialect == "jinja2"
    assert config.database_url == "sqlite:////tmp/x.db"
    assert config.endpoint("local").tls == TlsConfig(ca_cert=root / "certs/ca.pem", verify=False)
    assert config.airflow == AirflowSettings("pkg_", "@daily", ("butido",), ("a", "b 2"), 2)


def test_settings_overlay_from_environment(tmp_path: Path) -> None:
    root = write(write(tmp_path), SETTINGS, "airflow-butido.toml")
    overlay = write(tmp_path / "o", 'script_dialect = "handlebars"\n', "s.toml")
    config = load(root, BUTIDO_SETTINGS=str(overlay / "s.toml"))
    assert config.script_dialect == "handlebars"
    assert config.database_url == "sqlite:////tmp/x.db"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (CONFIG.replace("\n", '\nscript_dialect = "jinja2"\n', 1), "script_dialect"),
        (CONFIG.replace("\n", '\ndatabase_url = "sqlite:////x.db"\n', 1), "database_url"),
        (CONFIG + '[airflow]\nschedule = "@daily"\n', "airflow"),
    ],
)
def test_airflow_settings_are_refused_in_config_toml(tmp_path: Path, text: str, key: str) -> None:
    """butido rejects unknown keys, so they must go to airflow-butido.toml instead."""
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.startswith(f"{key} =") or t == f"[{key}]")
    assert f"config.toml:{line}: {key}: unknown key" in error_of(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("dialect = 'jinja2'", "dialect: unknown key"),
        ("script_dialect = 'mustache'", "script_dialect: must be one of"),
        ("[endpoints.other.tls]\nverify = true", "endpoints.other: no such endpoint"),
        ("[endpoints.local.tls]\nca = 'x'", "endpoints.local.tls.ca: unknown key"),
        ("[airflow]\nschedul = 'x'", "airflow.schedul: unknown key"),
        ("[airflow]\ndefault_packages = ['a b c']", "airflow.default_packages[0]"),
        ("[airflow]\nmax_active_runs = 'x'", "airflow.max_active_runs: expected an integer"),
    ],
)
def test_settings_validation(tmp_path: Path, text: str, fragment: str) -> None:
    message = error_of(write(write(tmp_path), text, "airflow-butido.toml"))
    assert "airflow-butido.toml" in message and fragment in message


FULL_CONFIG = """\
compatibility = 1
log_dir = "/var/log/butido"
strict_script_interpolation = false
progress_format = "{msg}"
package_print_format = "{{p.name}}"
build_error_lines = 3
script_highlight_theme = "InspiredGitHub"
script_linter = "tools/lint.sh"
shebang = "#!/bin/sh"
releases_root = "/srv/releases"
release_stores = ["default", "stable"]
staging = "/srv/staging"
source_cache = "/srv/sources"
database_host = "db"
database_port = 5433
database_user = "u"
database_password = "p"
database_name = "n"
database_connection_timeout = 5
database_default_query_limit = 0
available_phases = ["unpack", "build"]

[docker]
docker_versions = ["20.10.24"]
docker_api_versions = ["1.41"]
images = [{ name = "debian:bookworm", short_name = "deb12" }]

[docker.endpoints.b]
uri = "http://10.0.0.2:2375"
endpoint_type = "http"
maxjobs = 4
network_mode = "host"
timeout = 30

[docker.endpoints.a]
uri = "/run/docker.sock"
endpoint_type = "socket"
maxjobs = 1

[containers]
check_env_names = true
allowed_env = ["CC", "GIT_AUTHOR", "GIT_HASH"]
git_author = "GIT_AUTHOR"
git_commit_hash = "GIT_HASH"
"""


def test_every_key_of_the_reference_is_read(tmp_path: Path) -> None:
    config = load(write(tmp_path, FULL_CONFIG))
    assert (config.log_dir, config.strict_script_interpolation) == (Path("/var/log/butido"), False)
    assert (config.progress_format, config.package_print_format) == ("{msg}", "{{p.name}}")
    assert (config.build_error_lines, config.script_highlight_theme) == (3, "InspiredGitHub")
    assert config.script_linter == tmp_path / "tools/lint.sh"
    assert config.shebang == "#!/bin/sh"
    assert config.releases_root == Path("/srv/releases")
    assert config.release_stores == ("default", "stable")
    assert (config.staging, config.source_cache) == (Path("/srv/staging"), Path("/srv/sources"))
    assert (config.database_host, config.database_port) == ("db", 5433)
    assert (config.database_user, config.database_password, config.database_name) == (
        "u",
        "p",
        "n",
    )
    assert config.database_connection_timeout == 5
    assert config.database_default_query_limit == 0
    assert config.available_phases == ("unpack", "build")
    assert config.docker.docker_versions == ("20.10.24",)
    assert config.docker.docker_api_versions == ("1.41",)
    a, b = config.endpoints
    assert (a.name, a.endpoint_type, a.maxjobs, a.network_mode, a.timeout) == (
        "a",
        "socket",
        1,
        None,
        10,
    )
    assert (b.name, b.uri, b.endpoint_type, b.maxjobs, b.network_mode, b.timeout) == (
        "b",
        "http://10.0.0.2:2375",
        "http",
        4,
        "host",
        30,
    )
    containers = config.containers
    assert containers.check_env_names is True
    assert containers.allowed_env == ("CC", "GIT_AUTHOR", "GIT_HASH")
    assert (containers.git_author, containers.git_commit_hash) == ("GIT_AUTHOR", "GIT_HASH")
