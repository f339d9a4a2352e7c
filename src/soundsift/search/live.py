"""One row space over the live rows of several segments (deleted rows left out), as a search sees it.

``Parted`` numbers the live rows of a list of arrays (segment order, then row order) and maps between
that numbering and (part, local row); ``RowView`` reads rows of the parts through it as if they were
one array (``view[i]``, ``view[a:b]``, ``view @ q``, ``np.asarray(view)``); ``PartedBackend`` searches
each part with its own backend (exact or the segment's FAISS index) and merges the results, optionally
restricted to an ``allowed`` mask of live rows (filters: every result is allowed, and with the exact
backend the results are exactly the best allowed rows).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np

from soundsift.search.backends import _BLOCK_FLOATS, VectorBackend, _sorted_topk, as_queries


class Parted:
    """Live-row numbering over parts of ``sizes`` rows; ``keeps[i]``: the sorted live local rows of
    part i, or None when all its rows are live."""

    def __init__(self, sizes: Sequence[int], keeps: Sequence[np.ndarray | None]) -> None:
        self.sizes = [int(s) for s in sizes]
        self.keeps = list(keeps)
        counts = [s if k is None else len(k) for s, k in zip(self.sizes, self.keeps)]
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part, local row) of each live row in ``rows``."""
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} rows")
        part = np.searchsorted(self.starts, rows, side="right") - 1
        local = rows - self.starts[part]
        for p in sorted(set(part.tolist())):  # not np.unique: it imports numpy.ma (20 ms of a search)
            if self.keeps[p] is not None:
                sel = part == p
                local[sel] = self.keeps[p][local[sel]]
        return part, local

    def to_live(self, part: int, local: np.ndarray) -> np.ndarray:
        """Live rows of local rows of ``part`` (-1 for a deleted one)."""
        local = np.asarray(local, np.int64)
        keep = self.keeps[part]
        if keep is None:
            return self.starts[part] + local
        at = np.searchsorted(keep, local)
        found = (at < len(keep)) & (keep[np.minimum(at, len(keep) - 1)] == local) if len(keep) else at < 0
        return np.where(found, self.starts[part] + at, -1)

    def mask(self, part: int, allowed: np.ndarray | None) -> np.ndarray | None:
        """The local rows of ``part`` that are live and ``allowed`` (a live-row mask), as a mask; None
        when that is every row."""
        keep, lo, hi = self.keeps[part], int(self.starts[part]), int(self.starts[part + 1])
        if keep is None and (allowed is None or bool(allowed[lo:hi].all())):
            return None
        out = np.zeros(self.sizes[part], bool)
        out[slice(None) if keep is None else keep] = True if allowed is None else allowed[lo:hi]
        return out


