"""``butido db ...``: set up the build database and query the build record."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_butido.cli.common import (
    DbContext,
    add_db_flags,
    add_env_flag,
    add_limit,
    add_text_flags,
    add_time_filters,
    database_url_for,
    disposing,
    fmt_time,
    format_text,
    highlight_theme_of,
    limit_of,
    load_config_for,
    open_db,
    time_filters,
    uuid_arg,
)
from airflow_butido.cli.output import add_format_flags, print_table
from airflow_butido.errors import ButidoError
from airflow_butido.run_inputs import parse_env_assignments


def _out(args: argparse.Namespace, headers: Sequence[str], rows: Any) -> None:
    print_table(headers, rows, as_csv=args.csv, as_json=args.json)


# --- commands ----------------------------------------------------------------------------


def cmd_setup(args: argparse.Namespace) -> int:
    from airflow_butido.db.migrate import upgrade

    ctx = open_db(args, need_schema=False)
    print(upgrade(ctx.engine).describe())
    return 0


def cmd_submits(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import list_submits

    ctx = open_db(args)
    found = list_submits(
        ctx.engine,
        with_pkg=args.with_pkg,
        for_pkg=args.for_pkg,
        commit=args.commit,
        image=ctx.resolve_image(args.image),
        limit=limit_of(args, ctx),
    )
    _out(
        args,
        ("Time", "UUID", "For Package", "Version", "Image", "Commit"),
        [
            (fmt_time(x.time), x.uuid, x.package, x.version, x.image,
             x.commit + (" (dirty)" if x.dirty else ""))
            for x in found
        ],
    )  # fmt: skip
    return 0


JOB_HEADERS = ("Submit", "Job", "Time", "Host", "State", "Package", "Version", "Distro", "Type")


def _job_cells(ctx: DbContext, x: Any) -> tuple[Any, ...]:
    from airflow_butido.db.queries import artifact_type

    return (
        x.submit_uuid, x.job_uuid, fmt_time(x.time), x.endpoint, x.state, x.package,
        x.version, ctx.short_image(x.image), artifact_type(x.artifact),
    )  # fmt: skip


def cmd_jobs(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import list_jobs

    ctx = open_db(args)
    older_than, newer_than = time_filters(args)
    found = list_jobs(
        ctx.engine,
        submit=args.submit,
        image=ctx.resolve_image(args.image),
        env=parse_env_assignments(args.env),
        endpoint=args.endpoint,
        package=args.package,
        older_than=older_than,
        newer_than=newer_than,
        limit=limit_of(args, ctx),
    )
    _out(args, JOB_HEADERS, [_job_cells(ctx, x) for x in found])
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import submit_detail

    ctx = open_db(args)
    detail = submit_detail(ctx.engine, args.uuid)
    if detail is None:
        raise ButidoError(f"no submit {args.uuid}")
    sub = detail.submit
    counts = {state: 0 for state in ("success", "failed", "running", "reused", "unknown")}
    seen: set[str] = set()
    for job in detail.jobs:
        if job.job_uuid not in seen:
            seen.add(job.job_uuid)
            counts[job.state] = counts.get(job.state, 0) + 1
    summary = [
        ("Submit", sub.uuid),
        ("Time", fmt_time(sub.time)),
        ("Package", f"{sub.package} {sub.version}"),
        ("Image", sub.image),
        ("Commit", sub.commit + (" (dirty)" if sub.dirty else "")),
        ("DAG run", f"{detail.dag_id} {detail.run_id}" if detail.dag_id else ""),
        ("Environment", " ".join(f"{k}={v}" for k, v in detail.env)),
        ("Jobs", ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"),
    ]
    if detail.outcomes:
        tally = Counter(outcome for _, _, outcome, _ in detail.outcomes)
        summary.append(("Packages", ", ".join(f"{n} {o}" for o, n in sorted(tally.items()))))
    if args.json:
        data: dict[str, Any] = dict(summary)
        data["jobs"] = [
            dict(zip(JOB_HEADERS, _job_cells(ctx, j), strict=True)) for j in detail.jobs
        ]
        data["packages"] = [
            {"package": n, "version": v, "outcome": o, "message": m}
            for n, v, o, m in detail.outcomes
        ]
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not args.csv:
        width = max(len(k) for k, _ in summary)
        for key, value in summary:
            print(f"{key.ljust(width)}  {value}")
        print()
    _out(args, JOB_HEADERS, [_job_cells(ctx, x) for x in detail.jobs])
    in_run = [row for row in detail.outcomes if row[2] != "not requested"]
    if in_run and not args.csv:
        print()
        _out(args, ("Package", "Version", "Outcome", "Message"), in_run)
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import job_detail
    from airflow_butido.jobs import format_phases

    ctx = open_db(args)
    job = job_detail(ctx.engine, args.uuid, with_log=args.log or args.json)
    if job is None:
        raise ButidoError(f"no job {args.uuid}")
    fields = [
        ("Job", job.uuid),
        ("Submit", job.submit_uuid),
        ("Package", f"{job.package} {job.version}"),
        ("Image", job.image + (f" ({job.image_digest})" if job.image_digest else "")),
        ("Endpoint", job.endpoint),
        ("Container", job.container),
        ("State", job.state),
        ("Exit status", "" if job.exit_status is None else job.exit_status),
        ("Failure", job.failure_class or ""),
        ("Started", fmt_time(job.started_at)),
        ("Finished", fmt_time(job.finished_at)),
        ("DAG run", f"{job.dag_id} {job.run_id} try {job.try_number}" if job.dag_id else ""),
        ("Build key", job.build_key or ""),
        ("Reused from", f"{job.reused_from} ({job.reuse_reason})" if job.reused_from else ""),
        ("Artifacts", " ".join(p for p, _, _ in job.artifacts)),
        ("Inputs", " ".join(job.inputs)),
        ("Phases", format_phases(job.phase_seconds).removeprefix("phases: ")),
    ]
    if args.json:
        data: dict[str, Any] = dict(fields)
        data["environment"] = dict(job.env)
        data["script"] = job.script
        data["log"] = job.log
        data["build_key_inputs"] = (
            json.loads(job.build_key_inputs) if job.build_key_inputs else None
        )
        data["artifacts"] = [{"path": p, "sha256": h, "size": n} for p, h, n in job.artifacts]
        data["Phases"] = job.phase_seconds
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.csv:
        print_table(("Field", "Value"), fields, as_csv=True)
    else:
        width = max(len(k) for k, _ in fields)
        for key, value in fields:
            print(f"{key.ljust(width)}  {value}")
    if args.env:
        print("\nEnvironment:")
        _out(args, ("Name", "Value"), job.env)
    if args.script:
        print("\nScript:")
        theme = highlight_theme_of(args, ctx.config)
        sys.stdout.write(
            format_text(job.script, line_numbers=args.line_numbers, highlight_theme=theme)
        )
    if args.log:
        print("\nLog:")
        sys.stdout.write(format_text(job.log, line_numbers=args.line_numbers))
    return 0


def cmd_log_of(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import job_detail

    ctx = open_db(args)
    job = job_detail(ctx.engine, args.uuid)
    if job is None:
        raise ButidoError(f"no job {args.uuid}")
    sys.stdout.write(job.log if job.log.endswith("\n") or not job.log else job.log + "\n")
    return 0


def cmd_artifacts(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import list_artifacts

    ctx = open_db(args)
    found = list_artifacts(ctx.engine, job=args.job, limit=limit_of(args, ctx))
    _out(
        args,
        ("Path", "Released", "Job", "SHA256", "Size"),
        [(x.path, fmt_time(x.released) or "no", x.job_uuid, x.sha256, x.size) for x in found],
    )
    return 0


def cmd_releases(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import list_releases
    from airflow_butido.stores import release_dir

    ctx = open_db(args)
    older_than, newer_than = time_filters(args)
    found = list_releases(
        ctx.engine,
        store=args.to,
        package=args.package,
        older_than=older_than,
        newer_than=newer_than,
        limit=limit_of(args, ctx),
    )
    from airflow_butido.object_store import store_root, url_of

    root = store_root(ctx.config, "releases_root") if ctx.config is not None else None
    cells = []
    for x in found:
        where = x.path
        if root is not None:
            full = url_of(release_dir(root, x.store) / x.path)
            where = (
                full
                if (release_dir(root, x.store) / x.path).is_file()
                else (f"{full} (is not available locally)")
            )
        cells.append((x.package, x.version, fmt_time(x.date), x.store, where))
    _out(args, ("Package", "Version", "Date", "Store", "Path"), cells)
    return 0


def cmd_envvars(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import list_envvars

    _out(args, ("Name", "Value"), list_envvars(open_db(args).engine))
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import list_images

    _out(args, ("Name",), [(n,) for n in list_images(open_db(args).engine)])
    return 0


DB_TOOLS = {"postgresql": ("psql", "pgcli"), "sqlite": ("sqlite3",)}


def client_command(url: str, tool: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line of an interactive client for ``url`` and the variables to add to
    its environment. The password travels in ``PGPASSWORD``, never in the arguments (they
    are visible to every user in ``ps``)."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    tools = DB_TOOLS.get(backend)
    if tools is None:
        raise ButidoError(f"db cli: no client for {backend} databases")
    tool = tool or tools[0]
    if tool not in tools:
        raise ButidoError(
            f"db cli: --tool {tool} does not open {backend} databases (use {', '.join(tools)})"
        )
    if backend == "sqlite":
        path = parsed.database or ""
        if not path or path == ":memory:" or not Path(path).is_file():
            where = path or ":memory:"
            raise ButidoError(f"database {where} does not exist: run `butido db setup`")
        return [tool, path], {}
    env: dict[str, str] = {}
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    timeout = parsed.query.get("connect_timeout")
    if isinstance(timeout, str):
        env["PGCONNECT_TIMEOUT"] = timeout
    argv = [tool]
    for flag, value in (
        ("-h", parsed.host),
        ("-p", parsed.port),
        ("-U", parsed.username),
        ("-d", parsed.database),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv, env


def cmd_cli(args: argparse.Namespace) -> int:
    import os
    import shutil

    config = load_config_for(args, required=False)
    argv, extra_env = client_command(database_url_for(args, config), args.tool)
    if shutil.which(argv[0]) is None:
        raise ButidoError(f"db cli: {argv[0]} is not installed (or not on PATH)")
    sys.stdout.flush()
    os.execvpe(argv[0], argv, {**os.environ, **extra_env})
    return 0  # not reached: exec replaces this process


def cmd_repair(args: argparse.Namespace) -> int:
    from airflow_butido.db.records import repair_abandoned

    done = repair_abandoned(open_db(args).engine)
    for job in done.jobs:
        print(f"job {job}: failed (abandoned: no heartbeat)")
    print(f"{len(done.jobs)} job(s) repaired, {done.leases} slot lease(s) and {done.claims} "
          "build claim(s) freed")  # fmt: skip
    return 0


# --- parser ------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="the build database")
    sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND")

    def command(name: str, func: Any, help_text: str, *, table: bool = True) -> Any:
        p = sub.add_parser(name, help=help_text)
        add_db_flags(p)
        if table:
            add_format_flags(p)
        p.set_defaults(func=disposing(func))
        return p

    p = command("cli", cmd_cli, "open psql (PostgreSQL) or sqlite3 (SQLite) on the database",
                table=False)  # fmt: skip
    p.add_argument(
        "--tool", choices=sorted({t for tools in DB_TOOLS.values() for t in tools}),
        help="client program (default: psql for PostgreSQL, sqlite3 for SQLite)",
    )  # fmt: skip

    command("setup", cmd_setup, "create the schema, or upgrade (and adopt) an existing one",
            table=False)  # fmt: skip

    p = command("submits", cmd_submits, "list submits")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--with-pkg", metavar="PKG", help="submits that built PKG")
    who.add_argument("--for-pkg", metavar="PKG", help="submits requested for PKG")
    p.add_argument("--commit", metavar="HASH", help="repository commit (prefix)")
    p.add_argument("-I", "--image", help="requested image")
    add_limit(p)

    p = command("submit", cmd_submit, "one submit: summary and jobs")
    p.add_argument("uuid", metavar="UUID", type=uuid_arg)

    p = command("jobs", cmd_jobs, "list jobs (one row per artifact)")
    p.add_argument("-S", "--submit", metavar="UUID", type=uuid_arg, help="jobs of this submit")
    p.add_argument("-I", "--image", help="jobs on this image")
    add_env_flag(p, "jobs run with K=V (repeatable)")
    p.add_argument("-e", "--endpoint", help="jobs on this endpoint")
    p.add_argument("-p", "--package", help="jobs of this package")
    add_time_filters(p)
    add_limit(p)

    p = command("job", cmd_job, "one job's details")
    p.add_argument("uuid", metavar="UUID", type=uuid_arg)
    p.add_argument("-L", "--log", action="store_true", help="print the log")
    p.add_argument("-s", "--script", action="store_true", help="print the script")
    p.add_argument("-E", "--env", action="store_true", help="print the environment")
    add_text_flags(p)

    p = command("log-of", cmd_log_of, "print a job's log", table=False)
    p.add_argument("uuid", metavar="UUID", type=uuid_arg)

    p = command("artifacts", cmd_artifacts, "list artifacts")
    p.add_argument("-J", "--job", metavar="UUID", type=uuid_arg, help="artifacts of this job")
    add_limit(p)

    p = command("releases", cmd_releases, "list releases")
    p.add_argument("--to", metavar="STORE", help="releases in this store")
    p.add_argument("-p", "--package", help="releases of this package")
    add_time_filters(p)
    add_limit(p)

    command("repair", cmd_repair, "fail the jobs of dead builds, free their slots and claims",
            table=False)  # fmt: skip
    command("envvars", cmd_envvars, "list recorded environment variables")
    command("images", cmd_images, "list recorded images")
