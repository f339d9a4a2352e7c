"""The zero-shot model's parts as pure functions (pooling, sharpening, class queries, library weights),
each against a naive reference written here; no pretrained weights needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from soundsift.encoders.zeroshot import (
    LIBRARY_EPS,
    SILENT_LOGMEL,
    class_query,
    library_weights,
    pool_patches,
    sharpen,
)


def _naive_pool(scores, count, loud, pooling, k):
    rows = [list(map(float, scores[p])) for p in range(count)]
    if pooling == "sound":
        loud_rows = [rows[p] for p in range(count) if loud[p] > SILENT_LOGMEL]
        rows = loud_rows or rows
        pooling = "mean"
    out = []
    for c in range(len(rows[0])):
        col = sorted((r[c] for r in rows), reverse=True)
        if pooling == "mean":
            out.append(sum(col) / len(col))
        elif pooling == "max":
            out.append(col[0])
        else:
            top = col[:k]
            out.append(sum(top) / len(top))
    return out


@pytest.mark.parametrize("pooling", ["mean", "max", "topk", "sound"])
def test_pool_patches_matches_a_naive_loop(pooling):
    gen = torch.Generator().manual_seed(1)
    dense = torch.rand(4, 6, 5, generator=gen)
    counts = torch.tensor([6, 1, 3, 2])
    loud = torch.where(torch.rand(4, 6, generator=gen) < 0.5, torch.tensor(-6.9), torch.tensor(-2.0))
    loud[3] = -6.9  # every patch of clip 3 silent: falls back to all its patches
    dense = dense * (torch.arange(6)[None, :, None] < counts[:, None, None])  # padding holds 0
    got = pool_patches(dense, counts, pooling, 3, loud)
    for b in range(4):
        want = _naive_pool(dense[b].tolist(), int(counts[b]), loud[b].tolist(), pooling, 3)
        np.testing.assert_allclose(got[b].numpy(), want, rtol=1e-6, atol=1e-7)


def test_sound_pooling_ignores_silent_patches_by_hand():
    dense = torch.tensor([[[0.8, 0.1], [0.0, 0.5], [0.4, 0.3]]])
    loud = torch.tensor([[-1.0, -6.9, -3.0]])  # the middle patch is digital silence
    got = pool_patches(dense, torch.tensor([3]), "sound", loudness=loud)
    np.testing.assert_allclose(got.numpy(), [[0.6, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(pool_patches(dense, torch.tensor([3]), "mean").numpy(), [[0.4, 0.3]], rtol=1e-6)


def test_pool_patches_rejects_an_unknown_pooling():
    from soundsift.errors import ConfigError

    with pytest.raises(ConfigError, match="pooling 'median'"):
        pool_patches(torch.zeros(1, 2, 3), torch.tensor([2]), "median")


def test_sharpen_matches_a_naive_reference():
    gen = torch.Generator().manual_seed(2)
    scores = torch.rand(3, 7, generator=gen)
    got = sharpen(scores, 0.5, top_k=2)
    for b in range(3):
        powered = [math.sqrt(x) for x in scores[b].tolist()]
        keep = sorted(range(7), key=lambda c: -powered[c])[:2]
        want = [powered[c] if c in keep else 0.0 for c in range(7)]
        np.testing.assert_allclose(got[b].numpy(), want, rtol=1e-6)
    assert torch.equal(sharpen(scores), scores)


def test_class_query_is_a_softmax_of_cosines():
    gen = torch.Generator().manual_seed(3)
    sentence, names = torch.randn(2, 8, generator=gen), torch.randn(5, 8, generator=gen)
    names = names / names.norm(dim=1, keepdim=True)
    got = class_query(sentence, names, 0.1)
    for b in range(2):
        s = sentence[b] / sentence[b].norm()
        logits = [float(s @ names[c]) / 0.1 for c in range(5)]
        m = max(logits)
        e = [math.exp(x - m) for x in logits]
        np.testing.assert_allclose(got[b].numpy(), [x / sum(e) for x in e], rtol=1e-5)


def test_library_weights_match_a_naive_idf():
    gen = torch.Generator().manual_seed(4)
    audio = torch.rand(6, 4, generator=gen)
    audio[:, 0] = 0.9  # fires on every clip: the smallest weight
    got = library_weights(audio, 0.5)
    raw = []
    for c in range(4):
        df = sum(float(audio[i, c]) for i in range(6)) / 6
        raw.append((df + LIBRARY_EPS) ** -0.5)
    want = [r / (sum(raw) / 4) for r in raw]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    assert int(got.argmin()) == 0
    np.testing.assert_allclose(library_weights(audio, 0.0).numpy(), np.ones(4), rtol=1e-6)


def test_library_weights_by_hand():
    audio = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # df = 0.5 and 0
    got = library_weights(audio, 1.0, eps=0.5)  # weights 1 and 2 before scaling to mean 1
    np.testing.assert_allclose(got.numpy(), [2 / 3, 4 / 3], rtol=1e-6)


def test_sound_pooling_through_the_encoder_skips_digital_silence():
    from soundsift.encoders.zeroshot import YAMNetBridgeEncoder

    enc = YAMNetBridgeEncoder(tiny=True, space="classes", pooling="sound").eval()
    t = np.arange(2 * 16000) / 16000
    wave = torch.from_numpy(np.concatenate([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros(4 * 16000)]).astype(np.float32))
    dense, counts, loud = enc.patch_scores(wave[None])
    n = int(counts[0])
    silent = loud[0, :n] <= SILENT_LOGMEL
    assert 0 < int(silent.sum()) < n  # the test covers both kinds of patch
    assert abs(float(loud[0, n - 1]) - math.log(0.001)) < 1e-3  # a patch of zeros: log(0 + 0.001)
    want = dense[0, :n][~silent].mean(0)
    np.testing.assert_allclose(enc.class_scores(wave[None])[0].numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
    mean = YAMNetBridgeEncoder(tiny=True, space="classes", pooling="mean").eval()
    assert not torch.allclose(mean.class_scores(wave[None])[0], want)
