"""Argument types and option groups several command modules share."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False) or getattr(args, "no_progress", False))


def format_names() -> list[str]:
    from soundsift.data.readers import READERS

    return READERS.names()


def dataset_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument("--format", default="clotho", choices=format_names(), help="dataset layout (see README: Data formats)")
    p.add_argument("--split", default=split, help="split to read (train/val/test and the dataset's own names)")
    p.add_argument("--max-seconds", type=float, default=None, help="cut clips to this length (seconds)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="clips embedded at once")
