"""The "ivfsq" FAISS backend (IVF over 8-bit codes, exact re-ranking): exactness, recall, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest

from soundsift.errors import ConfigError
from soundsift.search.backends import FAISS_KINDS, ExactIndex, FaissIndex, ivfsq_defaults

pytest.importorskip("faiss", reason="the faiss extra is not installed")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _mixture(n: int, dim: int, rng: np.random.Generator, clusters: int = 200, intrinsic: int = 8):
    """Clustered vectors of low intrinsic dimension (like real embeddings), and a sampler for more."""
    centres = rng.standard_normal((clusters, intrinsic)).astype(np.float32)
    mapping = (rng.standard_normal((intrinsic, dim)) / np.sqrt(intrinsic)).astype(np.float32)

    def sample(m: int) -> np.ndarray:
        z = centres[rng.integers(0, clusters, m)] + 0.5 * rng.standard_normal((m, intrinsic), dtype=np.float32)
        return _unit(z @ mapping)

    return sample(n), sample


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(found, truth)]))


def test_ivfsq_is_a_faiss_kind():
    assert "ivfsq" in FAISS_KINDS
    assert {"hnsw", "ivf"} <= set(FAISS_KINDS)


@pytest.mark.parametrize("dim", [32, 21])  # 21: the codes are of vectors zero-padded to 32 (SIMD scans)
def test_exhaustive_parameters_give_the_exact_top_k(dim):
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((500, dim)))
    q = _unit(rng.standard_normal((20, dim)))
    index = FaissIndex(x, "ivfsq", nlist=8, nprobe=8, rerank=50)  # 10 x 50 >= 500: every item re-scored
    scores, rows = index.search(q, 10)
    e_scores, e_rows = ExactIndex(x).search(q, 10)
    np.testing.assert_array_equal(rows, e_rows)
    np.testing.assert_allclose(scores, e_scores, rtol=0, atol=1e-5)  # exact cosines, not 8-bit ones
    assert rows.dtype == np.int64 and scores.dtype == np.float32


def test_k_larger_than_the_index_and_a_single_query():
    rng = np.random.default_rng(1)
    x = _unit(rng.standard_normal((60, 16)))
    index = FaissIndex(x, "ivfsq", nlist=2, nprobe=2)
    scores, rows = index.search(x[3], 100)
    assert rows.shape == (1, 60) and rows[0, 0] == 3
    assert sorted(rows[0].tolist()) == list(range(60))
    assert np.all(np.diff(scores[0]) <= 0)


def test_recall_at_10_on_structured_50k_x_64():
    rng = np.random.default_rng(2)
    x, sample = _mixture(50_000, 64, rng)
    q = sample(200)
    truth = ExactIndex(x).search(q, 10)[1]
    index = FaissIndex(x, "ivfsq")  # parameters from the size and dimension
    assert index.params == {"kind": "ivfsq", **ivfsq_defaults(50_000, 64)}
    assert _recall(index.search(q, 10)[1], truth) >= 0.95
    assert index.memory_bytes() < x.nbytes  # 8-bit codes + ids + centroids, no float copy


@pytest.mark.parametrize("dim", [32, 21])
def test_save_load_round_trip_gives_identical_results(tmp_path, dim):
    rng = np.random.default_rng(3)
    x, sample = _mixture(5_000, dim, rng, clusters=50)
    q = sample(50)
    index = FaissIndex(x, "ivfsq", nlist=40, nprobe=6)
    assert index.dim == dim and index.index.d % 16 == 0
    index.save(tmp_path / "sq.index")
    loaded = FaissIndex.load(tmp_path / "sq.index", "ivfsq", vectors=x)
    assert loaded.params == index.params
    for a, b in zip(loaded.search(q, 10), index.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    # a memory-mapped copy of the vectors (how a saved sound index may hold them) re-ranks the same
    np.save(tmp_path / "emb.npy", x)
    mapped = FaissIndex.load(tmp_path / "sq.index", "ivfsq", vectors=np.load(tmp_path / "emb.npy", mmap_mode="r"))
    np.testing.assert_array_equal(mapped.search(q, 10)[1], index.search(q, 10)[1])
    # without vectors the 8-bit ranking is used: still a valid, mostly identical top 10
    bare = FaissIndex.load(tmp_path / "sq.index", "ivfsq")
    assert _recall(bare.search(q, 10)[1], index.search(q, 10)[1]) >= 0.8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nlist": 0}, "nlist"),
        ({"nlist": 1000}, "nlist"),  # more cells than vectors
        ({"nlist": 10, "nprobe": 11}, "nprobe"),
        ({"nlist": 10, "nprobe": -1}, "nprobe"),
        ({"rerank": 0}, "rerank"),
    ],
)
def test_bad_parameters_raise_config_error(kwargs, match):
    x = _unit(np.random.default_rng(4).standard_normal((200, 8)))
    with pytest.raises(ConfigError, match=match):
        FaissIndex(x, "ivfsq", **kwargs)


def test_wrong_vectors_at_load_raise_config_error(tmp_path):
    x = _unit(np.random.default_rng(5).standard_normal((300, 8)))
    FaissIndex(x, "ivfsq", nlist=4).save(tmp_path / "sq.index")
    with pytest.raises(ConfigError, match="shape"):
        FaissIndex.load(tmp_path / "sq.index", "ivfsq", vectors=x[:100])
    with pytest.raises(ConfigError, match="kind"):
        FaissIndex(x, "ivfpq-nonsense")
