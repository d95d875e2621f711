"""``butido find-artifact REGEX [VERSION] -I IMAGE [-E K=V]...``: the artifacts a build
would reuse now, or why a package would be rebuilt.

REGEX is an unanchored regular expression on package names and VERSION a version
constraint, as in butido. ``-S`` drops the script from the comparison: an artifact built
by another script (all other inputs equal) is found too."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from airflow_butido.cli.common import (
    CONSTRAINT_HELP,
    add_db_flags,
    add_env_flag,
    disposing,
    fmt_time,
    open_db,
    select_packages,
)
from airflow_butido.errors import ButidoError
from airflow_butido.run_inputs import check_allowed_env, parse_env_assignments


def cmd_find_artifact(args: argparse.Namespace) -> int:
    from airflow_butido.build_key import git_environment, key_inputs
    from airflow_butido.container import local_image_digest
    from airflow_butido.db import reuse
    from airflow_butido.db.queries import build_keys_but_script, list_releases
    from airflow_butido.graph import resolve
    from airflow_butido.object_store import StorePath, store_root, url_of
    from airflow_butido.recipes.repository import load_repository
    from airflow_butido.stores import release_dirs as store_dirs

    ctx = open_db(args, need_config=True)
    config = ctx.repo_config
    repo_root = Path(args.repo).absolute()
    repo = load_repository(repo_root, config=config)
    image = config.resolve_image(args.image)
    env = parse_env_assignments(args.env)
    check_allowed_env(env, config.containers)
    targets = select_packages(repo, None, args.version, regex=args.name)
    if not targets:
        raise ButidoError(f"no package matches {args.name!r} {args.version or ''}".rstrip())
    digest = args.image_digest or local_image_digest(image)
    staging: StorePath = (
        Path(args.staging_dir) if args.staging_dir else store_root(config, "staging")
    )
    release_dirs = store_dirs(store_root(config, "releases_root"), config.release_stores)
    exists = reuse.store_checker(staging, release_dirs)
    run_env = tuple(sorted(env.items()))
    git_env = git_environment(config, repo_root)

    status = 0
    for target in targets:
        graph = resolve(repo, [target], image=image, env=env)

        def inputs_of(key: tuple[str, str], hashes: list[str], graph: Any = graph) -> Any:
            return key_inputs(
                graph.packages[key], config, repo_root, image_digest=digest, env=run_env,
                dependency_sha256=hashes, git_env=git_env,
            )  # fmt: skip

        def without_script(key: tuple[str, str], now: Any) -> Any:
            for other in build_keys_but_script(ctx.engine, key[0], key[1], now.to_json()):
                found = reuse.find_reusable(ctx.engine, key[0], key[1], other, exists)
                if found is not None:
                    return found
            return None

        decisions = reuse.decide_reuse(
            ctx.engine, graph.build_order(), graph.transitive_dependencies, inputs_of, exists,
            fallback=without_script if args.no_script_filter else None,
        )  # fmt: skip
        root = target.key
        candidate = decisions[root].candidate
        if candidate is not None:
            releases = list_releases(ctx.engine, job=candidate.job_uuid)
            for art in candidate.artifacts:
                dates = [r.date for r in releases if r.path == art.path]  # newest first
                when = fmt_time(dates[0]) if dates else "unknown"
                place = staging / art.staging_path
                if not place.is_file():
                    place = next((d / art.path for d in release_dirs if (d / art.path).is_file()),
                                 place)  # fmt: skip
                print(f"[{when}] {url_of(place)}")
            continue
        status = 1
        print(f"{target.label} would be rebuilt:")
        blocked = [k for k in graph.transitive_dependencies(root) if decisions[k].candidate is None]
        root_inputs = decisions[root].inputs
        if root_inputs is None:
            labels = ", ".join(f"{n} {v}" for n, v in sorted(blocked))
            print(f"  dependencies would be rebuilt: {labels}")
            for dep in sorted(blocked):
                dep_inputs = decisions[dep].inputs
                if dep_inputs is not None:
                    for line in reuse.explain_difference(ctx.engine, dep[0], dep[1], dep_inputs):
                        print(f"  {dep[0]} {dep[1]}: {line}")
        else:
            for line in reuse.explain_difference(ctx.engine, root[0], root[1], root_inputs):
                print(f"  {line}")
    return status


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "find-artifact", help="artifacts a build would reuse, or why it would rebuild"
    )
    add_db_flags(p)
    p.add_argument("name", metavar="REGEX", help="unanchored regular expression on the name")
    p.add_argument("version", nargs="?", metavar="VERSION", help=CONSTRAINT_HELP)
    p.add_argument("-I", "--image", required=True, help="build image (full or short name)")
    add_env_flag(p, "build environment (repeatable)")
    p.add_argument(
        "-S", "--no-script-filter", action="store_true",
        help="also find artifacts built by a different script (other inputs equal)",
    )  # fmt: skip
    p.add_argument("--image-digest", help="image ID to assume instead of asking Docker")
    p.add_argument("--staging-dir", help="staging root (default: config staging)")
    p.set_defaults(func=disposing(cmd_find_artifact))
