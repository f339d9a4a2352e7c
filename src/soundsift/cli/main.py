"""``soundsift``: the parser and the error policy; each command group lives in its own module.

``main(argv)`` returns the exit code, so tests call it directly. A ``SoundsiftError`` (bad input) or a
missing file is printed as one line and exits with status 2; anything else is a bug and shows its
traceback. ``--debug`` shows the traceback always.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from soundsift.cli import data, export, models, report, search, train
from soundsift.cli.common import stdout_reader_gone
from soundsift.errors import SoundsiftError
from soundsift.version import __version__

GROUPS = (train, data, search, models, report, export)  # each adds its subcommands with add_parsers(subparsers)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's ``--help`` line shows its default once: not again when the help text tells it, and
    not at all when it is None (unset)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or (action.help and "default" in action.help.lower()):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Defaults in ``--help``; a mistyped command or option gets a "did you mean" from the (sub)command it
    follows. ``overrides_dest``: the list of ``key=value`` overrides that may also come after the options."""

    def __init__(self, *args, overrides_dest: str | None = None, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.overrides_dest = overrides_dest

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Unknown arguments are an error of the command they were given to (its usage, its options)."""
        namespace, extra = super().parse_known_args(args, namespace)
        if extra and self.overrides_dest and all("=" in e and not e.startswith("-") for e in extra):
            setattr(namespace, self.overrides_dest, [*getattr(namespace, self.overrides_dest), *extra])
            extra = []
        if extra:
            self.error(self.unknown(extra))
        return namespace, extra

    def unknown(self, extra: list[str]) -> str:
        """The message for arguments this parser does not know, with the closest option it has."""
        options = [e.split("=", 1)[0] for e in extra if e.startswith("-")]
        if not options:
            return f"unrecognized arguments: {' '.join(extra)}"
        guesses = [difflib.get_close_matches(o, list(self._option_string_actions), n=1) for o in options]
        if len(options) == 1:
            return f"unknown option {options[0]}" + (f"; did you mean {guesses[0][0]}?" if guesses[0] else "")
        return "unknown options " + ", ".join(o + (f" (did you mean {g[0]}?)" if g else "")
                                              for o, g in zip(options, guesses))

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is None or value in action.choices:
            return
        choices = [str(c) for c in action.choices]
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (choose from {', '.join(map(repr, choices))})"
        if isinstance(action, argparse._SubParsersAction):
            raise argparse.ArgumentError(None, f"unknown command {value!r}{hint}")
        raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint}")


def subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every (nested) subcommand parser of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield sub
                yield from subparsers(sub)


def global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """``-q`` and ``--debug``: on the top level (``default=False``) and after any command (``SUPPRESS``:
    unset there, so that the top level's value stands)."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars")
    parser.add_argument("--debug", action="store_true", default=default, help="show the traceback of every error")


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option (the top-level options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given ``command``, of the group that owns it only: a group's parsers
    import what their defaults and choices come from (pydantic configs, readers, backends), so ``search``
    does not pay for ``train``'s. An unknown command gets every group (its "did you mean" needs them)."""
    groups = [g for g in GROUPS if command in g.COMMANDS] or GROUPS
    parser = Parser(prog="soundsift", description="Language-based audio retrieval: find sounds by describing them.")
    parser.add_argument("--version", action="version", version=f"soundsift {__version__}")
    global_options(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in groups:
        group.add_parsers(sub)
    for each in subparsers(parser):
        global_options(each, argparse.SUPPRESS)
    return parser


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for a user error."""
    if isinstance(exc, FileNotFoundError) and exc.filename and not isinstance(exc, SoundsiftError):
        return f"{exc.filename}: {exc.strerror or 'not found'}"
    return " ".join(str(exc).split("\n")) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(argv))
    args = parser.parse_args(argv)
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
