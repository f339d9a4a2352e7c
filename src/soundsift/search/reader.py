"""Reading the live version of an index: its manifest, the segments it lists and their deleted rows
(format 2), or the single manifest-listed set of entries of a format-1 index (read as one segment).

A format-2 version directory holds ``manifest.json`` (small: model, settings, the segment list),
``deleted-<segment>.npy`` (sorted local rows deleted from a segment, for segments that have any),
``report.json`` and ``skipped.txt``; the rows live in ``INDEX/segments/`` (``search.segments``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.errors import SearchIndexError
from soundsift.search.index_types import (
    EMBEDDINGS,
    LEGACY_VERSION,
    MANIFEST,
    THUMBNAILS,
    entries_from_manifest,
    read_manifest,
    version_dir,
)
from soundsift.search.segments import Segment, memory_segment, open_segment
from soundsift.search.store import SEGMENTS
from soundsift.search.windows import WINDOW_EMBEDDINGS, WINDOW_SPANS


def deleted_file(segment: str) -> str:
    return f"deleted-{segment}.npy"


@dataclass
class LiveVersion:
    """The live version of an index as read: its directory, manifest, segments and each segment's
    deleted local rows (sorted)."""

    root: Path
    directory: Path
    manifest: dict[str, Any]
    segments: list[Segment]
    deleted: list[np.ndarray]

    @property
    def legacy(self) -> bool:
        return self.manifest["version"] == LEGACY_VERSION


def read_live(root: str | Path, mmap: bool = False, segments: dict[str, Segment] | None = None) -> LiveVersion:
    """The live version of the index at ``root``; SearchIndexError naming what is missing or malformed.
    ``segments``: segments already open, by name (reused: a segment never changes)."""
    root = Path(root)
    vdir = version_dir(root)
    manifest = read_manifest(vdir)
    if manifest["version"] == LEGACY_VERSION:
        return LiveVersion(root, vdir, manifest, [legacy_segment(vdir, manifest, mmap)], [np.zeros(0, np.int64)])
    opened, deleted = [], []
    for info in manifest["segments"]:
        name = str(info.get("name", ""))
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise SearchIndexError(f"{vdir / MANIFEST}: bad segment name {name!r}")
        seg = (segments or {}).get(name) or open_segment(root / SEGMENTS / name, mmap)
        gone = np.zeros(0, np.int64)
        if info.get("deleted"):
            try:
                gone = np.load(vdir / deleted_file(name), allow_pickle=False).astype(np.int64)
            except (OSError, ValueError) as exc:
                raise SearchIndexError(f"{vdir / deleted_file(name)}: cannot read the deleted rows ({exc})") from exc
            if len(gone) != int(info["deleted"]) or (len(gone) and (gone.min() < 0 or gone.max() >= len(seg)
                                                                    or np.any(np.diff(gone) <= 0))):
                raise SearchIndexError(f"{vdir / deleted_file(name)}: does not match the manifest")
        opened.append(seg)
        deleted.append(gone)
    return LiveVersion(root, vdir, manifest, opened, deleted)


def legacy_segment(vdir: Path, manifest: dict[str, Any], mmap: bool = False) -> Segment:
    """A format-1 version (every entry in ``manifest.json``) as one in-memory segment."""
    entries = entries_from_manifest(manifest, str(vdir / MANIFEST))
    dim = int(manifest["embed_dim"])
    try:
        emb = np.load(vdir / EMBEDDINGS, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"{vdir / EMBEDDINGS}: cannot read the index embeddings ({exc})") from exc
    if emb.ndim != 2 or emb.shape != (len(entries), dim):
        raise SearchIndexError(f"{vdir / EMBEDDINGS}: shape {emb.shape} does not match the manifest "
                               f"({len(entries)} entries x {dim})")
    thumbs = None
    if (manifest.get("thumbnails") or {}).get("file") == THUMBNAILS:
        try:
            thumbs = np.load(vdir / THUMBNAILS, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SearchIndexError(f"{vdir / THUMBNAILS}: cannot read the thumbnails ({exc})") from exc
        if thumbs.ndim != 3 or len(thumbs) != len(entries) or thumbs.dtype != np.uint8:
            raise SearchIndexError(f"{vdir / THUMBNAILS}: shape {thumbs.shape} ({thumbs.dtype}) does not "
                                   f"match the manifest ({len(entries)} entries of uint8 images)")
    info = manifest.get("windows") or {}
    w_spans, w_emb = np.zeros((0, 3)), np.zeros((0, dim), np.float32)
    if info.get("count"):
        try:
            w_emb = np.load(vdir / WINDOW_EMBEDDINGS, mmap_mode="r" if mmap else None, allow_pickle=False)
            w_spans = np.load(vdir / WINDOW_SPANS, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SearchIndexError(f"{vdir / WINDOW_EMBEDDINGS}: cannot read the window embeddings ({exc})") from exc
        owners = w_spans[:, 0] if w_spans.ndim == 2 and w_spans.shape[1] == 3 else np.zeros(0)
        if w_emb.shape != (int(info["count"]), dim) or len(owners) != len(w_emb) or (
                len(owners) and (owners.min() < 0 or owners.max() >= len(entries) or np.any(np.diff(owners) < 0))):
            raise SearchIndexError(f"{vdir / WINDOW_SPANS}: the windows ({w_emb.shape}, {w_spans.shape}) do not "
                                   f"match the manifest ({info['count']} windows of {len(entries)} entries x {dim})")
    return memory_segment(entries, emb, thumbs, w_spans, w_emb, manifest.get("faiss"), info.get("faiss"), vdir)
