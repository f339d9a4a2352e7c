"""``soundsift``: the parser and the error policy; each command group lives in its own module.

``main(argv)`` returns the exit code, so tests call it directly. A ``SoundsiftError`` (bad input) or a
missing file is printed as one line and exits with status 2; anything else is a bug and shows its
traceback. ``--debug`` shows the traceback always.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from soundsift.cli import data, models, report, search, train
from soundsift.cli.common import stdout_reader_gone
from soundsift.errors import SoundsiftError
from soundsift.version import __version__

GROUPS = (train, data, search, models, report)  # each adds its subcommands with add_parsers(subparsers)


class Parser(argparse.ArgumentParser):
    """Every (sub)command's ``--help`` shows each option's default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="soundsift", description="Language-based audio retrieval: find sounds by describing them.")
    parser.add_argument("--version", action="version", version=f"soundsift {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for a user error."""
    if isinstance(exc, FileNotFoundError) and exc.filename and not isinstance(exc, SoundsiftError):
        return f"{exc.filename}: {exc.strerror or 'not found'}"
    return " ".join(str(exc).split("\n")) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "reproduce" and all("=" in e and not e.startswith("-") for e in extra):
        args.recipe += extra  # overrides after the options (argparse takes positionals in one run)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that went away (`| head -2`) shows here, not at exit
        return code
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise  # another pipe broke: a bug, with its traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left goes nowhere at exit
        return 141  # quietly, as `yes | head` ends: 128 + SIGPIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (SoundsiftError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"soundsift: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
