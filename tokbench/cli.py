"""The ``tokbench`` command line.

Sub-commands are found through the entry-point group ``tokbench.commands`` (each entry
is a ``register(subparsers)`` function), so core never imports the task or leaderboard
packages by name. Errors are printed as one line; ``--debug`` shows the traceback.

Start-up stays light: a command module imports torch, Lightning, pandas or the task modules
inside the function that runs the work, and arguments that need them to be known (``eval``'s
per-task options) are added by `CommandParser.defer_arguments` only when that command is
parsed or its help is shown. ``tokbench --help`` imports no torch (tested).
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Any, Callable

from tokbench.version import __version__

COMMAND_GROUP = "tokbench.commands"
# Errors that describe bad input or a missing resource: shown as one line.
USER_ERRORS = (ValueError, RuntimeError, KeyError, OSError, ImportError)


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose costly arguments are added on first use.

    ``defer_arguments(fn)`` queues ``fn(parser)``; it runs before this parser parses or
    formats its help, so building the whole ``tokbench`` parser imports nothing heavy.
    Sub-parsers are of this class too (argparse gives them the parent's class).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer_arguments(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred.append(add)

    def _add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()

    def format_usage(self) -> str:
        self._add_deferred()
        return super().format_usage()


def defer_arguments(parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``add(parser)``'s arguments when ``parser`` is used (at once for a plain argparse parser)."""
    if isinstance(parser, CommandParser):
        parser.defer_arguments(add)
    else:
        add(parser)


def build_parser(debug: bool = False) -> argparse.ArgumentParser:
    parser = CommandParser(prog="tokbench", description="Benchmark, train and compare visual tokenizers.")
    parser.add_argument("--version", action="version", version=f"tokbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: (e.name != "core", e.name)):
        try:
            register = ep.load()
        except ImportError as err:
            # A part that is not installed (optional dependency missing) hides its commands.
            if debug:
                print(f"tokbench: commands {ep.name!r} unavailable: {err}", file=sys.stderr)
            continue
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser(debug)
    # Commands that hand their arguments to another parser (train -> Lightning's CLI)
    # set `passthrough`; for the others an unknown argument is an error, as usual.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "passthrough", False):
        args.rest = extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("tokbench: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"tokbench: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
