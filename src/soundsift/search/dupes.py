"""Duplicates in an index: identical files (the same content hash) and near-duplicates (the same sound
re-encoded, resampled, trimmed or level-changed: whole-file embeddings whose cosine similarity reaches a
threshold).

Pairs are found as the index searches (``SoundIndex.backend``): with the exact backend (up to 100k files),
every pair, by a blocked matrix product over the upper triangle of the similarity matrix; with the
stored FAISS index (above), each file's ``neighbours`` nearest, re-scored exactly from the stored
embeddings. Groups are the connected components of the pairs (union-find).
Near-duplicates also last about as long: their durations differ by at most ``max_duration_change`` of
the longer one (re-encoding, resampling and level changes keep the duration, a trim of a few percent
nearly so), which keeps apart different sounds of one kind that the embedding alone confuses (two
snare hits, two door slams). Only the whole-file rows take part: the windows of long files (``search.windows``) never pair a file
with a part of itself. ``DEFAULT_THRESHOLD`` was chosen for the zero-shot model on variants of real
recordings (``benchmarks/dupes.py``; ``docs/duplicates.md``); another model may need another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from soundsift.errors import ConfigError

DEFAULT_THRESHOLD = 0.875  # cosine, chosen on the development half of benchmarks/dupes.py
DEFAULT_MAX_DURATION_CHANGE = 0.1  # a trim of up to 10%: durations within 10% of the longer one
DEFAULT_NEIGHBOURS = 32
_BATCH = 1024  # query rows per backend call
_BLOCK_FLOATS = 1 << 24  # similarities held at once by the exact pass (64 MB)


@dataclass(frozen=True)
class DupeMember:
    """One file of a group: ``similarity`` is its cosine with the group's first member (its anchor, the
    member most similar to the others); ``identical`` when another file of the group has its content
    hash (in ``DuplicateLookup.of``: the content of the file asked about)."""

    id: int
    path: str
    duration: float
    similarity: float
    identical: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "duration": round(self.duration, 3),
                "similarity": round(self.similarity, 4), "identical": self.identical}


@dataclass(frozen=True)
class DupeGroup:
    """Files that are copies or near-copies of each other; ``kind``: "identical" (one content hash) or
    "near" (at least two different contents)."""

    kind: str
    members: tuple[DupeMember, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "members": [m.to_dict() for m in self.members]}


def check_threshold(threshold: float) -> float:
    if not -1.0 <= threshold <= 1.0 or threshold != threshold:
        raise ConfigError(f"--threshold {threshold}: a cosine similarity lies between -1 and 1")
    return float(threshold)


def check_duration_change(change: float) -> float:
    if not 0.0 <= change <= 1.0 or change != change:
        raise ConfigError(f"--max-duration-change {change}: a fraction of the longer duration, 0 to 1 (1: any)")
    return float(change)


def similar_length(a: np.ndarray, b: np.ndarray, change: float) -> np.ndarray:
    """Whether durations ``a`` and ``b`` differ by at most ``change`` of the longer one (elementwise)."""
    return np.abs(a - b) <= change * np.maximum(a, b) + 1e-9


class _Components:
    """Union-find over rows 0..n-1 (path halving, union by size)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if self.size[ra] < self.size[rb]:
                ra, rb = rb, ra
            self.parent[rb] = ra
            self.size[ra] += self.size[rb]


def similar_pairs(index, threshold: float, neighbours: int = DEFAULT_NEIGHBOURS,
                  max_duration_change: float = 1.0) -> np.ndarray:
    """(P, 2) row pairs i < j of ``index``'s files whose whole-file embeddings have cosine >= ``threshold``
    and whose durations differ by at most ``max_duration_change`` of the longer. With the exact backend
    every pair is checked (a blocked matrix product over the upper triangle); with a FAISS backend, each
    file's ``neighbours`` nearest (scores re-computed exactly)."""
    emb = index.embeddings
    if getattr(index.backend, "name", "") == "exact":
        pairs = _pairs_above(emb, threshold)
    else:
        pairs = _neighbour_pairs(index, threshold, neighbours)
    if max_duration_change < 1.0 and len(pairs):
        durations = np.array([e.duration for e in index.entries], np.float64)
        pairs = pairs[similar_length(durations[pairs[:, 0]], durations[pairs[:, 1]], max_duration_change)]
    return pairs.astype(np.int64)


