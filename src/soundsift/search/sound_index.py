"""A loaded index version (``SoundIndex``, ``open_index``): the live rows of its segments as one table
of entries, embeddings and thumbnails, a backend that searches every segment, and filters (``where``).

Nothing is parsed per entry at open: segment arrays are memory-mapped (the embeddings too with
``mmap=True``), entries are built when asked for, and ids are looked up in a sorted array.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from soundsift.digest import file_digest
from soundsift.errors import ConfigError, ModelMismatchError, SearchIndexError
from soundsift.search.backends import open_backend
from soundsift.search.index_types import (
    AUTO_FAISS_KIND,
    BACKENDS,
    EXACT_LIMIT,
    IndexEntry,
    safe_relative_path,
)
from soundsift.search.live import Parted, PartedBackend, RowView
from soundsift.search.moments import Hit
from soundsift.search.reader import LiveVersion, read_live
from soundsift.search.segments import ENTRY_DTYPE, Segment, memory_segment, sha_bytes
from soundsift.search.thumbnails import THUMB_HEIGHT, THUMB_WIDTH, encode_png
from soundsift.search.windows import WindowTable, rank_hits


class EntryTable(Sequence):
    """The live entries in row order, each built when read (a list of a million would cost seconds)."""

    def __init__(self, parted: Parted, segments: list[Segment]) -> None:
        self.parted, self.segments = parted, segments

    def __len__(self) -> int:
        return len(self.parted)

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        if not -len(self) <= row < len(self):
            raise IndexError(f"entry {row} out of range for {len(self)} entries")
        part, local = self.parted.locate(np.array([row % len(self)]))
        return self.segments[int(part[0])].entry(int(local[0]))


def _backend(seg: Segment, what: str, backend: str):
    """The backend of a segment's rows or windows, opened once per segment (a segment never changes, and
    a server's next version reuses the segments it already has open)."""
    key = (what, backend, EXACT_LIMIT)
    if key not in seg.backends:
        vectors, stored = (seg.embeddings, seg.faiss) if what == "rows" else (seg.window_embeddings, seg.windows_faiss)
        seg.backends[key] = open_backend(vectors, backend, stored, seg.directory, EXACT_LIMIT, AUTO_FAISS_KIND)
    return seg.backends[key]


def _view(parted: Parted, arrays: list[np.ndarray], empty: np.ndarray):
    """The live rows of ``arrays`` as one array: the array itself when there is one with no deletions."""
    if not arrays:
        return empty
    if len(arrays) == 1 and parted.keeps[0] is None:
        return arrays[0]
    return RowView(parted, arrays)


