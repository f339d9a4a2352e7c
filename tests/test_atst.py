"""ATST-Frame encoder: front end against a numpy reference, frequency warping, snippets, key layout."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from soundsift.encoders import build_audio_encoder
from soundsift.encoders.atst import (
    ATSTFrameEncoder,
    ATSTLogMel,
    convert_atst_checkpoint,
    frequency_warp,
    htk_mel_filters,
    warp_rows,
)
from soundsift.encoders.pretrained import load_state_dict_checked

SR = 16000


def ref_htk_filters(n_freqs, n_mels, sr, fmin, fmax):
    """torchaudio melscale_fbanks(norm=None, mel_scale='htk') in numpy, as (n_mels, n_freqs)."""
    hz = np.linspace(0, sr // 2, n_freqs)
    mels = np.linspace(2595 * np.log10(1 + fmin / 700), 2595 * np.log10(1 + fmax / 700), n_mels + 2)
    pts = 700 * (10 ** (mels / 2595) - 1)
    out = np.zeros((n_mels, n_freqs))
    for m in range(n_mels):
        rise = (hz - pts[m]) / (pts[m + 1] - pts[m])
        fall = (pts[m + 2] - hz) / (pts[m + 2] - pts[m + 1])
        out[m] = np.maximum(0, np.minimum(rise, fall))
    return out


def ref_atst_features(x):
    """MelSpectrogram(16k, 1024, hop 160, 60-7800 Hz, 64) -> AmplitudeToDB(top_db=80) -> clamp -> MinMax."""
    x = np.pad(np.asarray(x, dtype=np.float64), 512, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    frames = 1 + (len(x) - 1024) // 160
    power = np.stack(
        [np.abs(np.fft.rfft(x[i * 160 : i * 160 + 1024] * window)) ** 2 for i in range(frames)], 1
    )
    db = 10 * np.log10(np.maximum(ref_htk_filters(513, 64, SR, 60.0, 7800.0) @ power, 1e-10))
    db = np.clip(np.maximum(db, db.max() - 80), -50, 80)
    return (db + 79.6482) / (50.6842 + 79.6482) * 2 - 1


def test_front_end_matches_reference():
    np.testing.assert_allclose(
        htk_mel_filters(513, 64, SR, 60.0, 7800.0), ref_htk_filters(513, 64, SR, 60, 7800), atol=1e-6
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4000)).astype(np.float32) * np.array([[0.5], [1e-3]], dtype=np.float32)
    out = ATSTLogMel()(torch.from_numpy(x))
    assert out.shape == (2, 64, 1 + 4000 // 160)
    for i in range(2):  # top_db is taken per clip: the quiet clip is not floored by the loud one
        np.testing.assert_allclose(out[i].numpy(), ref_atst_features(x[i]), atol=2e-4)
    assert ATSTLogMel()(torch.zeros(1, 10 * SR)).shape[-1] == 1001  # 10 s -> 1001 frames -> 250 tokens


def test_frequency_warp_drops_only_top_bins():
    ramp = torch.arange(64, dtype=torch.float32)[None, :, None].repeat(3, 1, 5)
    warped = warp_rows(ramp, 58)
    assert warped.shape == ramp.shape and torch.equal(warped[:, 0], ramp[:, 0])
    torch.testing.assert_close(warped[:, -1], ramp[:, 57])  # row 63 now shows what row 57 held
    torch.manual_seed(0)
    out = frequency_warp(ramp.repeat(20, 1, 1), max_drop=0.1)
    top = out[:, -1, 0]
    assert (
        bool(((top >= 57 - 1e-4) & (top <= 63 + 1e-4)).all()) and top.unique().numel() == 7
    )  # <= 6 of 64 dropped
    assert torch.allclose(out[:, :, 0], out[:, :, 4])  # time is untouched


@pytest.fixture(scope="module")
def tiny() -> ATSTFrameEncoder:
    torch.manual_seed(0)
    return build_audio_encoder("atst", size="tiny").eval()


def test_lengths_and_partial_snippets(tiny):
    x = torch.randn(2, 14 * SR) * 0.1
    x[1, 7 * SR :] = 3.0
    with torch.no_grad():
        batch = tiny(x, torch.tensor([14 * SR, 7 * SR]))
        alone = tiny(x[1:, : 7 * SR])
        first, second = tiny(x[:1, : 10 * SR]), tiny(x[:1, 10 * SR :])
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=1e-5)
    # tokens are averaged over real audio: 250 tokens from the first snippet, 100 from the 4-s rest
    torch.testing.assert_close(batch[:1], (250 * first + 100 * second) / 350, atol=1e-5, rtol=1e-5)


def test_training_warps_and_trains():
    torch.manual_seed(0)
    enc = ATSTFrameEncoder(size="tiny").train()
    x = torch.randn(2, 3 * SR) * 0.1
    a = enc(x)
    assert not torch.allclose(a, enc(x))
    a.pow(2).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    enc.eval()
    assert torch.equal(enc(x), enc(x))


def official_layout(d: int = 768, depth: int = 12, tokens: int = 250) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ATST-Frame's ``FrameAST`` (audiossl/ATST-SED), as loaded after the key mapping."""
    keys = {
        "mask_embed": (1, 1, d),
        "pos_embed": (1, tokens + 1, d),
        "patch_embed.patch_embed.weight": (d, 256),
        "patch_embed.patch_embed.bias": (d,),
        "norm_frame.weight": (d,),
        "norm_frame.bias": (d,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d)})
        keys.update({b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,), b + "norm2.weight": (d,)})
        keys.update({b + "norm2.bias": (d,), b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,)})
        keys.update({b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,)})
    return keys


