"""The signal building blocks of the synthetic sounds: wavetable oscillators, band-limited noise,
envelopes, fades and event placement (numpy only, vectorised)."""

from __future__ import annotations

import numpy as np

TABLE_N = 4096  # wavetable length (a power of two, so phase wrapping is a bit mask)


# ---- building blocks --------------------------------------------------------------------------------
def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def _harmonic_table(amps: np.ndarray) -> np.ndarray:
    k = np.arange(1, len(amps) + 1)[:, None]
    table = (amps[:, None] * np.sin(2 * np.pi * k * np.arange(TABLE_N)[None, :] / TABLE_N)).sum(axis=0)
    return table / np.abs(table).max()


def _n_harm(f_max: float, sr: int, cap: int) -> int:
    """How many harmonics of ``f_max`` stay below 0.45 * sr (no aliasing), at most ``cap``."""
    return max(1, min(cap, int(0.45 * sr / f_max)))


def _osc(table: np.ndarray, freq: np.ndarray, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Wavetable oscillator following the instantaneous frequency ``freq`` (Hz, one value per sample)."""
    phase = phase0 + np.cumsum(freq) / sr
    return table[(phase * TABLE_N).astype(np.int64) & (TABLE_N - 1)]


def _sine(freq: np.ndarray, sr: int, phase0: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * (phase0 + np.cumsum(freq) / sr))


def _band_gain(f: np.ndarray, lo: float, hi: float, order: int) -> np.ndarray:
    g = np.ones_like(f)
    if lo > 0:
        g /= np.sqrt(1 + (lo / np.maximum(f, 1e-3)) ** (2 * order))
    if hi > 0:
        g /= np.sqrt(1 + (f / hi) ** (2 * order))
    return g


def _band_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float, order: int = 2,
                tilt: float = 0.0) -> np.ndarray:
    """Unit-rms noise with a Butterworth-like band shape (and a spectral tilt in dB/octave / 6)."""
    m = 1 << int(np.ceil(np.log2(max(n, 16))))
    f = np.fft.rfftfreq(m, 1 / sr)
    spec = rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)
    g = _band_gain(f, lo, min(hi, 0.45 * sr) if hi > 0 else 0.0, order)
    if tilt:
        g *= (np.maximum(f, 20.0) / 1000.0) ** tilt
    x = np.fft.irfft(spec * g, m)[:n]
    return x / (_rms(x) + 1e-12)


def _perc(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
    t = _t(n, sr)
    return (1 - np.exp(-t / attack)) * np.exp(-t / decay)


def _fade(x: np.ndarray, sr: int, seconds: float) -> np.ndarray:
    k = min(len(x) // 2, int(seconds * sr))
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        x[:k] *= ramp
        x[len(x) - k :] *= ramp[::-1]
    return x


def _times(rng: np.random.Generator, dur: float, rate: float, jitter: float) -> np.ndarray:
    """Onset times (s) of a repetition at ``rate`` per second, first at 0, each interval jittered."""
    k = int(dur * rate) + 2
    intervals = (1.0 / rate) * (1 + jitter * rng.uniform(-1, 1, k))
    t = np.concatenate([[0.0], np.cumsum(intervals)])
    return t[t < dur]


def _place(out: np.ndarray, unit: np.ndarray, start: float) -> None:
    s = int(start)
    e = min(len(out), s + len(unit))
    if e > s:
        out[s:e] += unit[: e - s]
