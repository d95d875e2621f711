"""``butido lint [NAME [VERSION]]``: repository checks and, when configured, the script linter.

Checks: every package defines exactly the configured phases; no ``path`` phases (butido
cannot run them); dependencies exist and form no cycle (conditions ignored, so every
possible graph is checked); image lists name configured images; environment names are
allowed when ``containers.check_env_names`` is on; scripts render; the configured
``script_linter`` accepts them.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from airflow_butido.cli.common import CONSTRAINT_HELP, load_repo, require_packages, select_packages
from airflow_butido.errors import ButidoError
from airflow_butido.run_inputs import disallowed_env_names

if TYPE_CHECKING:
    from airflow_butido.recipes.package import Package
    from airflow_butido.recipes.repository import Repository


def optional_module(name: str) -> ModuleType | None:
    """The module, or None when this installation does not have it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            return None
        raise


def check_package(package: Package, repo: Repository) -> list[str]:
    """Problems of one package that loading alone does not catch."""
    config = repo.config
    problems = []
    names = [p.name for p in package.phases]
    missing = [p for p in config.available_phases if p not in names]
    extra = [p for p in names if p not in config.available_phases]
    if missing:
        problems.append(f"phases missing: {', '.join(missing)}")
    if extra:
        problems.append(f"phases not in available_phases: {', '.join(extra)}")
    for phase in package.phases:
        if phase.path is not None:
            problems.append(f"phase {phase.name}: 'path' phases are not supported, use 'script'")
    for dep in package.dependencies:
        if dep.key not in repo.packages:
            versions = ", ".join(repo.versions_of(dep.name)) or "none"
            problems.append(
                f"{dep.kind} dependency {dep.name} {dep.version} does not exist "
                f"(versions of {dep.name}: {versions})"
            )
    images = {i.name for i in config.images}
    shorts = {i.short_name: i.name for i in config.images}
    for key, listed in (
        ("allowed_images", package.allowed_images),
        ("denied_images", package.denied_images),
    ):
        for image in listed or ():
            if image in shorts and image not in images:
                problems.append(
                    f"{key}: {image!r} is a short name and never matches; write {shorts[image]!r}"
                )
            elif image not in images:
                problems.append(f"{key}: image {image!r} is not configured")
    env_names = (name for name, _value in package.environment or ())
    for name in disallowed_env_names(env_names, config.containers):
        problems.append(f"environment variable {name} is not in containers.allowed_env")
    return problems


def find_cycle_all(repo: Repository) -> list[str] | None:
    """A dependency cycle anywhere in the repository, conditions ignored."""
    from airflow_butido.graph import Edge, PackageGraph, find_cycle

    edges = [
        Edge(p.key, d.key, d.kind) for p in repo for d in p.dependencies if d.key in repo.packages
    ]
    cycle = find_cycle(PackageGraph(repo.packages, edges, ()))
    return None if cycle is None else [f"{k[0]} {k[1]}" for k in cycle]


def _script_problems(package: Package, repo: Repository) -> list[str]:
    render = optional_module("airflow_butido.scripts.render")
    if render is None:
        return []
    try:
        script = render.render_script(package, repo.config)
    except ButidoError as exc:
        return [f"script does not render: {exc}"]
    linter = repo.config.script_linter
    lint = optional_module("airflow_butido.scripts.lint") if linter is not None else None
    if lint is None:
        return []
    result = lint.lint_script(linter, script, cwd=repo.root)
    if result.ok:
        return []
    output = result.output.strip()
    return [f"script linter {linter} failed" + (f":\n{output}" if output else "")]


def cmd_lint(args: argparse.Namespace) -> int:
    repo = load_repo(args)
    if args.name is not None:
        packages = require_packages(repo, args.name, args.version)
    else:
        packages = select_packages(repo, None, None)
    failures = 0
    for package in packages:
        problems = check_package(package, repo) + _script_problems(package, repo)
        for problem in problems:
            print(f"{package.label} ({package.path}): {problem}")
        failures += bool(problems)
    cycle = find_cycle_all(repo)
    if cycle:
        print("dependency cycle: " + " -> ".join(cycle))
        failures += 1
    if failures:
        raise ButidoError(f"lint failed: {failures} problem(s) in {len(packages)} package(s)")
    print(f"{len(packages)} package(s) ok")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("lint", help="check packages and their scripts")
    p.add_argument("name", metavar="NAME", nargs="?", help="package name (default: all)")
    p.add_argument("version", metavar="VERSION", nargs="?", help=CONSTRAINT_HELP)
    p.set_defaults(func=cmd_lint)
