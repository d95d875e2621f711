"""`butido airflow pool`: the Airflow pool of the package tasks, sized to the endpoints.

A package task waiting for an endpoint slot should wait in the scheduler, not in a running
task process: with ``[airflow] pool`` set, the package tasks run in that pool, and this
command gives it as many slots as the endpoints of ``config.toml`` take jobs in total
(their ``maxjobs`` summed). Over REST (``--airflow URL``) or, inside a deployment, through
``airflow pools set``.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_butido.errors import ButidoError

if TYPE_CHECKING:
    from airflow_butido.recipes.config import Config


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("airflow", help="set up an Airflow deployment for the builds")
    commands = group.add_subparsers(dest="airflow_command", metavar="COMMAND", required=True)
    p = commands.add_parser(
        "pool",
        help="create or update the package tasks' pool, sized to the endpoints' maxjobs",
        description=(
            "Create or update the Airflow pool named by [airflow] pool in airflow-butido.toml "
            "with as many slots as the endpoints' maxjobs add up to. With --airflow over the "
            "REST API (credentials as for `butido trigger`), else with `airflow pools set` "
            "(inside a deployment). Without a configured pool there is nothing to do."
        ),
    )
    p.add_argument(
        "--airflow",
        default=os.environ.get("BUTIDO_AIRFLOW_URL"),
        metavar="URL",
        help="API server base URL (default: $BUTIDO_AIRFLOW_URL; none: `airflow pools set`)",
    )
    p.add_argument("--user", default=os.environ.get("BUTIDO_AIRFLOW_USER"))
    p.add_argument("--password", default=os.environ.get("BUTIDO_AIRFLOW_PASSWORD"))
    p.add_argument("--dry-run", action="store_true", help="print the pool and its size only")
    p.set_defaults(func=run)


def pool_size(config: Config) -> int:
    """The slots the package tasks' pool gets: every endpoint's ``maxjobs``, summed."""
    return sum(endpoint.maxjobs for endpoint in config.docker.endpoints)


def run(args: argparse.Namespace) -> int:
    from airflow_butido.recipes.config import load_config

    config = load_config(Path(args.repo))
    name = config.airflow.pool
    if not name:
        print("no [airflow] pool in airflow-butido.toml: package tasks use the default pool")
        return 0
    slots = pool_size(config)
    if slots < 1:
        raise ButidoError("config.toml: docker.endpoints take no jobs (maxjobs adds up to 0)")
    description = f"butido package tasks: maxjobs of {len(config.docker.endpoints)} endpoint(s)"
    if args.dry_run:
        print(f"pool {name}: {slots} slots")
        return 0
    if args.airflow:
        _set_over_rest(args, name, slots, description)
    else:
        _set_with_airflow_cli(name, slots, description)
    print(f"pool {name}: {slots} slots")
    return 0


def _set_over_rest(args: argparse.Namespace, name: str, slots: int, description: str) -> None:
    from airflow_butido.airflow_rest import AirflowClient

    token = os.environ.get("BUTIDO_AIRFLOW_TOKEN")
    client = AirflowClient(args.airflow, token=token, username=args.user, password=args.password)
    if not token or args.user:
        client.login()
    client.set_pool(name, slots, description)


def _set_with_airflow_cli(name: str, slots: int, description: str) -> None:
    import subprocess

    airflow = shutil.which("airflow")
    if airflow is None:
        raise ButidoError(
            "`airflow` is not on PATH: give --airflow URL to set the pool over the REST API"
        )
    done = subprocess.run(
        [airflow, "pools", "set", name, str(slots), description],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ButidoError(
            f"airflow pools set {name} {slots} failed: {(done.stderr or done.stdout).strip()}"
        )
