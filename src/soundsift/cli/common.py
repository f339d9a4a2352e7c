"""Argument types and option groups several command modules share; the state of standard output."""

from __future__ import annotations

import argparse
import select
import sys


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False) or getattr(args, "no_progress", False))


def format_names() -> list[str]:
    from soundsift.data.readers import READERS

    return READERS.names()


def dataset_args(p: argparse.ArgumentParser, split: str, data_root_required: bool = True) -> None:
    p.add_argument("--data-root", required=data_root_required, help="dataset folder")
    p.add_argument("--format", default="clotho", choices=format_names(), help="dataset layout (see README: Data formats)")
    p.add_argument("--split", default=split, help="split to read (train/val/test and the dataset's own names)")
    p.add_argument("--max-seconds", type=float, default=None, help="cut clips to this length (seconds)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="clips embedded at once")


def stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (``soundsift ... | head -2``)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is no file (tests)
        return False


def add_runtime_option(parser: argparse.ArgumentParser, recorded: bool = False) -> None:
    """``--runtime torch|onnx``; ``recorded``: the default is the one the index was built with."""
    parser.add_argument("--runtime", choices=["torch", "onnx"], default=None,
                        help=("what runs the model (default: the runtime the index was built with)" if recorded else
                              "what runs the model: torch, or onnx (ONNX Runtime: pip install 'soundsift[onnx]'; "
                              "the model is exported once into the cache; default: torch)"))
