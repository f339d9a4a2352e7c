"""Paths as runs, teacher files and recipe records store them: absolute and canonical, so that
``runs/x``, ``runs/x/``, ``./runs/x`` and ``/home/me/runs/x`` are one path wherever a path is hashed
or kept for later; and :func:`locate`, which finds what older files stored as a relative path."""

from __future__ import annotations

import os
from collections.abc import Container, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from soundsift.config import Config


def canonical(path: str | os.PathLike) -> str:
    """``path`` absolute, symlinks resolved, no trailing slash (it need not exist yet)."""
    return str(Path(path).expanduser().resolve())


def canonical_ref(ref: str | os.PathLike, names: Container[str] = ()) -> str:
    """A model reference as stored: one of ``names`` (published models) as given, an existing file or
    folder canonical, anything else as given."""
    return str(ref) if str(ref) in names or not Path(ref).expanduser().exists() else canonical(ref)


def canonical_config(config: Config) -> Config:
    """A train config with its paths canonical (``out_dir``, the data roots, ``init_from``, ``teachers``):
    how a run uses and saves it (``config.yaml``), so the file means the same from any directory."""
    from soundsift.checkpoints.load import PUBLISHED

    data = config.data
    extra = tuple(e.model_copy(update={"root": canonical(e.root)}) if e.root else e for e in data.extra_train)
    return config.replace(
        out_dir=config.out_dir and canonical(config.out_dir),
        data=data.model_copy(update={"root": data.root and canonical(data.root), "extra_train": extra}),
        init_from=config.init_from and canonical_ref(config.init_from, PUBLISHED),
        teachers=tuple(canonical(t) for t in config.teachers),
    )


def locate(path: str | os.PathLike, anchors: Iterable[str | os.PathLike] = ()) -> Path | None:
    """Where a stored path is now: as written (absolute, or from the working directory), else, for a
    relative path, below an anchor or one of the folders above it; None when it is nowhere.

    Files written before paths were stored canonical hold paths relative to a working directory that is
    not known; it was usually a folder above the file's own (``runs/demo/data`` in
    ``runs/demo/teachers/x.safetensors`` means ``../../data`` from there).
    """
    path = Path(path).expanduser()
    if path.exists():
        return path
    if path.is_absolute():
        return None
    for anchor in anchors:
        start = Path(anchor).resolve()
        for base in (start, *start.parents):
            if (base / path).exists():
                return base / path
    return None
