"""``butido release new|rm|list``: copy artifacts of a submit into a release store.

``release new`` also tells Airflow (an event on the release store's asset) when
``BUTIDO_AIRFLOW_URL`` is set."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from airflow_butido.cli.common import (
    add_db_flags,
    add_limit,
    add_time_filters,
    confirm,
    disposing,
    open_db,
    uuid_arg,
)
from airflow_butido.cli.db import cmd_releases
from airflow_butido.cli.output import add_format_flags


def cmd_new(args: argparse.Namespace) -> int:
    from airflow_butido.object_store import StorePath, store_root, url_of
    from airflow_butido.release import release_new

    ctx = open_db(args, need_config=True)
    cfg = ctx.repo_config

    def confirm_update(dest: StorePath) -> bool:
        return confirm(f"Going to update {url_of(dest)}", non_interactive=args.non_interactive)

    released = release_new(
        ctx.engine,
        submit_uuid=args.submit,
        store=args.to,
        staging_root=store_root(cfg, "staging"),
        releases_root=store_root(cfg, "releases_root"),
        stores=tuple(cfg.release_stores),
        name=args.name,
        version=args.version,
        update=args.update,
        confirm_update=confirm_update,
    )
    if not args.quiet:
        for item in released:
            print(f"{url_of(item.path)}{' (updated)' if item.replaced else ''}")
    announce_release(args.to, args.submit, released)
    return 0


def announce_release(store: str, submit: str, released: Sequence[Any]) -> None:
    """An event on the asset ``butido://release/<store>`` through Airflow's REST API, when
    ``BUTIDO_AIRFLOW_URL`` names a deployment (credentials as for `butido trigger`);
    without it, nothing: Airflow learns of a release only from this event."""
    from airflow_butido.object_store import url_of

    url = os.environ.get("BUTIDO_AIRFLOW_URL")
    if not url or not released:
        return
    from airflow_butido.airflow_rest import AirflowClient
    from airflow_butido.assets import release_uri

    token = os.environ.get("BUTIDO_AIRFLOW_TOKEN")
    user = os.environ.get("BUTIDO_AIRFLOW_USER")
    client = AirflowClient(url, token=token, username=user,
                           password=os.environ.get("BUTIDO_AIRFLOW_PASSWORD"))  # fmt: skip
    if not token or user:
        client.login()
    uri = release_uri(store)
    asset_id = client.asset_id(uri)
    if asset_id is None:
        print(f"warning: Airflow at {url} has no asset {uri} (no butido DAG deployed?); "
              "no event sent", file=sys.stderr)  # fmt: skip
        return
    client.add_asset_event(
        asset_id,
        {
            "store": store,
            "submit_uuid": submit,
            "released": [
                {"package": r.package, "version": r.version, "path": url_of(r.path),
                 "replaced": r.replaced}
                for r in released
            ],
        },
    )  # fmt: skip


def cmd_rm(args: argparse.Namespace) -> int:
    from airflow_butido.object_store import store_root, url_of
    from airflow_butido.release import ReleaseError, check_store, release_rm
    from airflow_butido.stores import release_dir

    ctx = open_db(args, need_config=True)
    cfg = ctx.repo_config
    check_store(args.from_store, cfg.release_stores)
    releases_root = store_root(cfg, "releases_root")
    question = f"Remove the newest release of {args.name} {args.version} from {args.from_store}?"
    if not confirm(question, non_interactive=args.non_interactive):
        raise ReleaseError(f"{args.name} {args.version}: not removed (declined)")
    removed = release_rm(
        ctx.engine,
        store=args.from_store,
        name=args.name,
        version=args.version,
        releases_root=releases_root,
        stores=tuple(cfg.release_stores),
    )
    print(f"removed {url_of(release_dir(releases_root, removed.store) / removed.path)}")
    return 0


class _IntermixedParser(argparse.ArgumentParser):
    """Positionals may come after options, as in ``new SUBMIT --to STORE NAME VERSION``
    (plain argparse takes SUBMIT, NAME and VERSION only as one run of words)."""

    _parsing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._parsing:  # the intermixed parse calls back into this method
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def _non_interactive(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--non-interactive", action="store_true", help=f"{what} without asking for confirmation"
    )


def register(subparsers: Any) -> None:
    release = subparsers.add_parser("release", help="release artifacts into a release store")
    sub = release.add_subparsers(
        dest="release_command", metavar="RELEASE_COMMAND", parser_class=_IntermixedParser
    )

    p = sub.add_parser("new", help="release the artifacts of a submit")
    add_db_flags(p)
    p.add_argument("submit", metavar="SUBMIT", type=uuid_arg, help="submit UUID")
    p.add_argument("--to", required=True, metavar="STORE", help="release store (config)")
    p.add_argument("name", nargs="?", metavar="NAME", help="only this package")
    p.add_argument("version", nargs="?", metavar="VERSION", help="only this exact version")
    p.add_argument("--update", action="store_true", help="replace already released files")
    _non_interactive(p, "replace released files (--update)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the paths")
    p.set_defaults(func=disposing(cmd_new))

    p = sub.add_parser("rm", help="remove the newest release of a package from a store")
    add_db_flags(p)
    p.add_argument("--from", dest="from_store", required=True, metavar="STORE")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="VERSION")
    _non_interactive(p, "remove")
    p.set_defaults(func=disposing(cmd_rm))

    p = sub.add_parser("list", help="list releases (same as `db releases`)")
    add_db_flags(p)
    add_format_flags(p)
    p.add_argument("--to", metavar="STORE", help="releases in this store")
    p.add_argument("-p", "--package", help="releases of this package")
    add_time_filters(p)
    add_limit(p)
    p.set_defaults(func=disposing(cmd_releases))
