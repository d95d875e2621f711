"""What every command shares: the database and its flags, time and duration arguments,
``-E``, selecting packages of the repository, and printing scripts and logs.

Command modules import from here (and from ``cli.output`` for tables), never from one
another. Imports stay light at module level (the CLI must start fast): SQLAlchemy and
the repository loader are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_butido.cli.output import add_format_flags
from airflow_butido.errors import ButidoError, ResolveError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airflow_butido.recipes.config import Config
    from airflow_butido.recipes.package import Package
    from airflow_butido.recipes.repository import Repository

DEFAULT_LIMIT = 10
# The largest LIMIT both PostgreSQL (bigint) and SQLite (64-bit integer) take.
MAX_LIMIT = 2**63 - 1


# --- the database flags -------------------------------------------------------------------

# butido's global flags: flag -> (config key, type, metavar, help). They win over
# config.toml and BUTIDO_* variables.
DB_FLAGS: dict[str, tuple[str, Callable[[str], Any], str, str]] = {
    "--db-url": ("database_host", str, "HOST", "database host (butido's name for it)"),
    "--db-port": (
        "database_port", lambda v: bounded_int(v, "--db-port", 1, 65535), "PORT", "database port"
    ),
    "--db-user": ("database_user", str, "USER", "database user"),
    "--db-password": ("database_password", str, "PASSWORD", "database password (or --db-pw)"),
    "--db-name": ("database_name", str, "NAME", "database name"),
    "--db-timeout": (
        "database_connection_timeout",
        lambda v: bounded_int(v, "--db-timeout", 0, 65535),
        "SECONDS",
        "database connection timeout",
    ),
}  # fmt: skip


def add_db_flags(parser: argparse.ArgumentParser, *, is_global: bool = False) -> None:
    """butido's database flags plus ``--database-url`` (a whole SQLAlchemy URL).

    The global parser sets the defaults; a sub-command repeating a flag after its name
    overrides the global value, and leaves it alone otherwise (``SUPPRESS``).
    """
    default = None if is_global else argparse.SUPPRESS
    group = parser.add_argument_group("database")
    for flag, (key, kind, metavar, text) in DB_FLAGS.items():
        names = [flag, "--db-pw"] if flag == "--db-password" else [flag]
        group.add_argument(*names, dest=key, type=kind, default=default, metavar=metavar, help=text)
    group.add_argument(
        "--database-url",
        metavar="URL",
        default=default,
        help="SQLAlchemy URL of the build database (wins over the --db-* flags and config)",
    )


def db_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``database_*`` settings given on the command line."""
    found = {}
    for key, *_ in DB_FLAGS.values():
        value = getattr(args, key, None)
        if value is not None:
            found[key] = value
    return found


@dataclass
class DbContext:
    engine: Engine
    config: Config | None  # None when the flags alone named the database

    @property
    def default_limit(self) -> int:
        limit = None if self.config is None else self.config.database_default_query_limit
        return DEFAULT_LIMIT if limit is None else int(limit)

    @property
    def repo_config(self) -> Config:
        """The config, for commands that opened the database with ``need_config``."""
        if self.config is None:
            raise ButidoError("this command needs the repository's config.toml")
        return self.config

    def short_image(self, name: str) -> str:
        return name if self.config is None else self.config.short_image_name(name)

    def resolve_image(self, name: str | None) -> str | None:
        """The full name of a configured image; a historic name is kept as given."""
        if not name or self.config is None:
            return name
        try:
            return str(self.config.resolve_image(name))
        except ButidoError:
            return name


def load_config_for(args: argparse.Namespace, *, required: bool) -> Config | None:
    """The repository's config; optional when the flags name the database."""
    from airflow_butido.recipes.config import load_config

    try:
        return load_config(Path(args.repo))
    except ButidoError:
        if required:
            raise
        return None


def _flags_name_a_database(args: argparse.Namespace) -> bool:
    """Whether the flags select the database (so that config.toml is optional)."""
    return bool(getattr(args, "database_url", None) or db_overrides(args))


