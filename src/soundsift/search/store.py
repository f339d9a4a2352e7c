"""The on-disk life cycle of an index: versions, the CURRENT pointer, the build lock, clean-up.

A version is written completely into ``INDEX/.tmp-<hex>``, fsynced, renamed to ``INDEX/vNNNNNN-<hex>``
(a new name, so the rename is atomic), and only then does ``CURRENT`` switch to it, by ``os.replace``
of a small file. Killed at any point, ``CURRENT`` names either the old complete version or the new
complete one; leftovers of a killed build are removed by the next one. Only names created here are
ever deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.atomic import fsync_dir, publish_dir
from soundsift.errors import SearchIndexError
from soundsift.search.index import (
    EMBEDDINGS,
    MANIFEST,
    POINTER,
    IndexEntry,
    entries_from_manifest,
    read_manifest,
    version_dir,
)

LOCK = ".lock"
_VERSION_RE = re.compile(r"^v\d{6}-[0-9a-f]{8}$")
_TMP_RE = re.compile(r"^\.tmp-[0-9a-f]{32}$")
_POINTER_TMP_RE = re.compile(r"^\.CURRENT\.[0-9a-f]{32}\.tmp$")


def check_out_dir(out: Path) -> None:
    """Refuse to write an index into a directory that holds anything else."""
    if out.exists() and not out.is_dir():
        raise SearchIndexError(f"{out}: exists and is not a directory")
    if not out.exists() or (out / POINTER).is_file():
        return
    foreign = [p.name for p in out.iterdir()
               if p.name != LOCK and not _VERSION_RE.match(p.name) and not _TMP_RE.match(p.name)
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


def read_previous(out: Path) -> tuple[dict[str, Any], list[IndexEntry], np.ndarray] | None:
    """The live version of an existing index, or None (no index, or an unreadable one: rebuilt)."""
    if not (out / POINTER).is_file():
        return None
    try:
        vdir = version_dir(out)
        manifest = read_manifest(vdir)
        entries = entries_from_manifest(manifest, str(vdir / MANIFEST))
        emb = np.load(vdir / EMBEDDINGS, allow_pickle=False)
        if emb.shape != (len(entries), int(manifest["embed_dim"])):
            raise SearchIndexError(f"{vdir / EMBEDDINGS}: shape does not match the manifest")
    except (SearchIndexError, OSError, ValueError) as exc:
        import warnings

        warnings.warn(f"ignoring the unreadable previous index ({exc}); rebuilding from scratch", stacklevel=3)
        return None
    return manifest, entries, emb


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


def cleanup(out: Path, keep: str) -> None:
    """Remove old versions and leftovers of killed builds (only names this module creates)."""
    for p in out.iterdir():
        if p.name == keep:
            continue
        if p.is_dir() and (_VERSION_RE.match(p.name) or _TMP_RE.match(p.name)):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and _POINTER_TMP_RE.match(p.name):
            p.unlink(missing_ok=True)


def publish_version(out: Path, name: str, fill: Callable[[Path], None]) -> Path:
    """Make a new version ``out/name`` from ``fill(tmp_dir)`` and switch ``CURRENT`` to it."""
    publish_dir(out / name, fill, tmp_prefix=".tmp-")
    write_pointer(out, name)
    cleanup(out, keep=name)
    return out / name
