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


def dependencies_of(rng: random.Random, i: int, deps: int) -> list[int]:
    """About ``deps`` packages with smaller indices than ``i``, largest first."""
    return sorted(rng.sample(range(i), min(deps, i)), reverse=True) if i else []


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
        chosen = dependencies_of(rng, i, deps)
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


BUILDABLE_CONFIG = """\
compatibility = 1
log_dir = "{stores}/logs"
releases_root = "{stores}/releases"
release_stores = ["default"]
staging = "{stores}/staging"
source_cache = "{stores}/sources"
available_phases = ["build"]

[docker]
images = [{{ name = "{image}", short_name = "{short}" }}]

[docker.endpoints.local]
uri = "{socket}"
endpoint_type = "socket"
maxjobs = {maxjobs}

[containers]
check_env_names = false
allowed_env = []
"""

BUILDABLE = """\
name = "{name}"
version = "1"
version_is_semver = false
patches = []

[dependencies]
build = [{build}]
runtime = [{runtime}]

[sources.src]
url = "https://example.com/{name}.tar"
hash.type = "sha256"
hash.hash = "{digest}"

[phases]
build.script = '''
    {script}
'''
"""
BUILD_SCRIPT = "mkdir -p /outputs && cp /inputs/src.source /outputs/{name}-1.pkg"


def generate_buildable(
    root: Path,
    stores: Path,
    packages: int,
    *,
    image: str,
    short_name: str,
    maxjobs: int = 4,
    deps: int = 3,
    socket: str = "/var/run/docker.sock",
) -> list[tuple[str, list[str]]]:
    """A repository that really builds: ``packages`` packages with about ``deps``
    dependencies each (the shape of ``generate``), one source each in the source cache
    under ``stores``, a build script that copies it, and ``world`` depending on all.

    Returns every package name with the names it depends on.
    """
    rng = random.Random(42)
    for name in ("logs", "releases/default", "staging", "sources"):
        (stores / name).mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(
        BUILDABLE_CONFIG.format(
            stores=stores, image=image, short=short_name, socket=socket, maxjobs=maxjobs
        )
    )
    graph: list[tuple[str, list[str]]] = []
    for i in range(packages):
        graph.append((package_name(i), [package_name(j) for j in dependencies_of(rng, i, deps)]))
    graph.append((WORLD, [name for name, _ in graph]))
    for name, needs in graph:
        write_buildable(root, stores, name, needs, f"{name} source 0\n")
    return graph


def write_buildable(
    root: Path, stores: Path, name: str, needs: list[str], source: str, script: str = ""
) -> None:
    """(Re)write one package of ``generate_buildable`` and its source: the first
    dependency a build dependency, the others runtime ones."""
    import hashlib

    cached = stores / "sources" / f"{name}-1" / "src.source"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(source)
    specs = [f'"{dep} =1"' for dep in needs]
    (root / name).mkdir(exist_ok=True)
    (root / name / "pkg.toml").write_text(
        BUILDABLE.format(
            name=name,
            build=", ".join(specs[:1]),
            runtime=", ".join(specs[1:]),
            digest=hashlib.sha256(source.encode()).hexdigest(),
            script=script or BUILD_SCRIPT.format(name=name),
        )
    )
