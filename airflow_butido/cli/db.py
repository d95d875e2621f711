"""``butido db ...``: set up the build database and query the build record."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow_butido.cli.output import add_format_flags, print_table
from airflow_butido.errors import ButidoError

DEFAULT_LIMIT = 10


# --- shared by every command that touches the database ------------------------------


def add_db_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db-url",
        metavar="URL",
        help="SQLAlchemy URL of the build database (overrides the configuration)",
    )


@dataclass
class DbContext:
    engine: Any
    config: Any  # the repository's Config, or None when --db-url alone was given

    @property
    def default_limit(self) -> int:
        limit = getattr(self.config, "database_default_query_limit", None)
        return DEFAULT_LIMIT if limit is None else int(limit)

    def short_image(self, name: str) -> str:
        shorten = getattr(self.config, "short_image_name", None)
        return shorten(name) if callable(shorten) else name


def load_config_for(args: argparse.Namespace, *, required: bool) -> Any | None:
    """The repository's config; optional when ``--db-url`` names the database."""
    from airflow_butido.recipes.config import load_config

    try:
        return load_config(Path(args.repo))
    except ButidoError:
        if required:
            raise
        return None


def open_db(
    args: argparse.Namespace, *, need_schema: bool = True, need_config: bool = False
) -> DbContext:
    from airflow_butido.db.engine import database_url, make_engine

    url = getattr(args, "db_url", None)
    config = load_config_for(args, required=need_config or not url)
    url = database_url(config, url=url, repo_root=Path(args.repo))
    if need_schema:
        _require_sqlite_file(url)
    # One command, one connection reused by its statements; disposed by disposing().
    engine = make_engine(url, pool_size=1, pool_pre_ping=False)
    args.db_engines = [*getattr(args, "db_engines", []), engine]
    if need_schema:
        check_schema(engine)
    return DbContext(engine, config)


