"""Procedural sound events and backgrounds, numpy only, vectorised per event.

Every class has its own spectral shape and temporal pattern (harmonic bursts, sweeps, inharmonic decays,
shaped noise, regular gates, ...) and varies within the class in pitch, rate, timbre, envelope and
duration. The pitch categories use disjoint frequency ranges per class, the rate categories disjoint
repetition rates (synth_facts.RATE_RANGES), and the level categories disjoint event-to-background ratios.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from soundsift.data.synth.blocks import (
    _band_gain,
    _band_noise,
    _fade,
    _harmonic_table,
    _n_harm,
    _osc,
    _perc,
    _place,
    _rms,
    _sine,
    _t,
    _times,
)
from soundsift.data.synth.facts import (
    CLASSES,
    NONE,
    STREAM_AUDIO,
    ClipFacts,
    rng_for,
)

LEVEL_SNR_DB = ((3.0, 9.0), (18.0, 26.0))  # quiet, loud: event "active" level over background rms
BACKGROUND_DBFS = (-50.0, -40.0)
CLIP_GAIN_DB = (-6.0, 3.0)
# (low range, high range) in Hz of each pitched class's characteristic frequency.
PITCH_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "dog_bark": ((150, 260), (450, 700)),
    "bird_chirp": ((2400, 3200), (4400, 5400)),
    "siren": ((480, 680), (1050, 1450)),
    "bell": ((220, 360), (800, 1250)),
    "engine_hum": ((35, 55), (100, 160)),
    "knocking": ((180, 300), (600, 1000)),
    "whistle": ((700, 1100), (1800, 2800)),
    "drum": ((45, 75), (110, 170)),
    "beep": ((500, 800), (1800, 2800)),
    "water_drip": ((500, 850), (1400, 2200)),
    "telephone_ring": ((350, 500), (900, 1300)),
    "wind": ((150, 300), (700, 1300)),
}
Synth = Callable[[np.random.Generator, int, int, int, float], np.ndarray]


def _pitch(rng: np.random.Generator, name: str, pitch: int) -> float:
    return float(rng.uniform(*PITCH_RANGES[name][max(pitch, 0)]))


# ---- classes ------------------------------------------------------------------------------------------
def dog_bark(rng, n, sr, pitch, rate):
    f0 = _pitch(rng, "dog_bark", pitch)
    nh = _n_harm(f0 * 1.35, sr, 40)
    k = np.arange(1, nh + 1)
    formant = rng.uniform(700, 1500) * (1.4 if pitch == 1 else 1.0)
    amps = k ** -rng.uniform(0.5, 1.1) * (0.35 + np.exp(-0.5 * ((k * f0 - formant) / 450) ** 2))
    table = _harmonic_table(amps)
    bark = rng.uniform(0.09, 0.15) * (1.3 if pitch == 0 else 1.0)
    noise = _band_noise(rng, int(0.5 * sr), sr, 500, 4000)
    out = np.zeros(n)
    for t0 in _times(rng, n / sr, rate, 0.15):
        m = int(bark * rng.uniform(0.85, 1.15) * sr)
        tt = _t(m, sr)
        contour = f0 * rng.uniform(0.94, 1.06) * (1 + 0.3 * np.sin(np.pi * tt / tt[-1]))
        s = int(rng.integers(0, len(noise) - m))
        x = _osc(table, contour, sr) + rng.uniform(0.15, 0.4) * noise[s : s + m]
        _place(out, x * _perc(m, sr, 0.008, m / sr / 3), t0 * sr)
    return out


def bird_chirp(rng, n, sr, pitch, rate):
    fc = _pitch(rng, "bird_chirp", pitch)
    chirp = rng.uniform(0.035, 0.08)
    depth = rng.uniform(0.12, 0.25) * rng.choice([-1.0, 1.0])
    trill = rng.uniform(25, 60) if rng.random() < 0.5 else 0.0
    h2 = rng.uniform(0.05, 0.3) if 2 * fc * 1.3 < 0.45 * sr else 0.0
    out = np.zeros(n)
    for t0 in _times(rng, n / sr, rate, 0.2):
        m = int(chirp * rng.uniform(0.8, 1.2) * sr)
        tt = _t(m, sr)
        f = fc * rng.uniform(0.95, 1.05) * (1 + depth * (2 * tt / tt[-1] - 1)) * (1 + 0.04 * np.sin(2 * np.pi * trill * tt))
        phase = 2 * np.pi * np.cumsum(np.minimum(f, 0.45 * sr)) / sr
        x = np.sin(phase) + h2 * np.sin(2 * phase)
        _place(out, x * np.sin(np.pi * tt / tt[-1]) ** 2, t0 * sr)
    return out


def siren(rng, n, sr, pitch, rate):
    fc = _pitch(rng, "siren", pitch)
    depth = rng.uniform(0.15, 0.3)
    ph = rate * _t(n, sr) + rng.random()
    m = np.sin(2 * np.pi * ph) if rng.random() < 0.5 else 2 * np.abs(2 * (ph % 1.0) - 1) - 1
    k = np.arange(1, _n_harm(fc * (1 + depth), sr, 6) + 1)
    x = _osc(_harmonic_table(k ** -rng.uniform(0.8, 1.6)), fc * (1 + depth * m), sr)
    return _fade(x, sr, 0.05)


def bell(rng, n, sr, pitch, rate):
    f = _pitch(rng, "bell", pitch)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 3.0, 4.1]) * (1 + 0.015 * rng.standard_normal(8))
    amps = np.array([0.5, 1.0, 0.6, 0.5, 0.35, 0.25, 0.2, 0.12]) * rng.uniform(0.6, 1.4, 8)
    keep = ratios * f < 0.45 * sr
    ring = rng.uniform(0.25, 0.55) * (1.5 if pitch == 0 else 1.0)
    m = min(n, int(3 * ring * sr))
    tt = _t(m, sr)[None, :]
    r = ratios[keep][:, None]
    phases = rng.uniform(0, 2 * np.pi, (int(keep.sum()), 1))
    strike = (amps[keep][:, None] * np.sin(2 * np.pi * r * f * tt + phases) * np.exp(-tt / (ring * r ** -0.6))).sum(0)
    strike *= 1 - np.exp(-tt[0] / 0.002)
    out = np.zeros(n)
    for t0 in _times(rng, n / sr, rate, 0.04):
        _place(out, strike * rng.uniform(0.8, 1.0), t0 * sr)
    return _fade(out, sr, 0.03)


def engine_hum(rng, n, sr, pitch, rate):
    f0 = _pitch(rng, "engine_hum", pitch)
    tt = _t(n, sr)
    wobble = 1 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * tt + rng.uniform(0, 6.3))
    nh = _n_harm(f0 * 1.05, sr, 30)
    k = np.arange(1, nh + 1)
    body = rng.uniform(250, 700)  # a resonance of the engine body
    amps = k ** -rng.uniform(0.4, 0.9) * rng.uniform(0.5, 1.5, nh) * (0.3 + np.exp(-0.5 * ((k * f0 - body) / 150) ** 2))
    x = _osc(_harmonic_table(amps), f0 * wobble, sr)
    x *= 1 + rng.uniform(0.3, 0.6) * np.sin(2 * np.pi * 0.5 * f0 * tt)  # firing pulses
    x += rng.uniform(0.1, 0.4) * _band_noise(rng, n, sr, 0, rng.uniform(200, 500))
    return _fade(x, sr, 0.15)


def rain(rng, n, sr, pitch, rate):
    base = _band_noise(rng, n, sr, rng.uniform(1000, 2500), 0.45 * sr, order=1)
    count = int(rng.uniform(200, 700) * n / sr)
    impulses = np.bincount(rng.integers(0, n, count), weights=rng.exponential(1.0, count), minlength=n)
    kernel = rng.standard_normal(64) * np.exp(-np.arange(64) / rng.uniform(4, 12))
    crackle = np.convolve(impulses, kernel, mode="same")
    x = rng.uniform(0.3, 0.6) * base + rng.uniform(0.8, 1.2) * crackle / (_rms(crackle) + 1e-12)
    x *= 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * _t(n, sr) + rng.uniform(0, 6.3))
    return _fade(x, sr, 0.3)


def knocking(rng, n, sr, pitch, rate):
    f = _pitch(rng, "knocking", pitch)
    decay = rng.uniform(0.015, 0.035) * (1.3 if pitch == 0 else 1.0)
    m = int(0.12 * sr)
    tt = _t(m, sr)
    knock = (np.sin(2 * np.pi * f * tt) + 0.5 * np.sin(2 * np.pi * 2.3 * f * tt + rng.uniform(0, 6.3)))
    knock *= np.exp(-tt / decay) * (1 - np.exp(-tt / 0.0008))
    knock += 0.5 * _band_noise(rng, m, sr, 1000, 5000) * np.exp(-tt / 0.002)
    out = np.zeros(n)
    for t0 in _times(rng, n / sr, rate, 0.1):
        _place(out, knock * rng.uniform(0.75, 1.0), t0 * sr)
    return out


def whistle(rng, n, sr, pitch, rate):
    f = _pitch(rng, "whistle", pitch)
    notes = int(rng.integers(1, 5))
    ratios = np.concatenate([[1.0], rng.choice([9 / 8, 5 / 4, 4 / 3, 3 / 2, 8 / 9, 4 / 5], notes - 1)])
    bounds = np.sort(rng.integers(0, n, notes - 1))
    contour = f * ratios[np.searchsorted(bounds, np.arange(n), side="right")]
    w = max(1, int(0.03 * sr))  # glide between notes: a moving average
    c = np.cumsum(np.concatenate([np.full(w, contour[0]), contour]))
    contour = (c[w:] - c[:-w]) / w
    tt = _t(n, sr)
    contour *= 1 + rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * tt)
    phase = 2 * np.pi * np.cumsum(contour) / sr
    x = np.sin(phase) + (0.05 * np.sin(2 * phase) if 2 * f * 1.5 < 0.45 * sr else 0.0)
    x += rng.uniform(0.1, 0.25) * _band_noise(rng, n, sr, f * 0.8, f * 1.25)
    if rng.random() < 0.6:  # detached notes
        w = int(0.05 * sr)
        dip = 1 - 0.95 * np.exp(-(((np.arange(-w, w) / sr) / 0.02) ** 2))
        for b in bounds:
            lo, hi = max(0, b - w), min(n, b + w)
            x[lo:hi] *= dip[lo - (b - w) : hi - (b - w)]
    return _fade(x, sr, 0.04)


def clapping(rng, n, sr, pitch, rate):
    buf = _band_noise(rng, int(0.5 * sr), sr, rng.uniform(600, 1200), rng.uniform(2500, 5000))
    m = int(0.06 * sr)
    tt = _t(m, sr)
    env = (1 - np.exp(-tt / 0.0007)) * np.exp(-tt / rng.uniform(0.004, 0.009)) + 0.05 * np.exp(-tt / 0.03)
    out = np.zeros(n)
    for t0 in _times(rng, n / sr, rate, 0.08):
        s = int(rng.integers(0, len(buf) - m))
        _place(out, buf[s : s + m] * env * rng.uniform(0.7, 1.0), t0 * sr)
    return out


def drum(rng, n, sr, pitch, rate):
    f = _pitch(rng, "drum", pitch)
    decay = rng.uniform(0.08, 0.2) * (1.5 if pitch == 0 else 1.0)
    m = min(n, int(5 * decay * sr))
    tt = _t(m, sr)
    hit = _sine(f * (1 + rng.uniform(0.5, 1.5) * np.exp(-tt / 0.025)), sr) * np.exp(-tt / decay)
    hit *= 1 - np.exp(-tt / 0.001)
    hit += 0.3 * _band_noise(rng, m, sr, 100, 2500) * np.exp(-tt / 0.004)
    out = np.zeros(n)
    for i, t0 in enumerate(_times(rng, n / sr, rate, 0.04)):
        _place(out, hit * (1.0 if i % 4 == 0 else rng.uniform(0.6, 0.85)), t0 * sr)
    return out


def beep(rng, n, sr, pitch, rate):
    f = _pitch(rng, "beep", pitch)
    shape = int(rng.integers(3))  # sine, square-like (odd harmonics 1/k), triangle-like (1/k^2)
    amps = np.zeros(_n_harm(f, sr, 13) if shape else 1)
    amps[::2] = 1.0 / np.arange(1, len(amps) + 1, 2) ** shape
    table = _harmonic_table(amps)
    m = int(min(rng.uniform(0.3, 0.6) / rate, 0.5) * sr)
    unit = _fade(_osc(table, np.full(m, f), sr), sr, 0.003)
    out = np.zeros(n)
    for t0 in _times(rng, n / sr, rate, 0.0):
        _place(out, unit, t0 * sr)
    return out


def water_drip(rng, n, sr, pitch, rate):
    f = _pitch(rng, "water_drip", pitch)
    out = np.zeros(n)
    for t0 in _times(rng, n / sr, rate, 0.3):
        m = int(rng.uniform(0.04, 0.08) * sr)
        tt = _t(m, sr)
        rise = rng.uniform(0.5, 1.2) * (1 - np.exp(-tt / rng.uniform(0.008, 0.02)))
        x = _sine(np.minimum(f * rng.uniform(0.9, 1.1) * (1 + rise), 0.45 * sr), sr)
        _place(out, x * np.exp(-tt / rng.uniform(0.012, 0.03)) * (1 - np.exp(-tt / 0.0005)), t0 * sr)
    return out


def footsteps(rng, n, sr, pitch, rate):
    heel = _band_noise(rng, int(0.5 * sr), sr, 40, rng.uniform(300, 700))
    toe = _band_noise(rng, int(0.5 * sr), sr, rng.uniform(800, 1500), rng.uniform(3000, 6000))
    gravel = rng.uniform(0.15, 0.5)
    m = int(0.15 * sr)
    tt = _t(m, sr)
    heel_env = (1 - np.exp(-tt / 0.002)) * np.exp(-tt / rng.uniform(0.015, 0.03))
    d = rng.uniform(0.04, 0.08)
    toe_env = np.where(tt > d, np.exp(-np.maximum(tt - d, 0) / 0.03), 0.0)
    out = np.zeros(n)
    for i, t0 in enumerate(_times(rng, n / sr, rate, 0.06)):
        a, b = (int(v) for v in rng.integers(0, len(heel) - m, 2))
        unit = heel[a : a + m] * heel_env + gravel * toe[b : b + m] * toe_env
        _place(out, unit * (1.0 if i % 2 else rng.uniform(0.7, 0.9)), t0 * sr)
    return out


def telephone_ring(rng, n, sr, pitch, rate):
    f1 = _pitch(rng, "telephone_ring", pitch)
    f2 = f1 * rng.uniform(1.1, 1.3)
    m = int(rng.uniform(0.45, 0.6) / rate * sr)
    tt = _t(m, sr)
    tone = 0.5 * (np.sin(2 * np.pi * f1 * tt) + np.sin(2 * np.pi * f2 * tt))
    if rng.random() < 0.6:  # electromechanical trill
        tone *= 0.5 + 0.5 * np.tanh(5 * np.sin(2 * np.pi * rng.uniform(15, 25) * tt))
    unit = _fade(tone, sr, 0.005)
    out = np.zeros(n)
    for t0 in _times(rng, n / sr, rate, 0.0):
        _place(out, unit, t0 * sr)
    return out


def wind(rng, n, sr, pitch, rate):
    fc = _pitch(rng, "wind", pitch)
    m = 1 << int(np.ceil(np.log2(max(n, 16))))
    f = np.fft.rfftfreq(m, 1 / sr)
    spec = rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)
    tt = _t(n, sr)
    tc = np.arange(0.0, n / sr + 0.05, 0.02)  # gust envelopes at a 50-Hz control rate
    x = np.zeros(n)
    for c in fc * np.array([0.5, 0.7, 1.0, 1.4, 2.0]):
        if c >= 0.4 * sr:
            continue
        band = np.fft.irfft(spec * _band_gain(f, c / 1.3, c * 1.3, 2), m)[:n]
        u1, u2 = rng.uniform(0.1, 0.6, 2)
        env = np.exp(0.9 * (np.sin(2 * np.pi * u1 * tc + rng.uniform(0, 6.3))
                            + 0.6 * np.sin(2 * np.pi * u2 * tc + rng.uniform(0, 6.3))))
        x += band * (np.interp(tt, tc, env) / (_rms(band) + 1e-12))
    return _fade(x, sr, 0.3)


SYNTHS: dict[str, Synth] = {
    fn.__name__: fn
    for fn in (dog_bark, bird_chirp, siren, bell, engine_hum, rain, knocking, whistle, clapping, drum, beep,
               water_drip, footsteps, telephone_ring, wind)
}


# ---- clips ----------------------------------------------------------------------------------------------
def active_rms(x: np.ndarray, sr: int) -> float:
    """Rms over the 20-ms frames within 10 dB of the loudest: the level of an event while it sounds."""
    hop = max(1, sr // 50)
    m = len(x) // hop
    if m == 0:
        return _rms(x)
    e = (x[: m * hop].reshape(m, hop) ** 2).mean(axis=1)
    return float(np.sqrt(e[e >= 0.1 * e.max()].mean()))


def background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-rms noise of a random colour between white (0) and brown (-2 slope exponent)."""
    return _band_noise(rng, n, sr, 20.0, 0.0, order=1, tilt=-rng.uniform(0.0, 1.0))


def render_clip(facts: ClipFacts, sample_rate: int, seed: int, split: str, index: int) -> np.ndarray:
    """The waveform (float32, mono, in [-1, 1]) of clip ``index``: background plus its events."""
    rng = rng_for(seed, split, index, STREAM_AUDIO)
    sr = sample_rate
    n = int(round(facts.duration * sr))
    bg_db = rng.uniform(*BACKGROUND_DBFS)
    out = background(rng, n, sr) * 10 ** (bg_db / 20)
    for e in facts.events:
        s = int(round(e.onset * sr))
        m = min(n - s, int(round((e.offset - e.onset) * sr)))
        if m < 2:
            continue
        x = _fade(SYNTHS[CLASSES[e.cls]](rng, m, sr, e.pitch if e.pitch != NONE else 0, e.rate_hz), sr, 0.01)
        level_db = bg_db + rng.uniform(*LEVEL_SNR_DB[e.level])
        out[s : s + m] += x * (10 ** (level_db / 20) / (active_rms(x, sr) + 1e-12))
    out *= 10 ** (rng.uniform(*CLIP_GAIN_DB) / 20)
    peak = float(np.abs(out).max())
    if peak > 0.98:
        out *= 0.98 / peak
    return out.astype(np.float32)
