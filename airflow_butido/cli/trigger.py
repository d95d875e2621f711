"""`butido trigger`: run a build DAG on an Airflow deployment over REST API v2 and follow it.

The CI client: log in, unpause the image's DAG, trigger a run with the run conf, poll until
it ends, print every package task's state and exit with the run's result (0 success,
1 failed, 3 still running when ``--timeout`` expired).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow_butido.cli.common import add_run_flags
from airflow_butido.manifest import FAILURE_XCOM_KEY
from airflow_butido.run_inputs import env_pairs

EXIT_TIMEOUT = 3
_BOOKKEEPING_TASKS = ("plan", "report")
# what Airflow accepts in a run id ([scheduler] allowed_run_id_pattern, by default)
_RUN_ID_BAD = re.compile(r"[^A-Za-z0-9_.~:+-]")
_RUN_ID_WHAT_MAX = 120


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "trigger",
        help="trigger a build on an Airflow deployment and follow it",
        description=(
            "Trigger the build DAG of an image on an Airflow deployment (REST API v2), "
            "follow the run and print per-package states. Credentials: --user/--password, "
            "or $BUTIDO_AIRFLOW_USER/$BUTIDO_AIRFLOW_PASSWORD, or a token in "
            "$BUTIDO_AIRFLOW_TOKEN."
        ),
    )
    p.add_argument("packages", nargs="*", metavar="NAME", help='"NAME" or "NAME VERSION"')
    p.add_argument(
        "--airflow",
        required="BUTIDO_AIRFLOW_URL" not in os.environ,
        default=os.environ.get("BUTIDO_AIRFLOW_URL"),
        metavar="URL",
        help="API server base URL, e.g. http://airflow:8080 (default: $BUTIDO_AIRFLOW_URL)",
    )
    p.add_argument("--user", default=os.environ.get("BUTIDO_AIRFLOW_USER"))
    p.add_argument("--password", default=os.environ.get("BUTIDO_AIRFLOW_PASSWORD"))
    add_run_flags(p)
    p.add_argument(
        "--dag-id",
        help="DAG to trigger (default: <dag_id_prefix><short image name> from the repository)",
    )
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop following")
    p.add_argument("--poll", type=float, default=3.0, metavar="S", help="poll interval")
    p.add_argument("--no-unpause", action="store_true", help="leave a paused DAG paused")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from airflow_butido.airflow_rest import AirflowClient
    from airflow_butido.plan import RunRequest

    # the run inputs are checked before anything goes over the network
    request = RunRequest(tuple(args.packages), env_pairs(args.env), args.force_rebuild)
    dag_id = args.dag_id or dag_id_for(args.repo, args.image)
    token = os.environ.get("BUTIDO_AIRFLOW_TOKEN")
    client = AirflowClient(args.airflow, token=token, username=args.user, password=args.password)
    if not token or args.user:
        client.login()
    if not args.no_unpause:
        client.set_paused(dag_id, False)
    run_id = client.trigger(dag_id, request.to_conf(), run_id=run_id_for(request.packages))
    # progress goes to stderr when stdout is for a machine (--json / --csv)
    progress_out = sys.stderr if (args.json or args.csv) else sys.stdout
    print(f"triggered {dag_id} run {run_id}", file=progress_out, flush=True)

    seen: dict[str, str | None] = {}
    started = time.monotonic()

    def progress(_run: dict[str, Any]) -> None:
        for ti in client.task_instances(dag_id, run_id):
            task_id, state = ti["task_id"], ti.get("state")
            changed = seen.get(task_id, "<new>") != state and state not in (None, "scheduled")
            if changed and not (state == "skipped" and task_id not in _BOOKKEEPING_TASKS):
                elapsed = time.monotonic() - started
                print(f"[{elapsed:6.0f}s] {task_id}: {state}", file=progress_out, flush=True)
            seen[task_id] = state

    final = client.wait(dag_id, run_id, timeout=args.timeout, interval=args.poll, on_poll=progress)
    _print_summary(client, dag_id, run_id, final, args)
    state = final.get("state")
    if state == "success":
        return 0
    if state == "failed":
        return 1
    print(f"run {run_id} still {state} after {args.timeout:.0f} s", file=sys.stderr)
    return EXIT_TIMEOUT


def run_id_for(packages: Sequence[str], now: datetime | None = None) -> str:
    """``butido__<what>__<UTC time>``: the run list then says what each run built, e.g.
    ``butido__greet-suite__2026-11-30T12:00:00.123456`` (``default`` for the default set)."""
    what = "+".join(_RUN_ID_BAD.sub("_", "-".join(p.split())) for p in packages) or "default"
    if len(what) > _RUN_ID_WHAT_MAX:
        what = what[: _RUN_ID_WHAT_MAX - 3] + "..."
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"butido__{what}__{stamp}"


def dag_id_for(repo: Any, image: str) -> str:
    """``<prefix><short name>`` from the repository's configuration, if one is at hand;
    otherwise the image is taken as the short name with the default prefix."""
    try:
        from airflow_butido.recipes.config import load_config

        config = load_config(repo)
    except Exception:
        return f"butido_{image}"
    full = config.resolve_image(image)
    short = next(i.short_name for i in config.docker.images if i.name == full)
    prefix = getattr(getattr(config, "airflow", None), "dag_id_prefix", None)
    return f"{'butido_' if prefix is None else prefix}{short}"


def _print_summary(
    client: Any, dag_id: str, run_id: str, final: dict[str, Any], args: argparse.Namespace
) -> None:
    """The report task's report, as ``butido build`` prints it; when the run never got to a
    report (the plan failed), why the failed tasks failed."""
    from airflow_butido.cli.output import print_table
    from airflow_butido.report import report_from_json

    data = client.xcom(dag_id, run_id, "report")
    report = report_from_json(data) if isinstance(data, dict) and "packages" in data else None
    failures = (
        {o.task_id: o.message for o in report.of("failed")}
        if report is not None
        else _failure_messages(client, dag_id, run_id)
    )
    artifacts = [path for o in report.outcomes for path in o.artifacts] if report else []
    if args.json:
        json.dump(
            {"dag_id": dag_id, "run_id": run_id, "state": final.get("state"),
             "submit_uuid": report.submit_uuid if report else None, "artifacts": artifacts,
             "report": data if report is not None else None, "failures": failures},
            sys.stdout, indent=2,
        )  # fmt: skip
        print()
        return
    if args.csv:
        rows = [(o.label, o.outcome, o.message) for o in report.outcomes] if report else []
        print_table(("package", "outcome", "message"), rows, as_csv=True)
        return
    if report is not None:
        print(f"\n{report.format()}")
    for path in artifacts:
        print(f"artifact: {path}")
    for task_id, message in failures.items() if report is None else ():
        first, *rest = message.splitlines() or [""]
        print(f"{task_id} failed: {first}" + "".join(f"\n    {line}" for line in rest))
    print(f"run {run_id}: {final.get('state')}")


def _failure_messages(client: Any, dag_id: str, run_id: str) -> dict[str, str]:
    """Why the plan or a package failed, as the failed task left it in XCom."""
    messages = {}
    for ti in client.task_instances(dag_id, run_id):
        if ti.get("state") != "failed" or ti["task_id"] == "report":
            continue
        record = client.xcom(dag_id, run_id, ti["task_id"], key=FAILURE_XCOM_KEY)
        if isinstance(record, dict) and record.get("message"):
            messages[ti["task_id"]] = str(record["message"])
    return messages
