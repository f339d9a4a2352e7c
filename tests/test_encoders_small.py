"""Log-mel front end and the three small audio encoders (tiny sizes, generated signals)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soundsift.encoders import build_audio_encoder
from soundsift.encoders.frontends.mel import (
    AudioFrontEnd,
    LogMel,
    SpecAugment,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
)

SR = 16000
SMALL = ("cnn", "patchformer", "crnn")


# --- independent numpy reference ------------------------------------------------------------------


def np_htk_filterbank(n_freqs, n_mels, sr, f_min, f_max):
    """HTK mel triangles, written with plain loops: (n_freqs, n_mels)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    points = [hz(m) for m in np.linspace(mel(f_min), mel(f_max), n_mels + 2)]
    freqs = np.linspace(0, sr / 2, n_freqs)
    fb = np.zeros((n_freqs, n_mels))
    for j in range(n_mels):
        lo, mid, hi = points[j], points[j + 1], points[j + 2]
        for i, f in enumerate(freqs):
            if lo < f <= mid:
                fb[i, j] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                fb[i, j] = (hi - f) / (hi - mid)
    return fb


def np_logmel(x, sr, n_fft, win, hop, n_mels, f_min, f_max, eps, pad_mode="constant", power=2.0, log=np.log):
    n = np.arange(win)
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann
    xp = np.pad(x, (n_fft // 2, n_fft // 2), mode=pad_mode)
    n_frames = 1 + len(x) // hop
    spec = np.stack(
        [np.abs(np.fft.rfft(xp[k * hop : k * hop + n_fft] * window)) ** power for k in range(n_frames)]
    )
    fb = np_htk_filterbank(n_fft // 2 + 1, n_mels, sr, f_min, f_max)
    return log(spec @ fb + eps).T  # (n_mels, frames)


# --- front end --------------------------------------------------------------------------------------


def test_mel_filterbank_matches_numpy_htk():
    fb = mel_filterbank(257, 40, SR, 20.0, 7600.0, scale="htk")
    ref = np_htk_filterbank(257, 40, SR, 20.0, 7600.0)
    assert fb.shape == (257, 40)
    np.testing.assert_allclose(fb.numpy(), ref, atol=1e-6)
    assert (fb.sum(0) > 0).all()  # no empty filter at this resolution


def test_mel_scales_roundtrip_and_slaney():
    f = torch.tensor([0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0])
    for scale in ("htk", "slaney"):
        torch.testing.assert_close(mel_to_hz(hz_to_mel(f, scale), scale), f.double(), atol=1e-6, rtol=0)
    assert float(hz_to_mel(torch.tensor(1000.0), "slaney")) == pytest.approx(15.0)
    assert float(hz_to_mel(torch.tensor(1000.0), "htk")) == pytest.approx(999.99, abs=0.1)
    fb = mel_filterbank(513, 64, SR, 0.0, None, scale="slaney", norm="slaney")
    # unit-area filters: sum over bins * bin width == 1 (up to sampling of the triangle)
    area = fb.sum(0) * (SR / 2 / 512)
    assert torch.allclose(area[10:], torch.ones(54), atol=0.05)
    with pytest.raises(ValueError, match="mel scale"):
        mel_filterbank(257, 40, SR, scale="bark")


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_logmel_matches_numpy_reference(pad_mode):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4321)).astype(np.float32) * 0.3
    lm = LogMel(
        SR, n_fft=512, win_length=400, hop_length=160, n_mels=40, f_min=20, f_max=7600, pad_mode=pad_mode
    )
    out = lm(torch.from_numpy(x))
    assert out.shape == (2, 40, int(lm.frames_for(4321)))
    for b in range(2):
        ref = np_logmel(x[b].astype(np.float64), SR, 512, 400, 160, 40, 20, 7600, 1e-6, pad_mode)
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-4, rtol=1e-5)


def test_logmel_log10_and_magnitude_options():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(3000)
    lm = LogMel(SR, 512, 400, 160, 32, 0.0, None, log="log10", power=1.0, eps=1e-3)
    ref = np_logmel(x, SR, 512, 400, 160, 32, 0.0, SR / 2, 1e-3, power=1.0, log=np.log10)
    np.testing.assert_allclose(lm(torch.from_numpy(x)[None])[0].numpy(), ref, atol=1e-4, rtol=1e-5)


def test_frames_for_matches_output():
    lm = LogMel(SR, 512, 400, 160, 16)
    for n in (300, 400, 1599, 1600, 1601, 16000):
        assert lm(torch.zeros(1, n)).shape[-1] == int(lm.frames_for(n)) == 1 + n // 160
    assert lm.frames_for(torch.tensor([160, 161])).tolist() == [2, 2]


def test_frontend_normalises_valid_frames_and_zeroes_padding():
    fe = AudioFrontEnd(n_mels=32)
    x = torch.randn(2, 8000)
    x[1, 4000:] = 0
    mel, frames = fe(x, torch.tensor([8000, 4000]))
    assert frames.tolist() == [51, 26]
    assert torch.all(mel[1, :, 26:] == 0)
    for b, n in enumerate(frames.tolist()):
        v = mel[b, :, :n]
        assert abs(float(v.mean())) < 1e-4 and float(v.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)


def test_specaugment_train_only_and_within_valid_frames():
    torch.manual_seed(0)
    aug = SpecAugment(freq_masks=2, freq_width=4, time_masks=2, time_width=5, fill=-9.0)
    mel = torch.randn(4, 16, 50)
    assert torch.equal(aug.eval()(mel), mel)
    out = aug.train()(mel, torch.tensor([50, 50, 20, 10]))
    masked = out == -9.0
    assert masked.any()
    assert masked.sum() <= 4 * (2 * 4 * 50 + 2 * 5 * 16)
    time_only = masked.all(1)  # columns masked over every mel bin come from time masks
    assert not time_only[3, 10:].any() and not time_only[2, 20:].any()


