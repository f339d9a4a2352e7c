"""Result thumbnails: a small spectrogram per indexed file (drawn at index time) and its PNG encoding."""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np

THUMB_HEIGHT, THUMB_WIDTH = 32, 96  # pixels of a thumbnail: frequency bands x time columns
_THUMB_FFT = 1024  # samples per spectrum
_THUMB_FRAMES = 4  # spectra averaged into each column
_THUMB_RANGE_DB = 80.0  # dynamic range shown below the loudest cell


def _frames(x: np.ndarray, starts: np.ndarray, n_fft: int) -> np.ndarray:
    """(len(starts), n_fft) float32 frames ``x[start:start + n_fft]``, zero where a frame reaches past an
    end (no padded copy of a long recording): the frames inside are copied out of a strided view, the few
    at the ends (all of them for a sound shorter than a frame) one by one."""
    out = np.zeros((len(starts), n_fft), np.float32)
    inside = (starts >= 0) & (starts + n_fft <= len(x))
    if inside.any():
        out[inside] = np.lib.stride_tricks.sliding_window_view(x, n_fft)[starts[inside]]
    for row in np.flatnonzero(~inside).tolist():
        start = int(starts[row])
        lo, hi = max(start, 0), min(start + n_fft, len(x))
        if hi > lo:
            out[row, lo - start : hi - start] = x[lo:hi]
    return out


@functools.lru_cache(maxsize=4)
def _window(n_fft: int) -> np.ndarray:
    window = np.hanning(n_fft).astype(np.float32)
    window.flags.writeable = False
    return window


def make_thumbnail(wave: np.ndarray, sample_rate: int, height: int = THUMB_HEIGHT,
                   width: int = THUMB_WIDTH) -> np.ndarray:
    """A (height, width) uint8 spectrogram of a mono waveform: time from left to right, log-spaced bands
    from 40 Hz (bottom row) to Nyquist (top), bright = loud, ``_THUMB_RANGE_DB`` dB below the loudest
    cell is black, silence is all black. Costs ``width * _THUMB_FRAMES`` FFTs whatever the length."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if not len(x):
        return np.zeros((height, width), np.uint8)
    n_fft, cols = _THUMB_FFT, width * _THUMB_FRAMES
    centres = ((np.arange(cols) + 0.5) * len(x) / cols).astype(np.int64)  # frames spread over the sound
    frames = _frames(x, centres - n_fft // 2, n_fft)
    if not np.isfinite(frames).all():
        frames = np.nan_to_num(frames, nan=0.0, posinf=0.0, neginf=0.0)
    frames *= _window(n_fft)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).reshape(width, _THUMB_FRAMES, -1).mean(axis=1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = np.searchsorted(freqs, np.geomspace(40.0, sample_rate / 2, height + 1))
    bands = np.stack([power[:, lo : max(hi, lo + 1)].mean(axis=1)  # a band narrower than a bin: its bin
                      for lo, hi in zip(np.minimum(edges[:-1], len(freqs) - 1), edges[1:])], axis=1)
    db = 10.0 * np.log10(bands + 1e-12)
    top = float(db.max())
    if top < -100.0:  # digital silence
        return np.zeros((height, width), np.uint8)
    scaled = np.clip((db - (top - _THUMB_RANGE_DB)) / _THUMB_RANGE_DB, 0.0, 1.0)
    return np.ascontiguousarray((scaled.T[::-1] * 255.0 + 0.5).astype(np.uint8))


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a (height, width) uint8 array (no imaging library needed)."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim != 2 or 0 in img.shape:
        raise ValueError(f"a PNG image must be a non-empty (height, width) array; got shape {img.shape}")
    height, width = img.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = np.concatenate([np.zeros((height, 1), np.uint8), img], axis=1)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + chunk(b"IEND", b""))
