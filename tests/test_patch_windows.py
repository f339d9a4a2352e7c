"""Windows pooled from a file's own patches (``spans.patch_ranges``, ``DualEncoder.embed_patch_windows``,
``OnnxModel.embed_patch_windows``): which patches a window gets, against a naive reference and by hand;
the window vectors against patches cut and pooled by hand; ONNX Runtime against torch; and an index that
records how its windows were made, so rows made the old way and the new way are never mixed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from soundsift.encoders.yamnet.model import MIN_SAMPLES, padded_length
from soundsift.errors import ConfigError
from soundsift.model import DualEncoder
from soundsift.search.embedding import embed_with_windows
from soundsift.spans import PATCH_RULES, files_then_windows, patch_ranges, range_rows, window_spans

RATE = 16000


def naive_members(a: int, b: int, n: int, patch: int, hop: int, rule: str) -> list[int]:
    """The patches of window [a, b) by the rule's definition; else the patch whose centre is nearest the
    window's (the earlier one on a tie)."""
    if rule == "inside":
        ks = [k for k in range(n) if k * hop >= a and k * hop + patch <= b]
    else:
        ks = [k for k in range(n) if a <= k * hop + patch / 2 < b]
    return ks or [min(range(n), key=lambda k: (abs(k * hop + patch / 2 - (a + b) / 2), k))]


def test_files_then_windows_by_hand():
    rows = np.arange(14, dtype=np.float32).reshape(7, 2)  # files 0, 1, 2; then 1 + 0 + 3 windows
    got = files_then_windows(rows, [1, 0, 3])
    assert [v.tolist() for v, _ in got] == [[0, 1], [2, 3], [4, 5]]
    assert [w.tolist() for _, w in got] == [[[6, 7]], [], [[8, 9], [10, 11], [12, 13]]]


def test_patch_ranges_by_hand():
    # patches of 4 samples every 2: [0,4) [2,6) [4,8) [6,10) [8,12) [10,14); centres 2, 4, ..., 12
    spans = np.array([[1, 9], [5, 7], [3, 5], [4, 6], [0, 14], [12, 14]])
    assert patch_ranges(spans, 6, 4, 2, "inside").tolist() == [[1, 3], [2, 3], [1, 2], [1, 2], [0, 6], [5, 6]]
    assert patch_ranges(spans, 6, 4, 2, "centre").tolist() == [[0, 4], [2, 3], [1, 2], [1, 2], [0, 6], [5, 6]]
    rows, owner = range_rows(np.array([[1, 3], [2, 3], [0, 0], [4, 6]]))
    assert rows.tolist() == [1, 2, 2, 4, 5] and owner.tolist() == [0, 0, 1, 3, 3]
    with pytest.raises(ConfigError, match="unknown patch rule 'middle'"):
        patch_ranges(spans, 6, 4, 2, "middle")


