"""What a build starts from and what it leaves: the live version's segments with the rows this build
deletes (``Base``), contents already embedded (``ShaIndex``), and compaction (``merge_plan``,
``gather``): a log-structured merge that keeps the number of segments logarithmic in the number of
rows and rewrites segments that are mostly deleted rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from soundsift.search.embedding import Embedded
from soundsift.search.index_types import IndexEntry
from soundsift.search.segments import Rows, Segment, sha_bytes

#: A segment is merged with the (newer) ones after it while they hold at least 1 / MERGE_FACTOR of its
#: live rows: each row is rewritten O(log rows) times, and an update of a few files merges only small
#: segments.
MERGE_FACTOR = 4
#: A segment with more than this fraction of its rows deleted is rewritten (its live rows merged).
DELETED_LIMIT = 0.25


class ShaIndex:
    """Content hashes of the rows of some segments, looked up without a dict of every hash (picklable:
    worker processes test ``sha in index``)."""

    def __init__(self, segments: list[Segment], keeps: list[np.ndarray | None]) -> None:
        raws = [np.frombuffer(np.ascontiguousarray(s.entries["sha256"] if k is None else s.entries["sha256"][k])
                              .tobytes(), np.uint8).reshape(-1, 32) for s, k in zip(segments, keeps)]
        where = [(np.full(len(r), p), np.arange(len(s)) if k is None else k)
                 for p, (r, s, k) in enumerate(zip(raws, segments, keeps))]
        full = np.concatenate([np.zeros((0, 32), np.uint8), *raws])
        keys = full[:, :8].copy().view(">u8").reshape(-1) if len(full) else np.zeros(0, ">u8")
        order = np.argsort(keys, kind="stable")
        self.keys, self.full = keys[order], full[order]
        self.part = np.concatenate([np.zeros(0, np.int64), *(w[0] for w in where)])[order]
        self.local = np.concatenate([np.zeros(0, np.int64), *(w[1] for w in where)])[order]

    def find(self, sha: str) -> tuple[int, int] | None:
        """(segment, local row) of a row with content ``sha``, or None."""
        if not sha:
            return None
        raw = np.frombuffer(sha_bytes(sha), np.uint8)
        key = raw[:8].copy().view(">u8")[0]
        lo, hi = np.searchsorted(self.keys, key, "left"), np.searchsorted(self.keys, key, "right")
        for i in range(int(lo), int(hi)):
            if np.array_equal(self.full[i], raw):
                return int(self.part[i]), int(self.local[i])
        return None

    def __contains__(self, sha: object) -> bool:
        return isinstance(sha, str) and self.find(sha) is not None


@dataclass
class Base:
    """The live version's segments and each one's deleted local rows (grown by this build)."""

    segments: list[Segment]
    deleted: list[set[int]]
    _paths: dict[str, tuple[int, int]] | None = None

    def live_rows(self, p: int) -> np.ndarray:
        gone = self.deleted[p]
        rows = np.arange(len(self.segments[p]))
        return rows if not gone else np.setdiff1d(rows, np.fromiter(gone, np.int64, len(gone)), assume_unique=True)

    def keeps(self) -> list[np.ndarray | None]:
        return [None if not d else self.live_rows(p) for p, d in enumerate(self.deleted)]

    def count(self) -> int:
        return sum(len(s) - len(d) for s, d in zip(self.segments, self.deleted))

    def index_paths(self) -> None:
        """Look paths up in one dict from now on (a full scan looks up every file)."""
        self._paths = {}
        for p, seg in enumerate(self.segments):
            gone = self.deleted[p]
            for row, path in enumerate(seg.paths()):
                if row not in gone:
                    self._paths[path] = (p, row)

    def find(self, rel: str) -> tuple[int, int] | None:
        """(segment, local row) of the live row with path ``rel``, or None."""
        if self._paths is not None:
            return self._paths.get(rel)
        for p, seg in enumerate(self.segments):
            row = seg.find(rel)
            if row is not None and row not in self.deleted[p]:
                return p, row
        return None

    def under(self, prefix: str) -> list[tuple[int, int]]:
        """Live rows whose path lies in the folder ``prefix`` (relative, no trailing slash)."""
        lead = prefix.rstrip("/") + "/"
        out = []
        for p, seg in enumerate(self.segments):
            lo = seg.lower_bound(lead)
            while lo < len(seg) and seg.path(lo).startswith(lead):
                if lo not in self.deleted[p]:
                    out.append((p, lo))
                lo += 1
        return out

    def delete(self, where: tuple[int, int]) -> None:
        self.deleted[where[0]].add(where[1])

    def paths(self) -> list[tuple[str, tuple[int, int]]]:
        return [(path, (p, row)) for p, seg in enumerate(self.segments)
                for row, path in enumerate(seg.paths()) if row not in self.deleted[p]]

    def vectors(self, where: tuple[int, int]) -> Embedded:
        """The stored embedding of a row and its windows' spans and embeddings."""
        seg, row = self.segments[where[0]], where[1]
        offsets = seg.window_rows()
        w = slice(int(offsets[row]), int(offsets[row + 1]))
        return (np.asarray(seg.embeddings[row], np.float32), np.asarray(seg.window_spans[w, 1:], np.float64),
                np.asarray(seg.window_embeddings[w], np.float32))

    def rate(self, where: tuple[int, int]) -> tuple[int, int]:
        r = self.segments[where[0]].entries[where[1]]
        return int(r["sample_rate"]), int(r["channels"])


