"""The windows of an index's long files, and the ranking of files by their best moment.

A version built with windows holds ``window_embeddings.npy`` (W, D) and ``window_spans.npy`` (W, 3:
the entry row, start and end in seconds), rows grouped by entry in entry order, and the manifest's
``windows`` records the setting (``{"window", "hop", "count"}`` seconds, and ``faiss`` when a FAISS
index of the windows is stored). An index built before windows existed has none and ranks whole files.

``rank_hits``: candidate files are the best whole-file rows plus the owners of the best windows
(searched with the exact scan or FAISS, like files); each candidate's windows are scored exactly and
merged into moments (``moments.merge_moments``); files are ranked by their best moment ("moments") or
by their whole-file score ("files"), and each hit carries its best moment's span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.errors import ConfigError, SearchIndexError
from soundsift.search.backends import VectorBackend, as_queries
from soundsift.search.moments import Hit, Moment, merge_moments
from soundsift.spans import WINDOWS_ALONE

WINDOW_EMBEDDINGS = "window_embeddings.npy"
WINDOW_SPANS = "window_spans.npy"
RANKS = ("moments", "files")  # how a search orders files: by best moment, or by whole-file score


@dataclass
class WindowTable:
    """The windows of one index version: embeddings, (start, end) seconds, owning entry row."""

    embeddings: np.ndarray
    spans: np.ndarray
    owners: np.ndarray
    n_entries: int
    backend: VectorBackend | None = None
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = np.searchsorted(self.owners, np.arange(self.n_entries + 1), side="left")

    def __len__(self) -> int:
        return len(self.owners)

    def rows_of(self, row: int) -> slice:
        """The window rows of entry ``row`` (empty for a file no longer than a window)."""
        return slice(int(self.offsets[row]), int(self.offsets[row + 1]))


def window_setting(manifest: dict[str, Any]) -> tuple[float, float]:
    """(window, hop) seconds a version was built with; (0, 0): whole files only (or built before windows)."""
    info = manifest.get("windows") or {}
    return float(info.get("window", 0.0)), float(info.get("hop", 0.0))


def window_embedding_of(manifest: dict[str, Any]) -> str:
    """How a version's window vectors were made (``search.embedding.window_embedding``); ``"alone"`` for
    versions written before this was recorded (each window embedded on its own, as they all were)."""
    return str((manifest.get("windows") or {}).get("embedding", WINDOWS_ALONE))


def rule_of(embedding: str) -> str:
    """The ``embed_with_windows`` rule that makes window vectors tagged ``embedding`` again."""
    return embedding.removeprefix("patches-")


def load_windows(vdir: Path, manifest: dict[str, Any], n_entries: int, dim: int,
                 mmap: bool = False) -> WindowTable | None:
    """The windows of a version, or None when it has none; SearchIndexError naming a malformed file."""
    info = manifest.get("windows") or {}
    if not info.get("count"):
        return None
    try:
        emb = np.load(vdir / WINDOW_EMBEDDINGS, mmap_mode="r" if mmap else None, allow_pickle=False)
        table = np.load(vdir / WINDOW_SPANS, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"{vdir / WINDOW_EMBEDDINGS}: cannot read the window embeddings ({exc})") from exc
    count = int(info["count"])
    owners = table[:, 0].astype(np.int64) if table.ndim == 2 and table.shape[1] == 3 else np.zeros(0, np.int64)
    if emb.shape != (count, dim) or len(owners) != count or (count and (owners.min() < 0 or owners.max() >= n_entries
                                                                        or np.any(np.diff(owners) < 0))):
        raise SearchIndexError(f"{vdir / WINDOW_SPANS}: the windows ({emb.shape}, {table.shape}) do not match "
                               f"the manifest ({count} windows of {n_entries} entries x {dim})")
    return WindowTable(emb, np.asarray(table[:, 1:], np.float64), owners, n_entries)


def _window_owners(table: WindowTable, query: np.ndarray, want: int) -> list[int]:
    """Entry rows owning the best windows for ``query``: at least ``want`` distinct ones when there are."""
    assert table.backend is not None
    fetch = min(len(table), max(8 * want, 64))
    while True:
        _, rows = table.backend.search(query, fetch)
        owners = list(dict.fromkeys(table.owners[r] for r in rows[0].tolist() if r >= 0))
        if len(owners) >= want or fetch >= len(table):
            return [int(o) for o in owners]
        fetch = min(len(table), fetch * 4)


def _scored(index: Any, row: int, query: np.ndarray, rank: str, n_moments: int | None,
            drop: tuple[float, float] | None = None) -> tuple[float, dict] | None:
    """(ranking score, Hit fields) of entry ``row`` for one query: its moments from its windows, or the
    whole file as one moment when it has none. ``drop``: a span (seconds) whose overlapping windows are
    left out (an example moment of this file); None when no window is left."""
    entry, table = index.entries[row], index.windows
    file_score = float(np.asarray(index.embeddings[row], np.float32) @ query)
    rows = table.rows_of(row) if table is not None else slice(0, 0)
    if drop is not None:
        spans = table.spans[rows] if rows.stop > rows.start else np.zeros((0, 2))
        keep = np.flatnonzero((spans[:, 1] <= drop[0]) | (spans[:, 0] >= drop[1]))  # windows apart from it
        if not len(keep):
            return None
        moments = merge_moments(spans[keep], np.asarray(table.embeddings[rows], np.float32)[keep] @ query,
                                limit=n_moments or 1)
        best = moments[0]
        score, start, end = best.score, best.start, best.end
    elif rows.stop > rows.start:
        moments = merge_moments(table.spans[rows], np.asarray(table.embeddings[rows], np.float32) @ query,
                                limit=n_moments or 1)
        best = moments[0]
        score, start, end = (best.score if rank == "moments" else file_score), best.start, best.end
    else:
        score, start, end = file_score, 0.0, entry.duration
        moments = [Moment(0.0, entry.duration, round(file_score, 6))]
    fields = {"id": entry.id, "path": entry.path, "score": round(score, 6), "duration": entry.duration,
              "start": round(start, 3), "end": round(end, 3),
              "moments": None if n_moments is None else [m.to_dict() for m in moments[:n_moments]]}
    return score, fields


def rank_hits(index: Any, queries: np.ndarray, k: int, exclude: int | None = None, rank: str = "moments",
              moments: int | None = None, exclude_span: tuple[float, float] | None = None) -> list[list[Hit]]:
    """The ``k`` best files of ``index`` (a ``SoundIndex``) for each query vector, best first, each with
    its best moment (see the module docstring); ``exclude``: an id never returned, or, with
    ``exclude_span`` (seconds; ranking by moments), a file whose windows overlapping that span are left
    out, so that other moments of an example's own recording can be found; ``moments``: up to that many
    moments per hit."""
    if rank not in RANKS:
        raise ConfigError(f"unknown ranking {rank!r}; use one of {', '.join(RANKS)}")
    if moments is not None and moments < 1:
        raise ConfigError(f"--moments {moments}: must be at least 1")
    q = as_queries(queries, index.embeddings.shape[1])
    want = k + (1 if exclude is not None and index.get(exclude) is not None else 0)
    _, file_rows = index.backend.search(q, want)
    table = index.windows
    out = []
    for qi, query in enumerate(q):
        candidates = dict.fromkeys(r for r in file_rows[qi].tolist() if r >= 0)
        if table is not None and rank == "moments":
            candidates.update(dict.fromkeys(_window_owners(table, query[None, :], want)))
        scored = []
        for r in candidates:
            drop = None
            if index.entries[r].id == exclude:
                if exclude_span is None or rank != "moments":
                    continue
                drop = exclude_span
            found = _scored(index, r, query, rank, moments, drop)
            if found is not None:
                scored.append((*found, r))
        scored.sort(key=lambda t: (-t[0], t[2]))
        out.append([Hit(rank=i + 1, **fields) for i, (_, fields, _) in enumerate(scored[:k])])
    return out