class SoundIndex:
    """A loaded index: entries, their embeddings, and a backend to rank them (see the module docstring)."""

    def __init__(self, live: LiveVersion, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown search backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.path, self.version_dir, self.manifest = live.root, live.directory, live.manifest
        self.audio_root = Path(self.manifest["audio_root"])
        self.segments = segs = live.segments
        dim = int(self.manifest["embed_dim"])
        keeps = [None if not len(d) else np.setdiff1d(np.arange(len(s)), d, assume_unique=True)
                 for s, d in zip(segs, live.deleted)]
        self.parted = Parted([len(s) for s in segs], keeps)
        self.entries = EntryTable(self.parted, segs)
        self.embeddings = _view(self.parted, [s.embeddings for s in segs], np.zeros((0, dim), np.float32))
        thumbs = [s.thumbnails for s in segs]
        self.thumbnails = None if any(t is None for t in thumbs) else _view(
            self.parted, thumbs, np.zeros((0, THUMB_HEIGHT, THUMB_WIDTH), np.uint8))  # (N, height, width) uint8
        self._columns: dict[str, np.ndarray] = {}
        self.cache: dict[str, Any] = {}  # data derived from this version on demand (filters' columns and masks)
        ids = self.column("id")
        self._id_order = np.argsort(ids, kind="stable")
        self._ids = ids[self._id_order]
        if len(ids) > 1 and bool(np.any(np.diff(self._ids) == 0)):
            raise SearchIndexError(f"{self.version_dir}: duplicate ids in the index")
        self.backend = PartedBackend(self.parted, [s.embeddings for s in segs],
                                     [_backend(s, "rows", backend) for s in segs], dim)
        self.windows = self._windows(backend, dim)  # the long files' windows (``search.windows``), or None

    def _windows(self, backend: str, dim: int) -> WindowTable | None:
        parts = [(p, s) for p, s in enumerate(self.segments) if len(s.window_spans)]
        if not parts:
            return None
        keeps, owners, spans = [], [], []
        for p, s in parts:
            live = self.parted.to_live(p, s.window_spans[:, 0].astype(np.int64))
            keep = None if bool((live >= 0).all()) else np.flatnonzero(live >= 0)
            keeps.append(keep)
            owners.append(live if keep is None else live[keep])
            spans.append(np.asarray(s.window_spans[:, 1:] if keep is None else s.window_spans[keep, 1:], np.float64))
        wparted = Parted([len(s.window_spans) for _, s in parts], keeps)
        arrays = [s.window_embeddings for _, s in parts]
        if not len(wparted):
            return None
        table = WindowTable(_view(wparted, arrays, np.zeros((0, dim), np.float32)), np.concatenate(spans),
                            np.concatenate(owners), len(self.parted))
        table.backend = PartedBackend(wparted, arrays, [_backend(s, "windows", backend) for _, s in parts], dim)
        return table

    def __len__(self) -> int:
        return len(self.parted)

    def column(self, name: str) -> np.ndarray:
        """One field of ``segments.ENTRY_DTYPE`` for every live row, in row order."""
        if name in self._columns:
            return self._columns[name]
        parts = [np.asarray(s.entries[name]) if k is None else np.asarray(s.entries[name][k])
                 for s, k in zip(self.segments, self.parted.keeps)]
        out = np.concatenate(parts) if parts else np.zeros(0, ENTRY_DTYPE[name])
        self._columns[name] = out
        return out

    def paths(self) -> list[str]:
        """Every live row's path, in row order."""
        out: list[str] = []
        for s, k in zip(self.segments, self.parted.keeps):
            paths = s.paths()
            out += paths if k is None else [paths[i] for i in k.tolist()]
        return out

    @property
    def model_identity(self) -> str:
        return str(self.manifest["model"].get("identity", ""))

    @property
    def model_path(self) -> str | list[str] | None:
        """What built the index: a model path or published name (a list of them: an ensemble)."""
        return self.manifest["model"].get("path")

    def _row(self, entry_id: int) -> int | None:
        at = int(np.searchsorted(self._ids, entry_id))
        return int(self._id_order[at]) if at < len(self._ids) and self._ids[at] == entry_id else None

    def get(self, entry_id: int) -> IndexEntry | None:
        """The entry with this id, or None when no such id is indexed."""
        row = self._row(entry_id)
        return None if row is None else self.entries[row]

    def audio_file(self, entry_id: int) -> Path | None:
        """Absolute path of an indexed file (built from the index only), or None if not indexed."""
        entry = self.get(entry_id)
        if entry is None:
            return None
        safe_relative_path(entry.path, f"{self.version_dir}: id {entry_id}")
        return self.audio_root.joinpath(*PurePosixPath(entry.path).parts)

    def vector(self, entry_id: int) -> np.ndarray:
        """The stored embedding of an indexed file (unit norm); SearchIndexError if not indexed."""
        row = self._row(entry_id)
        if row is None:
            raise SearchIndexError(f"no indexed sound has id {entry_id}")
        return np.asarray(self.embeddings[row], dtype=np.float32)

    def find_file(self, path: str | Path) -> int | None:
        """The id of an indexed item with the content of ``path`` (preferably the one at that path), or None."""
        sha, here = sha_bytes(file_digest(path)), Path(path).resolve()
        rows = np.flatnonzero(self.column("sha256") == np.void(sha)).tolist()
        same = [self.entries[r] for r in rows]
        return next((e.id for e in same if self.audio_file(e.id).resolve() == here), same[0].id if same else None)

    def thumbnail_png(self, entry_id: int) -> bytes | None:
        """The spectrogram thumbnail of an indexed file as PNG bytes, or None (not indexed, or the
        index was built without thumbnails)."""
        row = self._row(entry_id)
        if row is None or self.thumbnails is None:
            return None
        return encode_png(np.asarray(self.thumbnails[row]))

    def search_vectors(self, queries: np.ndarray, k: int = 10, exclude: int | None = None,
                       rank: str = "moments", moments: int | None = None, where: Any = None,
                       exclude_span: tuple[float, float] | None = None) -> list[list[Hit]]:
        """Rank the indexed files for each query vector (unit norm); best first, each with its best moment
        (``search.windows.rank_hits``). ``exclude``: an id left out of every ranking (the example of a
        more-like-this query; with ``exclude_span``, only its windows overlapping that span); ``rank``: "moments" or "files"; ``moments``: up to N moments per hit;
        ``where``: a filter (``search.where``: text or parsed) that every result matches."""
        if where is None or where == "":
            return rank_hits(self, queries, k, exclude, rank, moments, exclude_span)
        from soundsift.search.where import parse_where

        allowed = parse_where(where).mask(self)
        return rank_hits(_Restricted(self, allowed), queries, k, exclude, rank, moments, exclude_span)

    def check_model(self, model) -> None:
        """Refuse a model whose identity differs from the one that built this index."""
        identity = model.identity
        if identity != self.model_identity:
            raise ModelMismatchError(
                f"{self.path}: the index was built with model {self.model_identity[:12]}... "
                f"({self.model_path}), but the query model is "
                f"{str(identity)[:12] + '...' if identity else 'unidentified'}; query with the model "
                "that built the index, or rebuild the index with this model"
            )


def memory_index(entries: list[IndexEntry], embeddings: np.ndarray, window_spans: np.ndarray | None = None,
                 window_embeddings: np.ndarray | None = None, backend: str = "auto",
                 audio_root: str = "/nonexistent") -> SoundIndex:
    """A ``SoundIndex`` over rows held in memory, no files on disk (benchmarks); window spans are (W, 3):
    owning row, start, end."""
    dim = int(embeddings.shape[1])
    manifest = {"format": "soundsift-index", "version": 2, "model": {}, "audio_root": audio_root,
                "embed_dim": dim, "segments": []}
    seg = memory_segment(entries, embeddings, None, window_spans, window_embeddings)
    return SoundIndex(LiveVersion(Path(audio_root), Path(audio_root), manifest, [seg], [np.zeros(0, np.int64)]),
                      backend)


class _Restricted:
    """What ``rank_hits`` reads of an index, with every search restricted to the ``allowed`` rows."""

    def __init__(self, index: SoundIndex, allowed: np.ndarray) -> None:
        self.entries, self.embeddings, self.get = index.entries, index.embeddings, index.get
        self.backend = index.backend.restricted(allowed)
        self.windows = None
        if index.windows is not None:
            self.windows = copy.copy(index.windows)
            self.windows.backend = index.windows.backend.restricted(allowed[index.windows.owners])


def open_index(path: str | Path, backend: str = "auto", mmap: bool = False) -> SoundIndex:
    """Load the live version of the index at ``path``.

    ``backend``: "exact" (matrix product), "faiss" (the FAISS index stored with each large segment, else
    IVF), "hnsw" or "ivf" (built in memory), or "auto" (per segment: exact up to ``EXACT_LIMIT`` rows,
    FAISS above when installed). ``mmap`` maps the embeddings instead of reading them (fast start, lazy
    paging); the other arrays are always mapped.
    """
    return SoundIndex(read_live(path, mmap), backend)
