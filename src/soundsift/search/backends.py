"""Nearest-neighbour backends for the search index: exact (a matrix product) and FAISS (HNSW or IVF).

Both take L2-normalised float32 vectors, score by inner product (= cosine similarity) and share one
method, ``search(queries, k) -> (scores, rows)`` with arrays of shape (n_queries, k'), best first,
where k' = min(k, number of vectors). FAISS is an optional extra, imported only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from soundsift.atomic import atomic_write
from soundsift.errors import ConfigError, require

# Scores of one query-batch x item-chunk block stay under this many floats (bounded memory).
FAISS_KINDS = ("hnsw", "ivf")  # the FAISS index types soundsift builds
_BLOCK_FLOATS = 1 << 24


class VectorBackend(Protocol):
    name: str

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """(D,) or (Q, D) -> contiguous float32 (Q, D); a wrong width raises ValueError."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"query vectors have shape {tuple(np.shape(queries))}; expected (n, {dim})")
    return np.ascontiguousarray(q)


def _sorted_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k best of each row of ``scores`` (ties: lower row id first), best first."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        rows = np.take_along_axis(rows, part, axis=1)
    order = np.lexsort((rows, -scores), axis=1) if scores.size else np.zeros(scores.shape, np.int64)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


class ExactIndex:
    """Brute-force inner-product search: exact, deterministic, no extra memory beyond the vectors.

    Items are scanned in blocks so a batch of queries never materialises a (Q, N) matrix larger than
    ``_BLOCK_FLOATS``; a single query is one matrix-vector product over all items (memory bound).
    """

    name = "exact"

    def __init__(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (n, d); got shape {vectors.shape}")
        self.vectors = vectors if vectors.dtype == np.float32 else vectors.astype(np.float32)
        self.dim = int(vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        n = len(self)
        k = max(0, min(int(k), n))
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        block = max(4096, _BLOCK_FLOATS // max(1, len(q)))
        best_s: list[np.ndarray] = []
        best_r: list[np.ndarray] = []
        for start in range(0, n, block):
            s = q @ self.vectors[start : start + block].T
            r = np.broadcast_to(np.arange(start, start + s.shape[1], dtype=np.int64), s.shape)
            s, r = _sorted_topk(s, r, k)
            best_s.append(s)
            best_r.append(r)
        if len(best_s) == 1:
            return best_s[0], best_r[0]
        return _sorted_topk(np.concatenate(best_s, axis=1), np.concatenate(best_r, axis=1), k)


def _import_faiss():
    return require("faiss", "the optional extra: pip install 'soundsift[faiss]' (faiss-cpu)", "the FAISS backend")


def faiss_available() -> bool:
    try:
        _import_faiss()
    except ImportError:
        return False
    return True


class FaissIndex:
    """Approximate inner-product search with FAISS: ``kind="hnsw"`` (default) or ``"ivf"``.

    HNSW: graph with ``m`` links per node; ``ef_construction`` / ``ef_search`` trade build and query
    time for recall (``ef_search`` is raised to k when k is larger). IVF: ``nlist`` k-means cells
    (default sqrt(n): cheap to train on few cores), ``nprobe`` cells visited per query (default
    nlist / 16, at least 8): about 1/16 of the vectors are scanned.
    Recall is high on real embeddings (clustered, low intrinsic dimension) and lowest on uniformly
    random high-dimensional vectors, where all neighbours are nearly equidistant.
    """

    name = "faiss"

    def __init__(
        self,
        vectors: np.ndarray | None,
        kind: str = "hnsw",
        *,
        m: int = 32,
        ef_construction: int = 128,
        ef_search: int = 512,
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
        _index=None,
    ) -> None:
        faiss = _import_faiss()
        if kind not in FAISS_KINDS:
            raise ConfigError(f"unknown FAISS index kind {kind!r}; use one of {', '.join(FAISS_KINDS)}")
        self.kind = kind
        self.ef_search = int(ef_search)
        if _index is not None:
            self.index = _index
        else:
            x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
            if x.ndim != 2:
                raise ValueError(f"vectors must be (n, d); got shape {x.shape}")
            n, d = x.shape
            if kind == "hnsw":
                self.index = faiss.IndexHNSWFlat(d, int(m), faiss.METRIC_INNER_PRODUCT)
                self.index.hnsw.efConstruction = int(ef_construction)
            else:
                nlist = int(nlist or min(max(1, int(np.sqrt(max(n, 1)))), max(1, n // 39)))
                quantizer = faiss.IndexFlatIP(d)
                self.index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
                train = x
                if n > 64 * nlist:  # k-means needs 39-256 points per cell; 64 keeps training cheap
                    pick = np.random.default_rng(seed).choice(n, 64 * nlist, replace=False)
                    train = x[np.sort(pick)]
                self.index.cp.seed = seed
                self.index.cp.niter = 20
                self.index.cp.max_points_per_centroid = 64
                if n:
                    self.index.train(train)
                self.index.nprobe = int(nprobe or min(nlist, max(8, nlist // 16)))
            if n:
                self.index.add(x)
        self.dim = int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def params(self) -> dict[str, int | str]:
        """The parameters that define this index (recorded in the index manifest)."""
        if self.kind == "hnsw":
            h = self.index.hnsw
            return {"kind": "hnsw", "m": int(h.nb_neighbors(1)), "ef_construction": int(h.efConstruction),
                    "ef_search": self.ef_search}
        return {"kind": "ivf", "nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        k = max(0, min(int(k), len(self)))
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        faiss = _import_faiss()
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            scores, rows = self.index.search(q, k, params=params)
        else:
            scores, rows = self.index.search(q, k)
        if (rows < 0).any():  # fewer than k results reachable: drop the -1 padding column-wise
            keep = int((rows >= 0).sum(axis=1).min())
            scores, rows = scores[:, :keep], rows[:, :keep]
        return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)

    def save(self, path: str | Path) -> None:
        """Write the FAISS index to ``path`` (atomically: temp file then rename)."""
        faiss = _import_faiss()
        atomic_write(path, lambda tmp: faiss.write_index(self.index, str(tmp)))

    @classmethod
    def load(cls, path: str | Path, kind: str, ef_search: int = 512) -> FaissIndex:
        faiss = _import_faiss()
        return cls(None, kind, ef_search=ef_search, _index=faiss.read_index(str(path)))