def test_full_size_loads_official_layout():
    layout = official_layout()
    assert len(layout) == 138
    with torch.device("meta"):
        enc = ATSTFrameEncoder(pretrained=False)
        ckpt = {f"encoder.encoder.{k}": torch.empty(s) for k, s in layout.items()}
        ckpt["head.mlp.weight"] = torch.empty(527, 768)
    report = load_state_dict_checked(enc.model, convert_atst_checkpoint(ckpt))
    assert report.ok and report.loaded == 138 and enc.out_dim == 768


def test_checkpoint_conversion_rules():
    t = torch.zeros(1)
    pretrain = {
        "model.teacher.encoder.norm.weight": t,
        "model.teacher.encoder.cls_token": t,
        "model.teacher.encoder.blocks.0.attn.qkv.weight": t,
        "model.student.encoder.blocks.0.attn.qkv.weight": t,
    }
    assert set(convert_atst_checkpoint(pretrain)) == {"norm_frame.weight", "blocks.0.attn.qkv.weight"}
    c2f = {"encoder.encoder.frame_encoder.pos_embed": t, "encoder.encoder.teacher_module.x": t, "head.w": t}
    assert set(convert_atst_checkpoint(c2f)) == {"pos_embed"}
    assert set(convert_atst_checkpoint({"pos_embed": t})) == {"pos_embed"}


def test_lightning_checkpoint_file_loads(tmp_path):
    torch.manual_seed(0)
    layout = official_layout(d=32, depth=2)
    weights = {f"encoder.encoder.{k}": torch.randn(s) * 0.1 for k, s in layout.items()}
    weights["head.mlp.1.weight"] = torch.randn(527, 32)
    ckpt = {"epoch": 5, "state_dict": weights, "hyper_parameters": {"args": argparse.Namespace(lr=0.1)}}
    torch.save(ckpt, tmp_path / "atst_as2M.ckpt")
    enc = ATSTFrameEncoder(size="tiny", checkpoint=tmp_path / "atst_as2M.ckpt")
    assert torch.equal(enc.model.pos_embed, weights["encoder.encoder.pos_embed"])
    del weights["encoder.encoder.blocks.1.norm2.bias"]
    torch.save(ckpt, tmp_path / "broken.ckpt")
    with pytest.raises(RuntimeError, match=r"blocks\.1\.norm2\.bias"):
        ATSTFrameEncoder(size="tiny", checkpoint=tmp_path / "broken.ckpt")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="no published weights"):
        ATSTFrameEncoder(size="tiny", pretrained=True)
    with pytest.raises(ValueError, match="positional"):
        ATSTFrameEncoder(size="tiny", segment_seconds=11.0)
    with pytest.raises(ValueError, match="freq_warp_max_drop"):
        ATSTFrameEncoder(size="tiny", freq_warp_max_drop=1.5)
