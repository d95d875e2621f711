"""``butido endpoint [NAME] ping|stats|containers list|containers prune``.

NAME (optional, before the sub-command) restricts the command to one configured endpoint.
Containers are butido's when they carry the ``io.butido.managed`` label; ``prune`` only
ever removes those, and only when they have exited.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_butido.cli.output import add_format_flags, print_table
from airflow_butido.errors import ButidoError

if TYPE_CHECKING:
    from airflow_butido.recipes.config import Config, EndpointConfig

COMMANDS = ("ping", "stats", "containers")


def _config(args: argparse.Namespace) -> Config:
    from airflow_butido.recipes.config import load_config

    return load_config(args.repo)


def _endpoints(args: argparse.Namespace) -> list[EndpointConfig]:
    config = _config(args)
    if args.endpoint is not None:
        return [config.endpoint(args.endpoint)]
    if not config.endpoints:
        raise ButidoError("no endpoint configured (docker.endpoints in config.toml)")
    return list(config.endpoints)


def cmd_ping(args: argparse.Namespace) -> int:
    from airflow_butido.endpoints import connect, ping
    from airflow_butido.errors import InfrastructureError

    failed = 0
    for endpoint in _endpoints(args):
        try:
            api = connect(endpoint, timeout=endpoint.timeout)
        except InfrastructureError as exc:
            failed += 1
            print(f"{endpoint.name}: {exc}", file=sys.stderr)
            continue
        try:
            for i in range(args.count):
                try:
                    rtt = ping(endpoint, api)
                    print(f"{endpoint.name}: pong in {rtt * 1000:.1f} ms")
                except InfrastructureError as exc:
                    failed += 1
                    print(f"{endpoint.name}: {exc}", file=sys.stderr)
                if i + 1 < args.count:
                    time.sleep(args.sleep)
        finally:
            api.close()
    return 1 if failed else 0


def cmd_stats(args: argparse.Namespace) -> int:
    import docker
    import requests

    from airflow_butido.endpoints import connect
    from airflow_butido.errors import InfrastructureError

    rows = []
    for endpoint in _endpoints(args):
        try:
            api = connect(endpoint, timeout=endpoint.timeout)
            info = api.info()
        except (InfrastructureError, docker.errors.DockerException, requests.RequestException) as e:
            rows.append((endpoint.name, f"unreachable: {e}", "", "", "", "", "", "", ""))
            continue
        api.close()
        rows.append(
            (
                endpoint.name,
                info.get("Name", ""),
                info.get("Containers", ""),
                info.get("ContainersRunning", ""),
                info.get("Images", ""),
                info.get("KernelVersion", ""),
                _size(info.get("MemTotal")),
                info.get("NCPU", ""),
                info.get("OperatingSystem", ""),
            )
        )
    headers = (
        "endpoint",
        "name",
        "containers",
        "running",
        "images",
        "kernel",
        "memory",
        "cores",
        "os",
    )
    print_table(headers, rows, as_csv=args.csv, as_json=args.json)
    return 0


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    return f"{value / (1 << 30):.1f} GiB"


def _containers(api: Any, *, stopped: bool, everything: bool) -> list[dict[str, Any]]:
    from airflow_butido.container import MANAGED_LABEL

    filters = {} if everything else {"label": [f"{MANAGED_LABEL}=true"]}
    return api.containers(all=stopped, filters=filters)


def cmd_containers_list(args: argparse.Namespace) -> int:
    from airflow_butido.endpoints import connect
    from airflow_butido.errors import InfrastructureError

    rows = []
    unreachable = 0
    for endpoint in _endpoints(args):
        try:
            api = connect(endpoint, timeout=endpoint.timeout)
        except InfrastructureError as exc:
            print(f"{endpoint.name}: {exc}", file=sys.stderr)
            unreachable += 1
            continue
        try:
            found = _containers(api, stopped=args.list_stopped, everything=args.all)
        finally:
            api.close()
        for c in found:
            labels = c.get("Labels") or {}
            rows.append(
                (
                    endpoint.name,
                    c["Id"][:12],
                    ",".join(n.lstrip("/") for n in c.get("Names") or ()),
                    labels.get("io.butido.package", ""),
                    labels.get("io.butido.version", ""),
                    labels.get("io.butido.job", ""),
                    labels.get("io.butido.submit", ""),
                    c.get("Image", ""),
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.get("Created", 0))),
                    c.get("Status", ""),
                )
            )
    headers = (
        "endpoint",
        "container",
        "name",
        "package",
        "version",
        "job",
        "submit",
        "image",
        "created",
        "status",
    )
    print_table(headers, rows, as_csv=args.csv, as_json=args.json)
    # The rows of the endpoints that answered are printed; the exit status says the
    # list is incomplete.
    return 1 if unreachable else 0


def cmd_containers_prune(args: argparse.Namespace) -> int:
    import docker

    from airflow_butido.endpoints import connect
    from airflow_butido.errors import InfrastructureError

    plan: list[tuple[EndpointConfig, Any, list[dict[str, Any]]]] = []
    for endpoint in _endpoints(args):
        try:
            api = connect(endpoint, timeout=endpoint.timeout)
        except InfrastructureError as exc:
            print(f"{endpoint.name}: skipped: {exc}", file=sys.stderr)
            continue
        exited = [
            c
            for c in _containers(api, stopped=True, everything=False)
            if c.get("State") in ("exited", "dead")
        ]
        plan.append((endpoint, api, exited))
    total = sum(len(found) for _, _, found in plan)
    try:
        if not total:
            print("no exited butido containers")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise ButidoError(f"{total} containers would be removed; confirm with --yes")
            answer = input(f"Remove {total} exited butido containers? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing removed")
                return 1
        removed = 0
        for endpoint, api, found in plan:
            for c in found:
                try:
                    api.remove_container(c["Id"], v=True)
                    removed += 1
                    print(f"{endpoint.name}: removed {c['Id'][:12]}")
                except docker.errors.NotFound:
                    pass
        print(f"removed {removed} containers")
        return 0
    finally:
        for _, api, _ in plan:
            api.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="butido endpoint [NAME]")
    sub = parser.add_subparsers(dest="endpoint_command", metavar="COMMAND", required=True)
    p = sub.add_parser("ping", help="ping the endpoints (GET /_ping)")
    p.add_argument("-n", "--count", type=int, default=1, help="pings per endpoint (default 1)")
    p.add_argument("--sleep", type=float, default=1.0, help="seconds between pings")
    p.set_defaults(func=cmd_ping)
    p = sub.add_parser("stats", help="docker info of the endpoints")
    add_format_flags(p)
    p.set_defaults(func=cmd_stats)
    containers = sub.add_parser("containers", help="butido's containers on the endpoints")
    csub = containers.add_subparsers(dest="containers_command", metavar="COMMAND", required=True)
    p = csub.add_parser("list", help="list butido's containers (running ones by default)")
    p.add_argument("--list-stopped", action="store_true", help="include exited containers")
    p.add_argument("--all", action="store_true", help="include containers not made by butido")
    add_format_flags(p)
    p.set_defaults(func=cmd_containers_list)
    p = csub.add_parser("prune", help="remove butido's exited containers")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_containers_prune)
    return parser


def cmd_endpoint(args: argparse.Namespace) -> int:
    if args.help:
        _parser().print_help()
        return 0
    words: Sequence[str] = list(args.words)
    endpoint = None
    if words and words[0] not in COMMANDS and not words[0].startswith("-"):
        endpoint, words = words[0], words[1:]
    sub = _parser().parse_args(words)
    sub.repo = args.repo
    sub.endpoint = endpoint
    return int(sub.func(sub) or 0)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "endpoint",
        help="Docker endpoints: ping, stats, containers list|prune",
        description=(
            "butido endpoint [NAME] ping [-n N] | stats | containers list [--list-stopped] "
            "| containers prune [--yes]"
        ),
        add_help=False,
    )
    p.add_argument("-h", "--help", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_endpoint)
