"""``butido source url|of|list-missing|verify|download``: the source cache of packages."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from airflow_butido.cli.common import (
    CONSTRAINT_HELP,
    load_repo,
    require_packages,
    select_packages,
)
from airflow_butido.cli.output import add_format_flags, print_table
from airflow_butido.errors import ButidoError
from airflow_butido.object_store import StorePath, store_root, url_of

if TYPE_CHECKING:
    from airflow_butido.recipes.package import Package, Source
    from airflow_butido.recipes.repository import Repository


def _items(args: argparse.Namespace, repo: Repository) -> list[tuple[Package, Source]]:
    if args.name is not None and args.matching is not None:
        raise ButidoError("give either NAME or --matching, not both")
    if args.name is not None:
        packages = require_packages(repo, args.name, args.version)
    else:
        packages = select_packages(repo, None, args.version, regex=args.matching)
    return [(p, s) for p in packages for s in p.sources]


def _table(args: argparse.Namespace, headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    print_table(headers, rows, as_csv=args.csv, as_json=args.json)


def cmd_url(args: argparse.Namespace) -> int:
    repo = load_repo(args)
    rows = [(p.name, p.version, s.name, s.url) for p, s in _items(args, repo)]
    _table(args, ("package", "version", "source", "url"), rows)
    return 0


def _cached(args: argparse.Namespace) -> list[tuple[Package, Source, StorePath]]:
    """The selected sources with their places in the repository's source cache."""
    from airflow_butido.sources import source_path

    repo = load_repo(args)
    cache = store_root(repo.config, "source_cache")
    return [(p, s, source_path(cache, p, s)) for p, s in _items(args, repo)]


def cmd_of(args: argparse.Namespace) -> int:
    rows = [(p.name, p.version, s.name, url_of(path)) for p, s, path in _cached(args)]
    _table(args, ("package", "version", "source", "path"), rows)
    return 0


def cmd_list_missing(args: argparse.Namespace) -> int:
    rows = [
        (p.name, p.version, s.name, url_of(path))
        for p, s, path in _cached(args)
        if not path.is_file()
    ]
    _table(args, ("package", "version", "source", "path"), rows)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from airflow_butido.sources import SourceError, verify_source

    rows = []
    failed = 0
    items = _cached(args)
    for p, s, path in items:
        try:
            verify_source(path, s)
            rows.append((p.name, p.version, s.name, "ok", ""))
        except SourceError as exc:
            failed += 1
            rows.append((p.name, p.version, s.name, "FAILED", str(exc)))
    _table(args, ("package", "version", "source", "result", "message"), rows)
    if failed:
        raise ButidoError(f"{failed} of {len(items)} sources failed verification")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from airflow_butido.sources import download_sources

    repo = load_repo(args)
    items = _items(args, repo)

    def on_event(event: Any) -> None:
        if event.kind in ("warning", "failed"):
            print(
                f"{event.label} {event.source_name}: {event.kind}: {event.message}", file=sys.stderr
            )

    results = download_sources(
        store_root(repo.config, "source_cache"),
        items,
        force=args.force,
        timeout=args.timeout,
        deadline_seconds=repo.config.source_download_deadline,
        max_bytes=repo.config.source_download_max_mb << 20,
        on_event=on_event,
    )
    rows = [
        (r.label, r.source_name, "ok" if r.ok else "FAILED", url_of(r.path), r.message)
        for r in results
    ]
    _table(args, ("package", "source", "result", "path", "message"), rows)
    failed = sum(1 for r in results if not r.ok)
    if failed:
        raise ButidoError(f"{failed} of {len(results)} downloads failed")
    return 0


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", help="package name (default: all)")
    parser.add_argument("version", metavar="VERSION", nargs="?", help=CONSTRAINT_HELP)
    parser.add_argument(
        "--matching", metavar="REGEX", help="packages whose name matches this regular expression"
    )
    add_format_flags(parser)


def register(subparsers: Any) -> None:
    top = subparsers.add_parser("source", help="inspect, verify and download package sources")
    sub = top.add_subparsers(dest="source_command", metavar="SUBCOMMAND", required=True)
    for name, func, text in (
        ("url", cmd_url, "print the source URLs"),
        ("of", cmd_of, "print the source cache paths"),
        ("list-missing", cmd_list_missing, "list sources missing from the cache"),
        ("verify", cmd_verify, "check the hashes of cached sources"),
    ):
        p = sub.add_parser(name, help=text)
        _selection(p)
        p.set_defaults(func=func)
    p = sub.add_parser("download", help="download sources into the cache, then verify them")
    _selection(p)
    p.add_argument("--force", action="store_true", help="download even if the file exists")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="network timeout in seconds (default 60)",
    )
    p.set_defaults(func=cmd_download)
