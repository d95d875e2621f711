"""Synthetic package repositories for benchmarks: root layer, group layers, leaves."""

from __future__ import annotations

import random
from pathlib import Path

CONFIG = """\
compatibility = 1
log_dir = "logs"
releases_root = "releases"
release_stores = ["default"]
staging = "staging"
source_cache = "sources"
available_phases = ["sourcecheck", "build"]

[docker]
images = [{ name = "debian:bookworm", short_name = "deb12" }]

[docker.endpoints.local]
uri = "/var/run/docker.sock"
endpoint_type = "socket"
maxjobs = 4

[containers]
check_env_names = false
allowed_env = []
"""

ROOT = """\
version_is_semver = false
patches = []

[dependencies]
build = []
runtime = []

[sources.src]
hash.type = "sha256"

[phases]
sourcecheck.script = '''
    test -e /inputs/src.source || { {{state "ERR" "missing source"}}; exit 1; }
'''
build.script = '''
    mkdir -p /outputs
    echo "{{this.name}} {{this.version}}" > /outputs/{{this.name}}-{{this.version}}.pkg
    {{state "OK"}}
'''
"""

GROUP = """\
[environment]
GROUP = "{group}"

[meta]
group = "{group}"
"""

LEAF = """\
name = "{name}"
version = "{version}"

[dependencies]
build = [{build}]
runtime = [{runtime}]

[sources.src]
url = "https://example.com/{name}-{version}.tar.gz"
hash.hash = "{digest}"
"""


def package_name(i: int) -> str:
    return f"pkg{i:05d}"


WORLD = "world"


def generate(
    root: Path, packages: int = 5000, groups: int = 50, deps: int = 3, *, world: bool = False
) -> str:
    """Write the repository; return the label of the package with the deepest graph.

    Package ``i`` depends on about ``deps`` packages with smaller indices (one build,
    the rest runtime), so the graph is acyclic and the last package reaches far. With
    ``world``, a package ``world 1.0`` depends (runtime) on every other package.
    """
    rng = random.Random(42)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(CONFIG)
    (root / "pkg.toml").write_text(ROOT)
    per_group = -(-packages // groups)
    for g in range(groups):
        gdir = root / f"group{g:03d}"
        gdir.mkdir(exist_ok=True)
        (gdir / "pkg.toml").write_text(GROUP.format(group=g))
    for i in range(packages):
        chosen = sorted(rng.sample(range(i), min(deps, i)), reverse=True) if i else []
        specs = [f'"{package_name(j)} =1.{j % 7}"' for j in chosen]
        name = package_name(i)
        leaf = root / f"group{i // per_group:03d}" / name
        leaf.mkdir(exist_ok=True)
        (leaf / "pkg.toml").write_text(
            LEAF.format(
                name=name,
                version=f"1.{i % 7}",
                build=", ".join(specs[:1]),
                runtime=", ".join(specs[1:]),
                digest=f"{i:064x}",
            )
        )
    if world:
        everything = [f'"{package_name(i)} =1.{i % 7}"' for i in range(packages)]
        (root / WORLD).mkdir(exist_ok=True)
        (root / WORLD / "pkg.toml").write_text(
            LEAF.format(
                name=WORLD, version="1.0", build="", runtime=", ".join(everything), digest="f" * 64
            )
        )
    return f"{package_name(packages - 1)} 1.{(packages - 1) % 7}"
