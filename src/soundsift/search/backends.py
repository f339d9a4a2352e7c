"""Nearest-neighbour backends for the search index: exact (a matrix product) and FAISS (HNSW, IVF or
IVF-SQ8 with exact re-ranking).

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
FAISS_KINDS = ("hnsw", "ivf", "ivfsq")  # the FAISS index types soundsift builds
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


def open_backend(vectors: np.ndarray, backend: str, stored: dict | None, vdir: Path, exact_limit: int,
                 auto_kind: str) -> VectorBackend:
    """The backend a search asked for over ``vectors``: "auto" (exact up to ``exact_limit`` rows, FAISS
    above when installed), "exact", "faiss" (the index a build ``stored`` in ``vdir``, else
    ``auto_kind``) or a kind of ``FAISS_KINDS`` (the stored one when it is of that kind)."""
    if backend == "auto":
        backend = "faiss" if len(vectors) > exact_limit and faiss_available() else "exact"
    if backend == "exact":
        return ExactIndex(vectors)
    stored = stored or {}
    kind = stored.get("kind", auto_kind) if backend == "faiss" else backend
    if stored.get("kind") == kind and (vdir / stored.get("file", "")).is_file():
        return FaissIndex.load(vdir / stored["file"], kind, stored.get("ef_search", 512),
                               vectors=vectors, rerank=stored.get("rerank"))
    return FaissIndex(vectors, kind)


def _import_faiss():
    return require("faiss", "the optional extra: pip install 'soundsift[faiss]' (faiss-cpu)", "the FAISS backend")


def faiss_available() -> bool:
    try:
        _import_faiss()
    except ImportError:
        return False
    return True


def ivfsq_defaults(n: int, dim: int) -> dict[str, int]:
    """IVF-SQ8 parameters for ``n`` items of width ``dim`` (measured on 2 cores, see benchmarks/search.py).

    ``nlist`` ~ 2 sqrt(n) cells (2000 at 1M: k-means on 64 points per cell stays a minute or two);
    ``nprobe`` visits ~0.8% of the cells, at least 16 (1M x 1024 clustered: recall@10 0.996, 2.2 ms);
    ``rerank``: k x 10 candidates are re-scored exactly from the float32 vectors. The 8-bit codes
    are a quarter of the float32 bytes, so a probe costs a quarter of an IVF-flat probe's memory reads.
    """
    del dim  # the cost per probe scales with dim, the recall does not: one rule serves 384 and 1024
    nlist = min(max(1, int(2 * np.sqrt(max(n, 1)))), max(1, n // 39))
    return {"nlist": nlist, "nprobe": min(nlist, max(16, nlist // 128)), "rerank": 10}


#: 8-bit codes are scanned with SIMD only when the width is a multiple of 8 (16 for AVX-512): "ivfsq"
#: stores vectors zero-padded to a multiple of this (inner products unchanged). At 1M x 521 (the
#: zero-shot model) this took the single-query p50 from 4.2 ms to 1.0 ms.
SQ_WIDTH_MULTIPLE = 16


def _padded(x: np.ndarray, width: int) -> np.ndarray:
    """``x`` with zero columns appended up to ``width`` (``x`` itself when it is that wide)."""
    if x.shape[1] == width:
        return x
    out = np.zeros((x.shape[0], width), np.float32)
    out[:, : x.shape[1]] = x
    return out


def _check_ivf_params(n: int, nlist: int, nprobe: int) -> None:
    if nlist < 1 or (n and nlist > n):
        raise ConfigError(f"FAISS nlist must be between 1 and the number of vectors ({n}); got {nlist}")
    if not 1 <= nprobe <= nlist:
        raise ConfigError(f"FAISS nprobe must be between 1 and nlist ({nlist}); got {nprobe}")


class FaissIndex:
    """Approximate inner-product search with FAISS: ``kind="hnsw"`` (default), ``"ivf"`` or ``"ivfsq"``.

    HNSW: graph with ``m`` links per node; ``ef_construction`` / ``ef_search`` trade build and query
    time for recall (``ef_search`` is raised to k when k is larger). IVF: ``nlist`` k-means cells
    (default sqrt(n): cheap to train on few cores), ``nprobe`` cells visited per query (default
    nlist / 16, at least 8): about 1/16 of the vectors are scanned.
    IVFSQ: IVF cells holding 8-bit scalar-quantised vectors (1 byte per value); the ``rerank`` x k
    best candidates are re-scored exactly from ``vectors`` (the float32 embeddings, kept by reference,
    not copied: pass the same array to ``load``), so scores are exact cosines. Defaults come from
    ``ivfsq_defaults(n, dim)``; with ``nprobe == nlist`` and ``rerank * k >= n`` the result is exact.
    Without ``vectors`` (a loaded index given none) results are ranked by the 8-bit scores. Its codes
    are of the vectors zero-padded to a multiple of ``SQ_WIDTH_MULTIPLE`` values (SIMD scans).
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
        rerank: int | None = None,
        seed: int = 0,
        _index=None,
    ) -> None:
        faiss = _import_faiss()
        if kind not in FAISS_KINDS:
            raise ConfigError(f"unknown FAISS index kind {kind!r}; use one of {', '.join(FAISS_KINDS)}")
        self.kind = kind
        self.ef_search = int(ef_search)
        self.rerank = int(rerank if rerank is not None else 10)
        if self.rerank < 1:
            raise ConfigError(f"FAISS rerank must be at least 1 (candidates per result); got {self.rerank}")
        self.vectors = None
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
                if kind == "ivf":
                    nlist = int(nlist if nlist is not None else min(max(1, int(np.sqrt(max(n, 1)))),
                                                                    max(1, n // 39)))
                    nprobe = int(nprobe if nprobe is not None else min(nlist, max(8, nlist // 16)))
                else:
                    auto = ivfsq_defaults(n, d)
                    nlist = int(nlist if nlist is not None else auto["nlist"])
                    nprobe = int(nprobe if nprobe is not None else min(nlist, auto["nprobe"]))
                _check_ivf_params(n, nlist, nprobe)
                width = d if kind == "ivf" else -(-d // SQ_WIDTH_MULTIPLE) * SQ_WIDTH_MULTIPLE
                quantizer = faiss.IndexFlatIP(width)
                if kind == "ivf":
                    self.index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
                else:
                    self.index = faiss.IndexIVFScalarQuantizer(
                        quantizer, width, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
                train = x
                if n > 64 * nlist:  # k-means needs 39-256 points per cell; 64 keeps training cheap
                    pick = np.random.default_rng(seed).choice(n, 64 * nlist, replace=False)
                    train = x[np.sort(pick)]
                self.index.cp.seed = seed
                self.index.cp.niter = 20
                self.index.cp.max_points_per_centroid = 64
                if n:
                    self.index.train(_padded(train, self.index.d))
                self.index.nprobe = nprobe
            for s in range(0, n, 65536):  # padded (if at all) a block at a time: no full copy
                self.index.add(_padded(x[s : s + 65536], self.index.d))
            if kind == "ivfsq":
                self.vectors = x  # the caller's array itself when it is contiguous float32: no copy
        self.dim = int(x.shape[1]) if _index is None else int(self.index.d)  # the vectors' own width

    def attach_vectors(self, vectors: np.ndarray) -> None:
        """Use ``vectors`` (row i = item i, float32) to re-rank "ivfsq" candidates exactly."""
        vectors = np.asarray(vectors)  # a memory map stays one (read lazily, a few rows per query)
        if vectors.ndim != 2 or vectors.shape[0] != len(self) or not 0 < vectors.shape[1] <= self.index.d \
                or self.index.d - vectors.shape[1] >= SQ_WIDTH_MULTIPLE:
            raise ConfigError(f"re-ranking vectors have shape {vectors.shape}; the FAISS index holds "
                              f"({len(self)}, {self.dim})")
        self.vectors = vectors
        self.dim = int(vectors.shape[1])  # the codes may be of zero-padded vectors

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def params(self) -> dict[str, int | str]:
        """The parameters that define this index (recorded in the index manifest)."""
        if self.kind == "hnsw":
            h = self.index.hnsw
            return {"kind": "hnsw", "m": int(h.nb_neighbors(1)), "ef_construction": int(h.efConstruction),
                    "ef_search": self.ef_search}
        out = {"kind": self.kind, "nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)}
        return {**out, "rerank": self.rerank} if self.kind == "ivfsq" else out

    def memory_bytes(self) -> int:
        """Bytes this index holds beyond the caller's vectors (which "ivfsq" re-ranks from, not copies)."""
        faiss = _import_faiss()
        if self.kind == "hnsw":
            storage = faiss.downcast_index(self.index.storage)
            h = self.index.hnsw
            return int(storage.codes.size() + 4 * h.neighbors.size() + 8 * h.offsets.size()
                       + 4 * h.levels.size())
        lists = self.index.invlists
        stored = sum(lists.list_size(i) for i in range(lists.nlist))
        return int(stored * (self.index.code_size + 8) + 4 * self.index.nlist * self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        width = self.dim
        if self.vectors is None and self.kind == "ivfsq" and np.ndim(queries) in (1, 2) \
                and 0 <= self.index.d - np.shape(queries)[-1] < SQ_WIDTH_MULTIPLE:
            width = np.shape(queries)[-1]  # a bare loaded index: its codes are of zero-padded vectors
        q = as_queries(queries, width)
        k = max(0, min(int(k), len(self)))
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        faiss = _import_faiss()
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            scores, rows = self.index.search(q, k, params=params)
        elif self.kind == "ivfsq" and self.vectors is not None:
            scores, rows = self._reranked(q, k)
        else:
            scores, rows = self.index.search(_padded(q, self.index.d), k)
        if (rows < 0).any():  # fewer than k results reachable: drop the -1 padding column-wise
            keep = int((rows >= 0).sum(axis=1).min())
            scores, rows = scores[:, :keep], rows[:, :keep]
        return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)

    def _reranked(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best of ``rerank * k`` 8-bit candidates, re-scored exactly from the float32 vectors."""
        _, cand = self.index.search(_padded(q, self.index.d), min(len(self), k * self.rerank))
        step = max(1, _BLOCK_FLOATS // max(1, cand.shape[1] * self.dim))  # bounded gather per block
        out_s, out_r = [], []
        for s in range(0, len(q), step):
            c = cand[s : s + step]
            valid = c >= 0
            v = np.asarray(self.vectors[np.where(valid, c, 0)], dtype=np.float32)  # (b, cand, d)
            exact = np.einsum("bcd,bd->bc", v, q[s : s + step])
            exact[~valid] = -np.inf
            sc, rw = _sorted_topk(exact, np.where(valid, c, -1), k)
            out_s.append(sc)
            out_r.append(rw)
        return np.concatenate(out_s), np.concatenate(out_r)

    def save(self, path: str | Path) -> None:
        """Write the FAISS index to ``path`` (atomically: temp file then rename)."""
        faiss = _import_faiss()
        atomic_write(path, lambda tmp: faiss.write_index(self.index, str(tmp)))

    @classmethod
    def load(cls, path: str | Path, kind: str, ef_search: int = 512, *, vectors: np.ndarray | None = None,
             rerank: int | None = None) -> FaissIndex:
        """Read an index written by ``save``; "ivfsq" re-ranks from ``vectors`` when given."""
        faiss = _import_faiss()
        index = cls(None, kind, ef_search=ef_search, rerank=rerank, _index=faiss.read_index(str(path)))
        if vectors is not None and kind == "ivfsq":
            index.attach_vectors(vectors)
        return index