def database_url_for(
    args: argparse.Namespace, config: Config | None, *, use_airflow: bool = True
) -> str:
    """The build database's URL: ``--database-url``, else the ``database_*`` settings with
    the ``--db-*`` flags over them, else the configured default (``use_airflow``: see
    ``db.engine.database_url``)."""
    from airflow_butido.db.engine import DB_SETTING_KEYS, database_url

    url = getattr(args, "database_url", None)
    if url:
        return str(url)
    overrides = db_overrides(args)
    if not overrides:
        return database_url(config, repo_root=Path(args.repo), use_airflow=use_airflow)
    settings = {key: getattr(config, key, None) for key in DB_SETTING_KEYS} | overrides
    missing = [k for k in ("database_host", "database_name") if not settings.get(k)]
    if missing:
        flags = {"database_host": "--db-url HOST", "database_name": "--db-name NAME"}
        raise ButidoError(
            "the --db-* flags need a database host and name: give "
            + " and ".join(flags[k] for k in missing)
            + " (or set "
            + ", ".join(missing)
            + " in config.toml)"
        )
    # database_url=None: the flags win over a configured SQLAlchemy URL too.
    from airflow_butido.recipes.config import Config

    merged: Any = dataclasses.replace(config or Config(), database_url=None)
    merged = dataclasses.replace(merged, **settings)
    return database_url(merged)


def open_db(
    args: argparse.Namespace, *, need_schema: bool = True, need_config: bool = False
) -> DbContext:
    from airflow_butido.db.engine import make_engine

    config = load_config_for(args, required=need_config or not _flags_name_a_database(args))
    url = database_url_for(args, config)
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


def check_schema(engine: Engine) -> None:
    from airflow_butido.db.migrate import (
        current_state,
        is_current,
        known_revisions,
        unknown_revision_error,
    )

    if is_current(engine):
        return
    state = current_state(engine)
    where = engine.url.render_as_string(hide_password=True)
    if state == "empty":
        raise ButidoError(f"database {where} has no butido schema: run `butido db setup`")
    if state == "butido-0.5":
        raise ButidoError(
            f"database {where} is a butido 0.5 database: run `butido db setup` to adopt it"
        )
    if state not in known_revisions():
        raise unknown_revision_error(engine, state)
    raise ButidoError(f"database {where} is at revision {state}: run `butido db setup`")


def confirm(question: str, *, non_interactive: bool) -> bool:
    """Ask ``question`` on the terminal; ``--non-interactive`` answers yes.

    Without a terminal there is nobody to ask: that is an error, not a silent yes.
    """
    if non_interactive:
        return True
    if not sys.stdin.isatty():
        raise ButidoError(f"{question}: confirmation needs a terminal (or pass --non-interactive)")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


# --- numbers, times and durations --------------------------------------------------------