@pytest.mark.parametrize("rule", PATCH_RULES)
def test_patch_ranges_match_a_naive_reference_on_random_windows(rule):
    rng = np.random.default_rng(3)
    for _ in range(300):
        patch, hop = int(rng.integers(2, 40)), int(rng.integers(1, 40))
        n_samples = int(rng.integers(patch, 400))
        n = 1 + -(-max(0, n_samples - patch) // hop)
        window = int(rng.integers(1, n_samples + 1))
        spans = window_spans(n_samples, window, int(rng.integers(1, window + 1))) if window < n_samples \
            else np.array([[0, n_samples]])
        got = patch_ranges(spans, n, patch, hop, rule)
        for (a, b), (lo, hi) in zip(spans.tolist(), got.tolist()):
            assert list(range(lo, hi)) == naive_members(a, b, n, patch, hop, rule), (a, b, patch, hop, n)


# ---------------------------------------------------------------------------------------- the model


def bridge(pooling: str = "mean", seed: int = 0) -> DualEncoder:
    """A tiny zero-shot model whose class scores vary from patch to patch (He-initialised convolutions and a
    scaled-up classifier: at the default initialisation a tiny YAMNet's outputs vanish)."""
    torch.manual_seed(seed)
    model = DualEncoder({"name": "yamnet-bridge", "tiny": True, "space": "classes", "power": 0.5,
                         "pooling": pooling, "pool_k": 2}, {"name": "yamnet-classes", "tiny": True},
                        embed_dim=521, audio_projection="identity", text_projection="identity").eval()
    with torch.no_grad():
        for module in model.audio.yamnet.net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        model.audio.yamnet.net.classifier.weight.mul_(40.0)
    model.identity = f"test-patch-windows-{pooling}-{seed}"
    return model


def waves_of(seconds, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(max(seconds) * RATE)) / RATE
    out = []
    for s in seconds:  # noise with a tone that comes and goes, so windows differ
        n = int(s * RATE)
        tone = np.sin(2 * np.pi * 700 * t[:n]) * (np.sin(2 * np.pi * 0.3 * t[:n]) > 0)
        out.append((0.05 * rng.standard_normal(n) + 0.5 * tone).astype(np.float32))
    return out


def by_hand(model: DualEncoder, wave: np.ndarray, spans: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """The file's and its windows' vectors from the file's patches cut by hand (YAMNet's zero padding),
    scored one by one, pooled in numpy by the tower's pooling, powered and normalised."""
    audio = model.audio
    hop = audio.yamnet.hop_samples
    padded = np.zeros(padded_length(len(wave), hop), np.float32)
    padded[: len(wave)] = wave
    n = 1 + (len(padded) - MIN_SAMPLES) // hop
    pieces = torch.from_numpy(np.stack([padded[k * hop: k * hop + MIN_SAMPLES] for k in range(n)]))
    with torch.no_grad():
        scores = audio.piece_scores(pieces).double().numpy()

    def pool(rows: np.ndarray) -> np.ndarray:
        if audio.pooling == "max":
            v = rows.max(0)
        elif audio.pooling == "topk":
            v = np.sort(rows, 0)[::-1][: audio.pool_k].mean(0)
        else:
            v = rows.mean(0)
        v = np.clip(v, 0, None) ** audio.power
        return v / np.linalg.norm(v)

    windows = [pool(scores[naive_members(a, b, n, MIN_SAMPLES, hop, rule)]) for a, b in spans.tolist()]
    return pool(scores), np.array(windows).reshape(-1, scores.shape[1])


@pytest.mark.parametrize("pooling,rule", [("mean", "inside"), ("mean", "centre"), ("topk", "inside"),
                                          ("max", "centre")])
def test_windows_pooled_from_the_files_patches_equal_a_reference_by_hand(pooling, rule):
    model = bridge(pooling)
    waves = waves_of([0.5, 2.0, 3.3, 7.77, 12.0])
    spans = [window_spans(len(w), 2 * RATE, RATE) for w in waves]
    got = model.embed_patch_windows(waves, spans, batch_size=3, rule=rule)
    whole = model.embed_waveforms(waves, 3)
    for wave, sp, (vec, windows), w in zip(waves, spans, got, whole):
        want_vec, want_windows = by_hand(model, wave, sp, rule)
        np.testing.assert_allclose(vec, w, atol=1e-6)  # the file's own vector is unchanged
        np.testing.assert_allclose(vec, want_vec, atol=1e-5)
        assert windows.shape == (len(sp), model.embed_dim)
        np.testing.assert_allclose(windows, want_windows, atol=1e-5)
    assert np.abs(got[-1][1] - got[-1][1][0]).max() > 1e-3  # the windows do differ: the check can fail


def test_embed_with_windows_pools_patches_only_for_models_that_pool_patches():
    model = bridge()
    waves = waves_of([1.5, 6.2])
    shared = embed_with_windows(model, waves, 4, 2.0, 1.0)
    alone = embed_with_windows(model, waves, 4, 2.0, 1.0, rule="alone")
    pieces = [waves[1][a:b] for a, b in window_spans(len(waves[1]), 2 * RATE, RATE).tolist()]
    np.testing.assert_allclose(alone[1][2], model.embed_waveforms(pieces, 4), atol=1e-6)
    np.testing.assert_allclose(shared[1][0], alone[1][0], atol=1e-6)
    assert shared[1][1].tolist() == alone[1][1].tolist() and shared[0][2].shape == (0, model.embed_dim)
    assert not np.allclose(shared[1][2], alone[1][2], atol=1e-4)  # other patch grids: other vectors

    torch.manual_seed(0)
    plain = DualEncoder({"name": "yamnet", "tiny": True}, "tiny-bert", embed_dim=8).eval()
    got = plain.embed_patch_windows(waves, [window_spans(len(w), 2 * RATE, RATE) for w in waves], 2)
    np.testing.assert_allclose(np.stack([v for v, _ in got]), plain.embed_waveforms(waves, 2), atol=1e-5)


def test_moment_evaluation_scores_the_windows_an_index_holds():
    """``evaluate --task moments`` (sliding window) and the moment model's features embed windows as an
    index build does: pooled from the recording's patches for a model that pools patches, alone otherwise."""
    from soundsift.checkpoints.windows import window_vectors

    model = bridge()
    wave = waves_of([6.2])[0]
    spans = window_spans(len(wave), 2 * RATE, RATE)
    np.testing.assert_allclose(window_vectors(model, wave, spans), embed_with_windows(model, [wave], 4, 2.0, 1.0)[0][2],
                               atol=1e-6)
    torch.manual_seed(0)
    other = DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=8).eval()
    np.testing.assert_allclose(window_vectors(other, wave, spans),
                               other.embed_waveforms([wave[a:b] for a, b in spans.tolist()], 4), atol=1e-6)


@pytest.mark.slow
def test_onnx_runtime_pools_the_same_windows_as_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from soundsift.export.onnx import export_onnx
    from soundsift.export.runtime import OnnxModel

    model = bridge("topk")
    export_onnx(model, tmp_path / "out")
    onnx = OnnxModel(tmp_path / "out")
    assert onnx.pools_patches and model.pools_patches
    waves = waves_of([0.3, 2.5, 4.1, 9.9])
    spans = [window_spans(len(w), 2 * RATE, RATE) for w in waves]
    for rule in PATCH_RULES:
        for (v1, w1), (v2, w2) in zip(model.embed_patch_windows(waves, spans, 3, rule),
                                      onnx.embed_patch_windows(waves, spans, 3, rule)):
            assert np.abs(v1 - v2).max() <= 1e-5 and w1.shape == w2.shape
            assert not len(w1) or np.abs(w1 - w2).max() <= 1e-5


# ---------------------------------------------------------------------------------------- the index


def test_an_index_records_its_window_embedding_and_never_mixes_the_two(tmp_path):
    from soundsift.search.build import build_index, update_index
    from soundsift.search.sound_index import open_index

    lib = tmp_path / "lib"
    lib.mkdir()
    for i, s in enumerate((1.0, 5.5, 7.25)):
        sf.write(lib / f"f{i}.wav", waves_of([s], seed=i)[0], RATE)
    model, out = bridge(), tmp_path / "idx"

    def manifest() -> dict:
        return json.loads((out / (out / "CURRENT").read_text().strip() / "manifest.json").read_text())

    old = build_index(lib, out, model, model_path="bridge", progress=False, window=2.0, window_rule="alone")
    assert old.embedded == 3 and manifest()["windows"]["embedding"] == "alone"
    before = np.asarray(open_index(out).windows.embeddings).copy()
    sf.write(lib / "f3.wav", waves_of([4.0], seed=9)[0], RATE)
    update_index(out, ["f3.wav"], model, model_path="bridge")  # an update keeps the index's way
    index = open_index(out)
    row = next(r for r, e in enumerate(index.entries) if e.path == "f3.wav")
    wave = sf.read(lib / "f3.wav", dtype="float32")[0]
    pieces = [wave[a:b] for a, b in window_spans(len(wave), 2 * RATE, RATE).tolist()]
    np.testing.assert_allclose(index.windows.embeddings[index.windows.rows_of(row)],
                               model.embed_waveforms(pieces, 4), atol=1e-6)
    assert manifest()["windows"]["embedding"] == "alone"

    new = build_index(lib, out, model, model_path="bridge", progress=False, window=2.0)  # default: patches
    assert new.embedded == 4 and manifest()["windows"]["embedding"] == "patches-inside"
    after = open_index(out)
    assert len(after.windows) == len(before) + len(pieces)
    again = build_index(lib, out, model, model_path="bridge", progress=False, window=2.0)
    assert again.embedded == 0 and again.unchanged == 4
    with pytest.raises(ConfigError, match="unknown window rule 'middle'"):
        build_index(lib, out, model, model_path="bridge", progress=False, window_rule="middle")