# --- the three encoders ------------------------------------------------------------------------------


def _tiny(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_audio_encoder(name, size="tiny", **kw)


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_shape_and_finite_grads(name):
    enc = _tiny(name).train()
    x = torch.randn(3, 12000) * 0.1
    y = enc(x, torch.tensor([12000, 9000, 5000]))
    assert y.shape == (3, enc.out_dim) and enc.sample_rate == SR
    y.square().sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", SMALL)
def test_eval_is_deterministic_and_batch_independent(name):
    enc = _tiny(name, frontend={"spec_augment": True}, dropout=0.2).eval()
    x = torch.randn(4, 8000)
    a, b = enc(x), enc(x)
    assert torch.equal(a, b)
    torch.testing.assert_close(enc(x[1:2]), a[1:2], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", SMALL)
def test_zero_padding_with_true_length_does_not_change_embedding(name):
    """Frames past a clip's length are masked everywhere, so padding changes nothing beyond rounding."""
    enc = _tiny(name).eval()
    clip = torch.randn(1, 7000)
    alone = enc(clip)
    padded = torch.cat([clip, torch.zeros(1, 5000)], 1)
    other = torch.randn(1, 12000)
    batch = enc(torch.cat([padded, other]), torch.tensor([7000, 12000]))
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-4)
    # ignoring the length does change it (the test could fail)
    assert not torch.allclose(enc(padded), alone, atol=1e-3)


def test_registered_names_build():
    for name in SMALL:
        enc = build_audio_encoder(name, size="tiny")
        assert isinstance(enc.out_dim, int) and enc.out_dim > 0


def test_sizes_and_overrides():
    assert build_audio_encoder("cnn", channels=(4, 6)).out_dim == 6
    assert build_audio_encoder("crnn", size="tiny", hidden=5).out_dim == 10
    assert build_audio_encoder("patchformer", size="tiny", dim=24, heads=3).out_dim == 24
    with pytest.raises(ValueError, match="unknown size"):
        build_audio_encoder("cnn", size="huge")


# --- patchformer specifics --------------------------------------------------------------------------


def test_patchout_only_in_training_and_drops_configured_rows_and_columns():
    enc = _tiny("patchformer", patch=(8, 8), patchout_freq=2, patchout_time=3)
    mel, frames = enc.frontend(torch.randn(2, 8000), torch.tensor([8000, 6000]))
    grid, valid = enc.patch_tokens(mel, frames)
    n_freq, n_time = grid.shape[2:]
    assert (n_freq, n_time) == (8, 7) and valid.sum(1).tolist() == [7, 5]
    enc.eval()
    same, v = enc.patchout(grid, valid)
    assert same is grid and v is valid
    enc.train()
    for _ in range(5):
        out, v = enc.patchout(grid, valid)
        assert out.shape[2:] == (n_freq - 2, n_time - 3)
        assert v.shape == (2, n_time - 3)
        assert v[0].all() and int(v[1].sum()) == 2  # columns dropped only among those valid for both
    # and the whole model trains with it
    enc(torch.randn(2, 8000), torch.tensor([8000, 6000])).sum().backward()


def test_patchout_never_drops_everything():
    enc = _tiny("patchformer", patch=(8, 8), patchout_freq=50, patchout_time=50).train()
    mel, frames = enc.frontend(torch.randn(2, 3000))
    out, valid = enc.patchout(*enc.patch_tokens(mel, frames))
    assert out.shape[2] == 1 and out.shape[3] == 1 and valid.all()


def test_patchout_fraction():
    enc = _tiny("patchformer", patch=(8, 8), patchout_freq=0.25, patchout_time=0.5).train()
    mel, frames = enc.frontend(torch.randn(1, 12640))  # 80 frames -> 10 columns
    out, _ = enc.patchout(*enc.patch_tokens(mel, frames))
    assert out.shape[2:] == (6, 5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_long_input_is_mean_of_window_embeddings(pooling):
    enc = _tiny("patchformer", window_s=0.5, min_window_s=0.2, pooling=pooling).eval()
    win = 8000
    x = torch.randn(1, 2 * win + 4000)  # two full windows and a 0.25-s tail
    parts = [x[:, :win], x[:, win : 2 * win], x[:, 2 * win :]]
    expected = torch.cat([enc(p) for p in parts]).mean(0, keepdim=True)
    torch.testing.assert_close(enc(x), expected, atol=1e-5, rtol=1e-4)
    # a tail shorter than min_window_s is ignored; lengths decide windows per clip in a batch
    y = torch.randn(1, 2 * win + 1000)
    batch = enc(torch.cat([x, F_pad(y, x.shape[1])]), torch.tensor([x.shape[1], y.shape[1]]))
    torch.testing.assert_close(
        batch[1:], (enc(y[:, :win]) + enc(y[:, win : 2 * win])) / 2, atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(batch[:1], expected, atol=1e-5, rtol=1e-4)


def F_pad(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, n - x.shape[1]))


def test_patchformer_positional_range_follows_window():
    enc = _tiny("patchformer", window_s=2.0, patch=(16, 16))
    assert enc.time_pos.shape[-1] == -(-(1 + 32000 // 160) // 16)
    with pytest.raises(ValueError, match="not a multiple"):
        _tiny("patchformer", patch=(12, 16))


def test_logmel_stays_float32_under_autocast():
    lm = LogMel(SR, 512, 400, 160, 32)
    x = torch.randn(1, 4000) * 30  # loud: power spectra beyond float16 range
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lm(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, lm(x))
