"""Read-only commands over the package repository: tree-of, versions-of,
dependencies-of, what-depends, env-of, find-pkg, metrics.

Imports stay light at module level (the CLI must start fast); the repository loader
is imported inside the helpers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_butido.cli.output import add_format_flags, print_table
from airflow_butido.errors import ButidoError, ResolveError

if TYPE_CHECKING:
    from airflow_butido.graph import PackageGraph
    from airflow_butido.recipes.package import Package
    from airflow_butido.recipes.repository import Repository

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEPENDENCY_KINDS = ("build", "runtime")


# ---------------------------------------------------------------- shared helpers


def parse_env_assignment(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from ``-E``; everything after the first ``=`` is the value."""
    key, sep, value = text.partition("=")
    if not sep or not _ENV_NAME_RE.fullmatch(key) or not value:
        raise ButidoError(
            f"invalid environment assignment {text!r}: expected KEY=VALUE with KEY made of "
            "letters, digits and '_' (not starting with a digit) and a non-empty VALUE"
        )
    return key, value


def parse_env(assignments: Iterable[str] | None) -> dict[str, str]:
    return dict(parse_env_assignment(a) for a in assignments or ())


def load_repo(args: argparse.Namespace) -> Repository:
    from airflow_butido.recipes.repository import load_repository

    return load_repository(args.repo)


def select_packages(
    repo: Repository, name: str | None, constraint: str | None, *, regex: str | None = None
) -> list[Package]:
    """Packages by exact name (or unanchored regex) and CLI version constraint."""
    from airflow_butido.recipes.errors import InvalidValue
    from airflow_butido.recipes.versions import VersionConstraint

    try:
        vc = VersionConstraint.parse(constraint) if constraint is not None else None
    except InvalidValue as exc:
        raise ButidoError(f"invalid version constraint {constraint!r}: {exc.message}") from None
    if regex is not None:
        pattern = compile_regex(regex)
        found = [p for p in repo if pattern.search(p.name)]
    elif name is not None:
        found = repo.find(name)
    else:
        found = list(repo)
    if vc is not None:
        found = [p for p in found if vc.matches(p.version)]
    return found


def require_packages(repo: Repository, name: str, constraint: str | None) -> list[Package]:
    found = select_packages(repo, name, constraint)
    if found:
        return found
    versions = repo.versions_of(name)
    if not versions:
        raise ResolveError(f"no package named {name!r} in the repository")
    raise ResolveError(
        f"no version of {name} matches {constraint!r} (versions: {', '.join(versions)})"
    )


def compile_regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ButidoError(f"invalid regular expression {text!r}: {exc}") from None


def add_package_args(parser: argparse.ArgumentParser, *, version_help: str) -> None:
    parser.add_argument("name", metavar="NAME", help="package name")
    parser.add_argument("version", metavar="VERSION", nargs="?", help=version_help)


CONSTRAINT_HELP = "version constraint: '=X' exact, 'X' semver-partial (1 matches 1.4.2)"


# ---------------------------------------------------------------- tree-of


def _tree_lines(graph: PackageGraph, root: tuple[str, str]) -> list[str]:
    """An indented tree; a subtree already printed is shown once and then abbreviated."""
    from airflow_butido.graph import label

    lines = [label(root)]
    expanded: set[tuple[str, str]] = {root}

    def walk(key: tuple[str, str], prefix: str) -> None:
        edges = graph.dependencies(key)
        for i, edge in enumerate(edges):
            last = i == len(edges) - 1
            mark = "*" if edge.kind == "build" else ""
            text = f"{mark}{label(edge.dependency)}"
            if edge.condition is not None:
                text += f" [if {edge.condition}]"
            again = edge.dependency in expanded and graph.dependencies(edge.dependency)
            lines.append(f"{prefix}{'└── ' if last else '├── '}{text}{' (…)' if again else ''}")
            if not again:
                expanded.add(edge.dependency)
                walk(edge.dependency, prefix + ("    " if last else "│   "))

    walk(root, "")
    return lines


def _dot(graph: PackageGraph, root: tuple[str, str]) -> str:
    from airflow_butido.graph import label

    keys = graph.subgraph_keys(root)
    out = ["digraph butido {"]
    for k in keys:
        out.append(f"    {json.dumps(label(k))};")
    for k in keys:
        for e in graph.dependencies(k):
            style = " [style=dotted]" if e.kind == "build" else ""
            out.append(
                f"    {json.dumps(label(e.dependent))} -> {json.dumps(label(e.dependency))}{style};"
            )
    out.append("}")
    return "\n".join(out)


