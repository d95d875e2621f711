"""Small package repositories written to a temporary directory, for DAG and plan tests."""

from __future__ import annotations

from pathlib import Path

IMAGE_ONE = "registry.local/one:1"
IMAGE_TWO = "registry.local/two:2"


def write_repo(
    root: Path,
    packages: dict[str, str],
    *,
    images: tuple[tuple[str, str], ...] = ((IMAGE_ONE, "one"), (IMAGE_TWO, "two")),
    containers: str = "check_env_names = false\nallowed_env = []\n",
    source_cache: Path | None = None,
) -> Path:
    """``packages`` maps "NAME/VERSION" to the extra TOML of that leaf (dependencies...)."""
    root.mkdir(parents=True, exist_ok=True)
    image_list = ", ".join(f'{{ name = "{n}", short_name = "{s}" }}' for n, s in images)
    (root / "config.toml").write_text(
        f"""compatibility = 1
releases_root = "{root}/releases"
release_stores = ["default"]
staging = "{root}/staging"
source_cache = "{source_cache or root / "sources"}"
log_dir = "{root}/logs"
available_phases = ["build"]

[docker]
images = [ {image_list} ]

[docker.endpoints.local]
uri = "/var/run/docker.sock"
endpoint_type = "socket"
maxjobs = 2

[containers]
{containers}"""
    )
    (root / "pkg.toml").write_text(
        """version_is_semver = false
patches = []

[sources]

[dependencies]
build = []
runtime = []

[phases]
build.script = "mkdir -p /outputs && echo {{this.version}} > /outputs/{{this.name}}.pkg"
"""
    )
    for spec, extra in packages.items():
        name, version = spec.split("/")
        leaf = root / name / version
        leaf.mkdir(parents=True, exist_ok=True)
        (leaf / "pkg.toml").write_text(f'name = "{name}"\nversion = "{version}"\n{extra}\n')
    return root