def _require_sqlite_file(url: str) -> None:
    """A query must not create an empty SQLite file (and its directories) on the way."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return  # make_engine reports it
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).is_file():
        raise ButidoError(f"database {path} does not exist: run `butido db setup`")


def disposing(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command, then close the database connections it opened."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        finally:
            for engine in getattr(args, "db_engines", []):
                engine.dispose()

    return run


def check_schema(engine: Any) -> None:
    from airflow_butido.db.migrate import current_state, head_revision

    state = current_state(engine)
    if state == head_revision():
        return
    where = engine.url.render_as_string(hide_password=True)
    if state == "empty":
        raise ButidoError(f"database {where} has no butido schema: run `butido db setup`")
    if state == "butido-0.5":
        raise ButidoError(
            f"database {where} is a butido 0.5 database: run `butido db setup` to adopt it"
        )
    from airflow_butido.db.migrate import known_revisions, unknown_revision_error

    if state not in known_revisions():
        raise unknown_revision_error(engine, state)
    raise ButidoError(f"database {where} is at revision {state}: run `butido db setup`")


def limit_of(args: argparse.Namespace, ctx: DbContext) -> int | None:
    limit = ctx.default_limit if args.limit is None else args.limit
    if limit < 0:
        raise ButidoError(f"--limit must be 0 (unlimited) or positive, not {limit}")
    return limit or None


def parse_env_pairs(items: Sequence[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ButidoError(f"-E {item!r}: expected NAME=VALUE")
        env[name] = value
    return env


_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "M": 2630016, "month": 2630016, "months": 2630016,
    "y": 31557600, "year": 31557600, "years": 31557600,
}  # fmt: skip
_DURATION_PART = re.compile(r"\s*(\d+)\s*([A-Za-z]+)")


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time: a duration ago (``2h``, ``3weeks``, ``1d 12h``) or a date
    ``YYYY-MM-DD[ HH:MM:SS]`` (UTC)."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    seconds, pos = 0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos or match.group(2) not in _UNITS:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ButidoError(f"{text!r} is neither a duration (2h, 3weeks) nor YYYY-MM-DD[ HH:MM:SS]")
    return (now or datetime.now(UTC)) - timedelta(seconds=seconds)


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


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
        image=_image(ctx, args.image),
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


def _image(ctx: DbContext, name: str | None) -> str | None:
    if not name or ctx.config is None:
        return name
    try:
        return str(ctx.config.resolve_image(name))
    except ButidoError:
        return name  # a historic image no longer configured


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
    found = list_jobs(
        ctx.engine,
        submit=args.submit,
        image=_image(ctx, args.image),
        env=parse_env_pairs(args.env),
        endpoint=args.endpoint,
        package=args.package,
        older_than=parse_when(args.older_than) if args.older_than else None,
        newer_than=parse_when(args.newer_than) if args.newer_than else None,
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
    if args.json:
        data: dict[str, Any] = dict(summary)
        data["jobs"] = [
            dict(zip(JOB_HEADERS, _job_cells(ctx, j), strict=True)) for j in detail.jobs
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
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    from airflow_butido.db.queries import job_detail

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
        _print_text(job.script, args.line_numbers)
    if args.log:
        print("\nLog:")
        _print_text(job.log, args.line_numbers)
    return 0


def _print_text(text: str, numbered: bool) -> None:
    lines = text.splitlines()
    width = len(str(len(lines)))
    for number, line in enumerate(lines, 1):
        sys.stdout.write(f"{str(number).rjust(width)} | {line}\n" if numbered else line + "\n")


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

    ctx = open_db(args)
    found = list_releases(
        ctx.engine,
        store=args.to,
        package=args.package,
        older_than=parse_when(args.older_than) if args.older_than else None,
        newer_than=parse_when(args.newer_than) if args.newer_than else None,
        limit=limit_of(args, ctx),
    )
    root = getattr(ctx.config, "releases_root", None)
    cells = []
    for x in found:
        where = x.path
        if root is not None:
            full = Path(root) / x.store / x.path
            where = str(full) if full.is_file() else f"{full} (is not available locally)"
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


def cmd_repair(args: argparse.Namespace) -> int:
    from airflow_butido.db.records import repair_abandoned

    done = repair_abandoned(open_db(args).engine)
    for job in done.jobs:
        print(f"job {job}: failed (abandoned: no heartbeat)")
    print(f"{len(done.jobs)} job(s) repaired, {done.leases} slot lease(s) and {done.claims} "
          "build claim(s) freed")  # fmt: skip
    return 0


# --- parser ------------------------------------------------------------------------------


def uuid_arg(value: str) -> str:
    """A UUID argument in canonical form; anything else is a usage error, not a query
    PostgreSQL refuses with a traceback."""
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def add_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-L", "--limit", type=int, default=None,
        help="at most N rows (default: database_default_query_limit; 0 = unlimited)",
    )  # fmt: skip


def add_time_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--older-than", metavar="WHEN", help="e.g. 2h, 3weeks or 2024-03-01")
    parser.add_argument("--newer-than", metavar="WHEN", help="e.g. 2h, 3weeks or 2024-03-01")


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
    p.add_argument("-E", "--env", action="append", metavar="K=V", help="jobs with K=V")
    p.add_argument("-e", "--endpoint", help="jobs on this endpoint")
    p.add_argument("-p", "--package", help="jobs of this package")
    add_time_filters(p)
    add_limit(p)

    p = command("job", cmd_job, "one job's details")
    p.add_argument("uuid", metavar="UUID", type=uuid_arg)
    p.add_argument("-L", "--log", action="store_true", help="print the log")
    p.add_argument("-s", "--script", action="store_true", help="print the script")
    p.add_argument("-E", "--env", action="store_true", help="print the environment")
    p.add_argument(
        "--line-numbers", action=argparse.BooleanOptionalAction, default=False,
        help="number script and log lines",
    )  # fmt: skip

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
