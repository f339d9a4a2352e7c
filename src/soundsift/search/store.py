"""The on-disk life cycle of an index: versions, the CURRENT pointer, the build lock, clean-up.

Segments (``search.segments``) are written first, each into a temporary directory renamed whole; then a
version is written completely into ``INDEX/.tmp-<hex>``, fsynced, renamed to ``INDEX/vNNNNNN-<hex>``
(a new name, so the rename is atomic), and only then does ``CURRENT`` switch to it, by ``os.replace``
of a small file. Killed at any point, ``CURRENT`` names either the old complete version or the new
complete one; leftovers of a killed build (temporary directories, segments no version lists) are removed by the next
one. Only names created here are
ever deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from soundsift.atomic import fsync_dir, publish_dir
from soundsift.errors import SearchIndexError
from soundsift.search.index_types import POINTER

LOCK = ".lock"
_VERSION_RE = re.compile(r"^v\d{6}-[0-9a-f]{8}$")
_TMP_RE = re.compile(r"^\.tmp-[0-9a-f]{32}$")
_POINTER_TMP_RE = re.compile(r"^\.CURRENT\.[0-9a-f]{32}\.tmp$")
_SEGMENT_RE = re.compile(r"^s\d{6}-[0-9a-f]{8}$")
SEGMENTS = "segments"


def check_out_dir(out: Path) -> None:
    """Refuse to write an index into a directory that holds anything else."""
    if out.exists() and not out.is_dir():
        raise SearchIndexError(f"{out}: exists and is not a directory")
    if not out.exists() or (out / POINTER).is_file():
        return
    foreign = [p.name for p in out.iterdir()
               if p.name not in (LOCK, SEGMENTS) and not _VERSION_RE.match(p.name) and not _TMP_RE.match(p.name)
               and not _POINTER_TMP_RE.match(p.name)]
    if foreign:
        raise SearchIndexError(
            f"{out}: exists and is not a soundsift index (contains {sorted(foreign)[:3]}); "
            "choose a new or empty directory for --out"
        )


class BuildLock:
    """An exclusive lock on ``INDEX/.lock`` so two builds never write the same index at once."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK
        self.fd: int | None = None

    def __enter__(self) -> BuildLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; builds must not overlap
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            raise SearchIndexError(f"{self.path.parent}: another build is writing this index") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def write_pointer(out: Path, name: str) -> None:
    """Atomically make ``name`` the live version (temp file, fsync, os.replace, fsync of the dir)."""
    tmp = out / f".CURRENT.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out / POINTER)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(out)


def cleanup(out: Path, keep: str, segments: Collection[str] | None = None) -> None:
    """Remove old versions, segments the live version ``keep`` does not list (``segments``; None: leave
    them all) and leftovers of killed builds (only names this module and ``search.segments`` create)."""
    for p in out.iterdir():
        if p.name == keep:
            continue
        if p.is_dir() and (_VERSION_RE.match(p.name) or _TMP_RE.match(p.name)):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and _POINTER_TMP_RE.match(p.name):
            p.unlink(missing_ok=True)
    if segments is not None and (out / SEGMENTS).is_dir():
        for p in (out / SEGMENTS).iterdir():
            unused = _SEGMENT_RE.match(p.name) and p.name not in segments
            if p.is_dir() and (unused or _TMP_RE.match(p.name)):
                shutil.rmtree(p, ignore_errors=True)


def publish_version(out: Path, name: str, fill: Callable[[Path], None],
                    segments: Collection[str] | None = None) -> Path:
    """Make a new version ``out/name`` from ``fill(tmp_dir)``, switch ``CURRENT`` to it, and remove what
    it no longer uses (its ``segments`` are kept)."""
    publish_dir(out / name, fill, tmp_prefix=".tmp-")
    write_pointer(out, name)
    cleanup(out, keep=name, segments=segments)
    return out / name