def merge_plan(live: list[int], rows: list[int]) -> int:
    """How many of the newest segments (live row counts ``live``, total rows ``rows``, oldest first) to
    merge into one: the tail while a segment holds at most ``MERGE_FACTOR`` times the rows after it, plus
    any segment that is mostly deleted rows; 0 or 1: none."""
    n = len(live)
    start = n
    for i in range(n - 2, -1, -1):
        if live[i] <= MERGE_FACTOR * sum(live[i + 1:]):
            start = i
        else:
            break
    for i in range(n):
        if rows[i] and (rows[i] - live[i]) > DELETED_LIMIT * rows[i]:
            start = min(start, i)
    return n - start if n - start >= 2 or (start < n and live[start] < rows[start]) else 0


def gather(base: Base, parts: list[int]) -> Rows:
    """The live rows of segments ``parts`` of ``base`` as rows of a new segment."""
    entries: list[IndexEntry] = []
    rates: list[tuple[int, int]] = []
    emb, thumbs, windows = [], [], []
    for p in parts:
        seg, rows = base.segments[p], base.live_rows(p)
        entries += [seg.entry(int(r)) for r in rows]
        rates += [(int(a), int(b)) for a, b in zip(seg.entries["sample_rate"][rows], seg.entries["channels"][rows])]
        emb.append(np.asarray(seg.embeddings[rows], np.float32))
        thumbs.append(np.asarray(seg.thumbnails[rows], np.uint8))
        offsets = seg.window_rows()
        for r in rows.tolist():
            w = slice(int(offsets[r]), int(offsets[r + 1]))
            windows.append((np.asarray(seg.window_spans[w, 1:], np.float64), np.asarray(seg.window_embeddings[w])))
    dim = base.segments[parts[0]].embeddings.shape[1]
    return Rows(entries, rates, np.concatenate([np.zeros((0, dim), np.float32), *emb]),
                np.concatenate(thumbs), windows)


def live_windows(seg: Segment, deleted: set[int]) -> int:
    """How many windows of ``seg`` belong to rows not in ``deleted``."""
    offsets = seg.window_rows()
    return int(offsets[-1]) - sum(int(offsets[r + 1] - offsets[r]) for r in deleted)


def concat_rows(a: Rows, b: Rows) -> Rows:
    """The rows of ``a`` then those of ``b``."""
    return Rows(a.entries + b.entries, a.rates + b.rates, np.concatenate([a.embeddings, b.embeddings]),
                np.concatenate([a.thumbnails, b.thumbnails]), a.windows + b.windows)