def _serial_order(graph: PackageGraph, root: tuple[str, str]) -> list[str]:
    """Dependencies first; ``*`` marks packages needed only as build dependencies."""
    from airflow_butido.graph import label

    wanted = set(graph.subgraph_keys(root))
    lines = []
    for key in graph.build_order():
        if key not in wanted:
            continue
        incoming = [e for e in graph.dependents(key) if e.dependent in wanted]
        build_only = bool(incoming) and all(e.kind == "build" for e in incoming)
        lines.append(("*" if build_only else "") + label(key))
    return lines


def cmd_tree_of(args: argparse.Namespace) -> int:
    from airflow_butido.graph import resolve

    env = parse_env(args.env)
    repo = load_repo(args)
    image = repo.config.resolve_image(args.image) if args.image else None
    roots = require_packages(repo, args.name, args.version)
    if args.json and len(roots) > 1:
        versions = ", ".join(p.version for p in roots)
        raise ResolveError(f"{args.name}: several versions match ({versions}); give a version")
    out = sys.stdout
    for n, root in enumerate(roots):
        graph = resolve(repo, [root], image=image, env=env)
        if args.json:
            json.dump(graph.to_json(root.key), out, indent=2)
            out.write("\n")
            continue
        if n:
            out.write("\n")
        if args.dot:
            out.write(_dot(graph, root.key) + "\n")
        elif args.serial_buildorder:
            out.write("\n".join(_serial_order(graph, root.key)) + "\n")
        else:
            out.write("\n".join(_tree_lines(graph, root.key)) + "\n")
    return 0


# ---------------------------------------------------------------- simple queries


def cmd_versions_of(args: argparse.Namespace) -> int:
    repo = load_repo(args)
    versions = repo.versions_of(args.name)
    if not versions:
        raise ResolveError(f"no package named {args.name!r} in the repository")
    for version in versions:
        print(version)
    return 0


