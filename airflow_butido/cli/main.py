"""Entry point of the `butido` command.

Every command group lives in its own module of this package and exposes
``register(subparsers)``; each sub-command sets ``func(args) -> int``. Errors that
are the user's (``ButidoError``) are printed to stderr with exit status 1, never
as a traceback. A command group that fails to import is an error of the installation,
never silently left out.

Shell completion (``generate-completions``) comes from argcomplete: the generated
script calls ``butido`` back, and ``autocomplete`` answers before any command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_butido import __version__
from airflow_butido.cli.common import add_db_flags
from airflow_butido.errors import ButidoError

# Command-group modules, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "airflow_butido.cli.repo_commands",
    "airflow_butido.cli.source",
    "airflow_butido.cli.lint",
    "airflow_butido.cli.build",
    "airflow_butido.cli.trigger",
    "airflow_butido.cli.airflow_pool",
    "airflow_butido.cli.db",
    "airflow_butido.cli.release",
    "airflow_butido.cli.find_artifact",
    "airflow_butido.cli.endpoint",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="butido",
        description="Build Linux packages from a butido package repository.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"butido {__version__}")
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path(os.environ.get("BUTIDO_REPO", ".")),
        help="package repository root (default: $BUTIDO_REPO or the current directory)",
    )
    parser.add_argument(
        "--hide-bars",
        action="store_true",
        help="accepted for butido's scripts; there are no progress bars to hide",
    )
    add_db_flags(parser, is_global=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    p = subparsers.add_parser("generate-completions", help="print a shell completion script")
    p.add_argument("shell", nargs="?", default="bash", choices=COMPLETION_SHELLS)
    p.set_defaults(func=cmd_generate_completions)
    return parser


COMPLETION_SHELLS = ("bash", "zsh", "fish")


def cmd_generate_completions(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["butido"], shell=args.shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if argv is None and "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)  # answers the shell and exits
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from airflow_butido import parse_cache

    # A repository loaded afresh is cached after the answer is out; run as the `butido`
    # command, by a child process, so that the command exits as soon as it has answered.
    parse_cache.defer_writes()
    try:
        code = int(args.func(args) or 0)
    except ButidoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # The reader went away (`butido ... | head`); not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    finally:
        parse_cache.write_deferred(detach=argv is None)
    if argv is None and getattr(args, "quick_exit", False):
        exit_at_once(code)
    return code


def exit_at_once(code: int) -> None:
    """End the process as the interpreter would, less freeing every object one by one.

    For a query over thousands of packages that freeing takes 0.05 s, and 0.15 s after
    write_deferred forked its child (every page the freeing writes to is copied then).
    Done for the read-only repository commands (their ``quick_exit``), after the output
    is flushed and the ``atexit`` handlers have run (logging's among them); returns, for
    the ordinary exit, while another thread runs or when a stream cannot be flushed.
    """
    import atexit

    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):  # what the handlers may have written
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