def _pairs_above(emb, threshold: float) -> np.ndarray:
    """Every pair i < j with emb[i] . emb[j] >= threshold: blocks of rows against the rows after them."""
    n = len(emb)
    rows = max(16, _BLOCK_FLOATS // max(1, n))
    found = [np.zeros((0, 2), np.int64)]
    for start in range(0, n, rows):
        block = np.asarray(emb[start:start + rows], dtype=np.float32)
        sims = block @ np.asarray(emb[start:], dtype=np.float32).T  # (b, n - start)
        i, j = np.nonzero(sims >= threshold)
        keep = j > i  # the upper triangle: each pair once, never a file with itself
        found.append(np.stack([i[keep] + start, j[keep] + start], axis=1))
    return np.concatenate(found)


def _neighbour_pairs(index, threshold: float, neighbours: int) -> np.ndarray:
    """Pairs among each file's ``neighbours`` nearest by the index's backend, re-scored exactly."""
    emb = index.embeddings
    n = len(index)
    k = min(n, neighbours + 1)  # the file itself comes back too
    found = [np.zeros((0, 2), np.int64)]
    for start in range(0, n, _BATCH):
        block = np.asarray(emb[start:start + _BATCH], dtype=np.float32)
        _, rows = index.backend.search(block, k)
        i = np.broadcast_to(np.arange(start, start + len(block))[:, None], rows.shape)
        keep = (rows >= 0) & (rows != i)
        found.append(np.stack([np.minimum(i, rows)[keep], np.maximum(i, rows)[keep]], axis=1))
    pairs = np.unique(np.concatenate(found), axis=0)
    if not len(pairs):
        return pairs
    scores = np.concatenate([
        np.einsum("ij,ij->i", np.asarray(emb[chunk[:, 0]], np.float32), np.asarray(emb[chunk[:, 1]], np.float32))
        for chunk in np.array_split(pairs, max(1, len(pairs) // 65536))])
    return pairs[scores >= threshold]


def find_duplicates(index, threshold: float = DEFAULT_THRESHOLD, neighbours: int = DEFAULT_NEIGHBOURS,
                    max_duration_change: float = DEFAULT_MAX_DURATION_CHANGE) -> list[DupeGroup]:
    """Groups of identical and near-duplicate files of ``index`` (a ``SoundIndex``), largest first; see the
    module docstring. Files with the same content hash always share a group."""
    check_threshold(threshold)
    check_duration_change(max_duration_change)
    if neighbours < 1:
        raise ConfigError(f"neighbours {neighbours}: must be at least 1")
    entries = index.entries
    components = _Components(len(entries))
    first_of_hash: dict[str, int] = {}
    for row, e in enumerate(entries):
        if e.sha256:
            components.union(first_of_hash.setdefault(e.sha256, row), row)
    for a, b in similar_pairs(index, threshold, neighbours, max_duration_change):
        components.union(int(a), int(b))
    members: dict[int, list[int]] = {}
    for row in range(len(entries)):
        members.setdefault(components.find(row), []).append(row)
    groups = [_group(index, rows) for rows in members.values() if len(rows) > 1]
    groups.sort(key=lambda g: (-len(g.members), g.members[0].path))
    return groups


def _group(index, rows: list[int]) -> DupeGroup:
    """One group, its anchor first (the member with the highest mean cosine to the others), then by
    similarity to the anchor."""
    entries = index.entries
    rows = sorted(rows)
    emb = np.asarray(index.embeddings[rows], dtype=np.float32)
    sims = emb @ emb.T
    anchor = int(np.argmax(sims.sum(axis=1)))
    count: dict[str, int] = {}
    for r in rows:
        count[entries[r].sha256] = count.get(entries[r].sha256, 0) + 1
    out = [DupeMember(entries[r].id, entries[r].path, entries[r].duration, float(sims[anchor, i]),
                      bool(entries[r].sha256) and count[entries[r].sha256] > 1) for i, r in enumerate(rows)]
    first = entries[rows[anchor]].id
    out.sort(key=lambda m: (m.id != first, -m.similarity, m.path))
    kind = "identical" if len(count) == 1 and entries[rows[0]].sha256 else "near"
    return DupeGroup(kind, tuple(out))


class DuplicateLookup:
    """"Duplicates of this file" for one index (the server's ``/api/duplicates/{id}``): the rows of each id
    and of each content hash, built once."""

    def __init__(self, index) -> None:
        self.index = index
        self.row_of = {e.id: row for row, e in enumerate(index.entries)}
        self.rows_of_hash: dict[str, list[int]] = {}
        for row, e in enumerate(index.entries):
            if e.sha256:
                self.rows_of_hash.setdefault(e.sha256, []).append(row)

    def of(self, entry_id: int, threshold: float = DEFAULT_THRESHOLD, k: int = DEFAULT_NEIGHBOURS,
           max_duration_change: float = DEFAULT_MAX_DURATION_CHANGE) -> list[DupeMember]:
        """The files identical to or near-duplicates of the indexed file ``entry_id`` (itself left out; at
        most ``k`` near ones), most similar first; KeyError when no file has that id."""
        check_threshold(threshold)
        check_duration_change(max_duration_change)
        index, row = self.index, self.row_of[entry_id]
        query = np.asarray(index.embeddings[row], np.float32)
        _, rows = index.backend.search(query[None, :], min(len(index), k + 1))
        sha = index.entries[row].sha256
        same = set(self.rows_of_hash.get(sha, ())) if sha else set()
        out = []
        for r in ({int(r) for r in rows[0] if r >= 0} | same) - {row}:
            e = index.entries[r]
            sim = float(np.dot(np.asarray(index.embeddings[r], np.float32), query))
            near = sim >= threshold and similar_length(np.float64(e.duration), np.float64(index.entries[row].duration),
                                                       max_duration_change)
            if r in same or near:
                out.append(DupeMember(e.id, e.path, e.duration, sim, r in same))
        out.sort(key=lambda m: (not m.identical, -m.similarity, m.id))
        return out