def _kinds(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(args.type) if args.type else DEPENDENCY_KINDS


def cmd_dependencies_of(args: argparse.Namespace) -> int:
    repo = load_repo(args)
    kinds = _kinds(args)
    rows = []
    for package in require_packages(repo, args.name, args.version):
        for dep in package.dependencies:
            if dep.kind in kinds:
                cond = "" if dep.condition is None else str(dep.condition)
                rows.append((package.name, package.version, dep.kind, dep.name, dep.version, cond))
    print_table(
        ("package", "version", "kind", "dependency", "dependency_version", "condition"),
        rows,
        as_csv=args.csv,
        as_json=args.json,
    )
    return 0


def cmd_what_depends(args: argparse.Namespace) -> int:
    """Direct dependents by dependency *name* (any version), conditions ignored."""
    repo = load_repo(args)
    kinds = _kinds(args)
    rows = [
        (p.name, p.version, dep.kind, f"{dep.name} {dep.version}")
        for p in repo
        for dep in p.dependencies
        if dep.name == args.name and dep.kind in kinds
    ]
    print_table(
        ("package", "version", "kind", "dependency"), rows, as_csv=args.csv, as_json=args.json
    )
    return 0


def cmd_env_of(args: argparse.Namespace) -> int:
    repo = load_repo(args)
    package = repo.get(args.name, args.version)
    if package is None:
        versions = repo.versions_of(args.name)
        known = f"versions: {', '.join(versions)}" if versions else "no package of that name"
        raise ResolveError(f"no package {args.name} {args.version} ({known})")
    if not package.environment:
        print("No environment")
        return 0
    for key, value in package.environment:
        print(f"{key} = {value!r}")
    return 0


# ---------------------------------------------------------------- find-pkg


def _detail_lines(args: argparse.Namespace, package: Package, repo: Repository) -> list[str]:
    every = args.all
    lines = [f"{package.name} {package.version}", f"    file: {package.path}"]
    if every or args.sources:
        lines.append("    sources:")
        for s in package.sources:
            manual = " (download manually)" if s.download_manually else ""
            lines.append(f"        {s.name} = {s.url} ({s.hash_type}: {s.hash}){manual}")
    if every or args.dependencies:
        for kind in DEPENDENCY_KINDS:
            lines.append(f"    {kind} dependencies:")
            for dep in package.dependencies:
                if dep.kind == kind:
                    cond = "" if dep.condition is None else f" [if {dep.condition}]"
                    lines.append(f"        {dep.name} {dep.version}{cond}")
    if every or args.patches:
        lines.append("    patches:")
        lines.extend(f"        {p}" for p in package.patches)
    if every or args.env:
        lines.append("    environment:")
        lines.extend(f"        {k} = {v!r}" for k, v in package.environment or ())
    if every or args.images:
        lines.append(f"    allowed images: {', '.join(package.allowed_images or ()) or '-'}")
        lines.append(f"    denied images: {', '.join(package.denied_images or ()) or '-'}")
    if every or args.phases:
        lines.append("    phases: " + ", ".join(p.name for p in package.phases))
    if args.script:
        lines.append("    script:")
        lines.extend(f"        {line}".rstrip() for line in _render(package, repo).splitlines())
    return lines


def _render(package: Package, repo: Repository) -> str:
    try:
        from airflow_butido.scripts.render import render_script
    except ModuleNotFoundError as exc:
        raise ButidoError("script rendering is not available in this installation") from exc
    return render_script(package, repo.config)


def cmd_find_pkg(args: argparse.Namespace) -> int:
    repo = load_repo(args)
    found = select_packages(repo, None, args.version, regex=args.regex)
    if args.terse:
        for package in found:
            print(f"{package.name} {package.version}")
        return 0
    for i, package in enumerate(found):
        if i:
            print()
        print("\n".join(_detail_lines(args, package, repo)))
    return 0


# ---------------------------------------------------------------- metrics


def cmd_metrics(args: argparse.Namespace) -> int:
    repo = load_repo(args)
    config = repo.config
    rows = [
        ("pkg.toml files", len(repo.pkg_toml_files)),
        ("packages", len(repo)),
        ("package names", len(repo.names())),
        ("endpoints", len(config.endpoints)),
        ("images", len(config.images)),
        ("release stores", len(config.release_stores)),
        ("phases", len(config.available_phases)),
    ]
    print_table(("metric", "value"), rows, as_csv=args.csv, as_json=args.json)
    return 0


# ---------------------------------------------------------------- registration


def _add_type_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-t",
        "--type",
        action="append",
        choices=DEPENDENCY_KINDS,
        help="only this dependency type (repeatable; default: both)",
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tree-of",
        help="print the dependency tree of a package",
        description="Print the dependency graph of a package (build dependencies marked *).",
    )
    add_package_args(p, version_help=CONSTRAINT_HELP)
    p.add_argument("-I", "--image", help="build image (full or short name) for in_image conditions")
    p.add_argument(
        "-E",
        "--env",
        action="append",
        metavar="K=V",
        help="environment for has_env/env_eq conditions (repeatable)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--dot", action="store_true", help="print Graphviz DOT")
    fmt.add_argument(
        "--serial-buildorder", action="store_true", help="print a valid serial build order"
    )
    fmt.add_argument("--json", action="store_true", help="print the graph as JSON")
    p.set_defaults(func=cmd_tree_of)

    p = subparsers.add_parser(
        "versions-of", aliases=["versions"], help="list the versions of a package"
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_versions_of)

    p = subparsers.add_parser(
        "dependencies-of", aliases=["depsof"], help="list the direct dependencies of a package"
    )
    add_package_args(p, version_help=CONSTRAINT_HELP)
    _add_type_flag(p)
    add_format_flags(p)
    p.set_defaults(func=cmd_dependencies_of)

    p = subparsers.add_parser("what-depends", help="list packages that depend on NAME directly")
    p.add_argument("name", metavar="NAME")
    _add_type_flag(p)
    add_format_flags(p)
    p.set_defaults(func=cmd_what_depends)

    p = subparsers.add_parser("env-of", aliases=["env"], help="print a package's environment")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="VERSION", help="exact version")
    p.set_defaults(func=cmd_env_of)

    p = subparsers.add_parser("find-pkg", help="search packages by name (regular expression)")
    p.add_argument("regex", metavar="REGEX", help="unanchored regular expression on the name")
    p.add_argument("version", metavar="VERSION", nargs="?", help=CONSTRAINT_HELP)
    p.add_argument("-t", "--terse", action="store_true", help="print only NAME VERSION")
    p.add_argument("-A", "--all", action="store_true", help="print every detail")
    p.add_argument("-S", "--sources", action="store_true", help="print sources")
    p.add_argument("-D", "--dependencies", action="store_true", help="print dependencies")
    p.add_argument("-p", "--patches", action="store_true", help="print patches")
    p.add_argument("-E", "--env", action="store_true", help="print the environment")
    p.add_argument("-i", "--images", action="store_true", help="print allowed/denied images")
    p.add_argument("-P", "--phases", action="store_true", help="print the phase names")
    p.add_argument("-s", "--script", action="store_true", help="print the rendered script")
    p.set_defaults(func=cmd_find_pkg)

    p = subparsers.add_parser("metrics", help="print repository counts")
    add_format_flags(p)
    p.set_defaults(func=cmd_metrics)