class RowView:
    """The live rows of per-part arrays (same trailing shape) read as one array."""

    def __init__(self, parted: Parted, arrays: Sequence[np.ndarray]) -> None:
        self.parted, self.arrays = parted, list(arrays)
        self.shape = (len(parted), *arrays[0].shape[1:])
        self.dtype = arrays[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            if not -len(self) <= key < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            part, local = self.parted.locate(np.array([key % len(self)]))
            return np.asarray(self.arrays[int(part[0])][int(local[0])])
        rows = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        part, local = self.parted.locate(rows)
        for p in sorted(set(part.tolist())):  # not np.unique: it imports numpy.ma (20 ms of a search)
            sel = part == p
            order = np.argsort(local[sel], kind="stable")  # mapped arrays read fastest in row order
            out[np.flatnonzero(sel)[order]] = self.arrays[p][local[sel][order]]
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __matmul__(self, other):
        parts = [np.asarray(a if keep is None else a[keep]) @ other
                 for a, keep in zip(self.arrays, self.parted.keeps)]
        return np.concatenate(parts) if parts else np.zeros((0, *np.shape(other)[1:]), np.float32)


def masked_search(backend: VectorBackend, vectors: np.ndarray, q: np.ndarray, k: int,
                  mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of ``backend`` (over ``vectors``) among those in ``mask`` (None: all).

    Exact backend: the best allowed rows exactly (one scan with the excluded rows' scores masked when
    many are allowed, else a scan of the allowed rows alone). FAISS: candidates fetched in growing
    numbers until k are allowed; when that would fetch more than a quarter of the rows, the allowed rows
    are scanned exactly."""
    if mask is None:
        return backend.search(q, k)
    n, allowed = len(mask), np.flatnonzero(mask)
    k = min(k, len(allowed))
    if k == 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if backend.name == "exact" and len(allowed) > n // 4:
        return _masked_scan(vectors, q, k, mask)
    fetch = k + math.ceil(1.5 * k * n / len(allowed))
    while backend.name != "exact" and fetch <= n // 4:
        scores, rows = backend.search(q, fetch)
        if int(_allowed(rows, mask).sum(axis=1).min()) >= k:
            return _first_allowed(scores, rows, mask, k)
        if rows.shape[1] < fetch:  # no more reachable (IVF probes a few cells)
            break
        fetch *= 4
    sub = np.asarray(vectors[allowed], np.float32)
    scores = q @ sub.T
    return _sorted_topk(scores, np.broadcast_to(allowed, scores.shape), k)


def _masked_scan(vectors: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An exact scan in blocks (as ``ExactIndex``), the scores of rows outside ``mask`` set to -inf."""
    block = max(4096, _BLOCK_FLOATS // max(1, len(q)))
    best_s, best_r = [], []
    for start in range(0, len(vectors), block):
        s = q @ np.asarray(vectors[start:start + block], np.float32).T
        s[:, ~mask[start:start + block]] = -np.inf
        r = np.broadcast_to(np.arange(start, start + s.shape[1], dtype=np.int64), s.shape)
        s, r = _sorted_topk(s, r, min(k, s.shape[1]))
        best_s.append(s)
        best_r.append(r)
    return _sorted_topk(np.concatenate(best_s, axis=1), np.concatenate(best_r, axis=1), k)


def _allowed(rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (rows >= 0) & mask[np.maximum(rows, 0)]


def _first_allowed(scores: np.ndarray, rows: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` allowed results of each (best-first) row."""
    keep = np.argsort(~_allowed(rows, mask), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)


class PartedBackend:
    """Search over the live rows of several parts, each with its own backend; ``allowed`` (a live-row
    mask, or None) restricts every search (see ``restricted``)."""

    def __init__(self, parted: Parted, arrays: Sequence[np.ndarray], backends: Sequence[VectorBackend],
                 dim: int) -> None:
        self.parted, self.arrays, self.backends, self.dim = parted, list(arrays), list(backends), dim
        self.allowed: np.ndarray | None = None
        names = sorted({b.name for b in backends})
        self.name = "+".join(names) if names else "exact"

    def __len__(self) -> int:
        return len(self.parted) if self.allowed is None else int(self.allowed.sum())

    def memory_bytes(self) -> int:
        """Bytes the parts' FAISS indexes hold beyond the vectors (see ``FaissIndex.memory_bytes``)."""
        return sum(b.memory_bytes() for b in self.backends if hasattr(b, "memory_bytes"))

    def restricted(self, allowed: np.ndarray | None) -> PartedBackend:
        """This backend with searches restricted to the live rows in ``allowed``."""
        out = copy.copy(self)
        out.allowed = allowed
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        scores = [np.zeros((len(q), 0), np.float32)]
        rows = [np.zeros((len(q), 0), np.int64)]
        for p, (backend, vectors) in enumerate(zip(self.backends, self.arrays)):
            s, r = masked_search(backend, vectors, q, k, self.parted.mask(p, self.allowed))
            live = self.parted.to_live(p, r)
            if (live < 0).any():  # a deleted row from an unmasked search cannot happen; be safe
                s = np.where(live < 0, -np.inf, s)
            scores.append(s.astype(np.float32))
            rows.append(live)
        s, r = np.concatenate(scores, axis=1), np.concatenate(rows, axis=1)
        k = min(int(k), int(np.isfinite(s).sum(axis=1).min()) if s.size else 0)
        return _sorted_topk(s, r, k) if k else (s[:, :0], r[:, :0])
