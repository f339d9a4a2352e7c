"""The CLI builds only the parsers of the command it runs (``soundsift.cli.main.build_parser(command)``):
each command parses alone exactly as in the full parser, and every group declares the commands it adds."""

from __future__ import annotations

import argparse

import pytest

from soundsift.cli.main import GROUPS, Parser, build_parser, command_of, subparsers


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def described(parser: argparse.ArgumentParser) -> list[tuple]:
    """What a parser and its subcommands accept: every action's options, destination, default, choices."""
    return [(p.prog, a.dest, tuple(a.option_strings), repr(a.default), repr(a.choices), a.nargs, a.help)
            for p in (parser, *subparsers(parser)) for a in p._actions]


def test_each_group_adds_exactly_the_commands_it_declares():
    declared = []
    for group in GROUPS:
        parser = Parser(prog="x")
        group.add_parsers(parser.add_subparsers(dest="command"))
        assert tuple(commands(parser)) == group.COMMANDS, group.__name__
        declared += group.COMMANDS
    assert len(declared) == len(set(declared))  # no command in two groups
    assert sorted(declared) == sorted(commands(build_parser()))


@pytest.mark.parametrize("command", sorted(c for g in GROUPS for c in g.COMMANDS))
def test_a_command_parses_alone_as_in_the_full_parser(command):
    alone, full = commands(build_parser(command)), commands(build_parser())
    assert command in alone and len(alone) < len(full)
    assert described(alone[command]) == described(full[command])


def test_an_unknown_or_missing_command_gets_every_group():
    full = set(commands(build_parser()))
    assert set(commands(build_parser("serach"))) == full and set(commands(build_parser(None))) == full


@pytest.mark.parametrize("argv,command", [
    (["search", "IDX", "rain"], "search"), (["-q", "--debug", "index", "build", "D"], "index"),
    (["--help"], None), ([], None), (["--version"], None),
])
def test_the_command_is_the_first_word_that_is_no_option(argv, command):
    assert command_of(argv) == command


def test_a_build_without_a_bar_does_not_import_tqdm(tmp_path, monkeypatch):
    """``--no-progress``: a ``SilentBar`` (tqdm.auto imports asyncio: time a one-file build pays)."""
    import sys

    import numpy as np
    import soundfile as sf
    import torch

    from soundsift import DualEncoder
    from soundsift.search.build import build_index

    torch.manual_seed(0)
    model = DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=8).eval()
    model.identity = "test-cnn"
    (tmp_path / "lib").mkdir()
    for i in range(3):
        sf.write(tmp_path / "lib" / f"{i}.wav", (0.1 * np.sin(np.arange(8000) / (3 + i))).astype(np.float32), 16000)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # importing it now raises ImportError
    report = build_index(tmp_path / "lib", tmp_path / "idx", model, model_path="tiny", progress=False)
    assert report.embedded == 3


def test_the_silent_bar_counts_what_a_bar_would_show():
    from soundsift.progress import SilentBar, progress_bar

    with progress_bar(5, enabled=False) as bar:
        bar.update(2)
        bar.update()
    assert isinstance(bar, SilentBar) and (bar.total, bar.n) == (5, 3)
    import io

    shown_to = io.StringIO()
    with progress_bar(4, enabled=True, file=shown_to, desc="embedding") as shown:  # tqdm's own bar
        shown.update(4)
    assert not isinstance(shown, SilentBar) and shown.n == 4 and "embedding" in shown_to.getvalue()