def bounded_int(text: str, what: str, low: int, high: int) -> int:
    """An integer argument within [low, high]; anything else is a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: {text!r} is not an integer") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what}: {value} is out of range ({low} to {high})")
    return value


def limit_arg(text: str) -> int:
    return bounded_int(text, "--limit", 0, MAX_LIMIT)


def add_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-L", "--limit", type=limit_arg, default=None, metavar="N",
        help="at most N rows (default: database_default_query_limit; 0 = unlimited)",
    )  # fmt: skip


def limit_of(args: argparse.Namespace, ctx: DbContext) -> int | None:
    limit = ctx.default_limit if args.limit is None else args.limit
    if limit < 0:
        raise ButidoError(f"--limit must be 0 (unlimited) or positive, not {limit}")
    return limit or None


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
        try:
            seconds += int(match.group(1)) * _UNITS[match.group(2)]
        except ValueError:  # more digits than int() takes
            raise ButidoError(
                f"{text!r} reaches before the year 1: give a shorter duration or a date"
            ) from None
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ButidoError(f"{text!r} is neither a duration (2h, 3weeks) nor YYYY-MM-DD[ HH:MM:SS]")
    try:
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise ButidoError(
            f"{text!r} reaches before the year 1: give a shorter duration or a date"
        ) from None


def add_time_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--older-than", metavar="WHEN", help="e.g. 2h, 3weeks or 2024-03-01")
    parser.add_argument("--newer-than", metavar="WHEN", help="e.g. 2h, 3weeks or 2024-03-01")


def time_filters(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """``--older-than`` and ``--newer-than`` as points in time; errors name the flag."""

    def when(text: str | None, flag: str) -> datetime | None:
        if not text:
            return None
        try:
            return parse_when(text)
        except ButidoError as exc:
            raise ButidoError(f"{flag}: {exc}") from None

    return when(args.older_than, "--older-than"), when(args.newer_than, "--newer-than")


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def uuid_arg(value: str) -> str:
    """A UUID argument in canonical form; anything else is a usage error, not a query
    PostgreSQL refuses with a traceback."""
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


# --- -E ----------------------------------------------------------------------------------


def add_env_flag(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("-E", "--env", action="append", metavar="K=V", help=text)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """-I, -E, --force-rebuild and the output format of a build (``build``, ``trigger``)."""
    p.add_argument("-I", "--image", required=True, help="build image (full or short name)")
    add_env_flag(
        p, "environment variable for every build container and env conditions (repeatable)"
    )
    p.add_argument(
        "--force-rebuild", action="store_true", help="build even when an artifact is reusable"
    )
    add_format_flags(p)


# --- the repository ----------------------------------------------------------------------

CONSTRAINT_HELP = "version constraint: '=X' exact, 'X' semver-partial (1 matches 1.4.2)"


def load_repo(args: argparse.Namespace) -> Repository:
    """The repository through the parse cache the DAG file uses (``BUTIDO_PARSE_CACHE=off``
    skips it). A repository the cache cannot resolve as a whole is loaded plainly, so that
    a command sees (or, like ``lint``, reports) exactly what the loader says."""
    from airflow_butido import parse_cache
    from airflow_butido.recipes.repository import load_repository

    try:
        return parse_cache.load(args.repo).repo
    except ResolveError:
        return load_repository(args.repo)


def compile_regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ButidoError(f"invalid regular expression {text!r}: {exc}") from None


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


def add_package_args(parser: argparse.ArgumentParser, *, version_help: str) -> None:
    parser.add_argument("name", metavar="NAME", help="package name")
    parser.add_argument("version", metavar="VERSION", nargs="?", help=version_help)


# --- scripts and logs --------------------------------------------------------------------

# script_highlight_theme (butido's syntect names) -> the closest Pygments style.
HIGHLIGHT_STYLES = {
    "base16-ocean.dark": "nord",
    "base16-eighties.dark": "monokai",
    "base16-mocha.dark": "gruvbox-dark",
    "base16-ocean.light": "gruvbox-light",
    "InspiredGitHub": "default",
    "Solarized (dark)": "solarized-dark",
    "Solarized (light)": "solarized-light",
}


def add_text_flags(parser: argparse.ArgumentParser) -> None:
    """butido's ``--[no-]line-numbers`` and ``--[no-]highlighting`` for scripts and logs."""
    parser.add_argument(
        "--line-numbers", action=argparse.BooleanOptionalAction, default=False,
        help="number the lines of scripts and logs",
    )  # fmt: skip
    parser.add_argument(
        "--highlighting", action=argparse.BooleanOptionalAction, default=False,
        help="colour scripts with script_highlight_theme (only on a terminal)",
    )  # fmt: skip


def highlighted(text: str, theme: str | None) -> str:
    """``text`` as shell script in ANSI colours of ``theme``'s Pygments style."""
    from pygments import highlight
    from pygments.formatters import Terminal256Formatter
    from pygments.lexers import BashLexer

    style = HIGHLIGHT_STYLES.get(theme or "", "default")
    return str(highlight(text, BashLexer(), Terminal256Formatter(style=style)))


def format_text(
    text: str, *, line_numbers: bool = False, highlight_theme: str | None = None
) -> str:
    """A script or log, numbered and coloured (``highlight_theme``) on request."""
    if highlight_theme is not None:
        text = highlighted(text, highlight_theme)
    lines = text.splitlines()
    width = len(str(len(lines)))
    return "".join(
        (f"{str(number).rjust(width)} | {line}" if line_numbers else line).rstrip() + "\n"
        for number, line in enumerate(lines, 1)
    )


def highlight_theme_of(args: argparse.Namespace, config: Config | None) -> str | None:
    """The theme to colour with: ``--highlighting`` asks for it, the config names it, and
    only a terminal gets colours (piped output stays plain text)."""
    if not getattr(args, "highlighting", False):
        return None
    theme = None if config is None else config.script_highlight_theme
    if theme is None:
        raise ButidoError(
            "--highlighting needs script_highlight_theme in config.toml "
            f"(one of: {', '.join(HIGHLIGHT_STYLES)})"
        )
    return theme if sys.stdout.isatty() else None
