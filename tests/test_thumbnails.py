"""Thumbnails (``search.thumbnails.make_thumbnail``): the frames cut out of a strided view equal frames cut
one by one (a naive reference, zero past the ends), so the thumbnails are bit for bit what they were."""

from __future__ import annotations

import numpy as np
import pytest

from soundsift.search.thumbnails import _THUMB_FFT, _THUMB_FRAMES, _THUMB_RANGE_DB, make_thumbnail


def reference_thumbnail(wave, sample_rate, height=32, width=96):
    """Each frame sliced out of the sound padded with a frame of zeros on both sides (non-finite samples
    zeroed), then the same spectrum, bands and dB scale."""
    x = np.asarray(wave, np.float32).reshape(-1)
    if not len(x):
        return np.zeros((height, width), np.uint8)
    n_fft, cols = _THUMB_FFT, width * _THUMB_FRAMES
    padded = np.concatenate([np.zeros(n_fft, np.float32), np.where(np.isfinite(x), x, 0), np.zeros(n_fft, np.float32)])
    frames = np.zeros((cols, n_fft), np.float32)
    for i in range(cols):
        start = int((i + 0.5) * len(x) / cols) - n_fft // 2 + n_fft  # in the padded sound
        frames[i] = padded[start: start + n_fft]
    frames = frames * np.hanning(n_fft).astype(np.float32)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).reshape(width, _THUMB_FRAMES, -1).mean(axis=1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = np.searchsorted(freqs, np.geomspace(40.0, sample_rate / 2, height + 1))
    bands = np.stack([power[:, lo: max(hi, lo + 1)].mean(axis=1)
                      for lo, hi in zip(np.minimum(edges[:-1], len(freqs) - 1), edges[1:])], axis=1)
    db = 10.0 * np.log10(bands + 1e-12)
    if db.max() < -100.0:
        return np.zeros((height, width), np.uint8)
    scaled = np.clip((db - (db.max() - _THUMB_RANGE_DB)) / _THUMB_RANGE_DB, 0.0, 1.0)
    return (scaled.T[::-1] * 255.0 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("n", [1, 2, 100, 511, 512, 513, 1023, 1024, 1025, 3000, 16000 * 3 + 7])
@pytest.mark.parametrize("kind", ["noise", "tone", "not finite"])
def test_a_thumbnail_equals_the_frame_by_frame_reference(n, kind):
    rng = np.random.default_rng(n)
    x = (0.2 * rng.standard_normal(n)).astype(np.float32)
    if kind == "tone":
        x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
    if kind == "not finite":
        x[rng.integers(0, n, size=max(1, n // 500))] = rng.choice([np.nan, np.inf, -np.inf])
    for rate in (16000, 44100):
        assert np.array_equal(make_thumbnail(x, rate), reference_thumbnail(x, rate)), (n, kind, rate)


def test_silence_is_black_and_a_tone_lights_its_band():
    assert not make_thumbnail(np.zeros(5000, np.float32), 16000).any()
    assert not make_thumbnail(np.zeros(0, np.float32), 16000).any()
    tone = np.sin(2 * np.pi * 1000 * np.arange(32000) / 16000).astype(np.float32)
    image = make_thumbnail(tone, 16000)
    band = np.searchsorted(np.geomspace(40.0, 8000.0, 33), 1000.0) - 1  # the band from the bottom holding 1 kHz
    brightest = 31 - np.argmax(image.mean(axis=1))  # rows run from high (top) to low (bottom)
    assert abs(int(brightest) - int(band)) <= 1 and image.max() == 255
