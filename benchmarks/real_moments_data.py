"""Long recordings composed from real sounds, with known moment boundaries (data side of
``benchmarks/real_moments.py``).

Events: the described real sounds of ``benchmarks/real_sounds.py`` (Debian ``tuxpaint-stamps-default``,
``lmms-common``, ``sonic-pi-samples``), their leading and trailing near-silence trimmed (the true moment
is where the sound is, within 40 dB of its peak), kept when 0.5-12 s long. Backgrounds, three kinds:
real ambience loops from Debian ``lincity-ng-data`` (the game's building ambiences: farm, harbour,
market, industry, ...) and ``extremetuxracer-data`` (sliding on snow, ice, grass, leaves, mud, rock),
Sonic Pi's textures (vinyl hiss, soft buzz, 3d printer), each looped with crossfades; or generated
pink / brown noise. Every event sound and every background file belongs to one half (a hash of its
name: ``real_sounds.split_of``), so the development and test recordings share no source.

A recording (60-180 s, 16 kHz mono) holds 3-6 non-overlapping events at random times, each scaled to a
signal-to-noise ratio of 0, 6 or 12 dB (event RMS over its span against the background's RMS there).
Each event is one query: its description as a person would type it ("a hand clap", "A dolphin"), its
span the one true window. Annotations are written in lighthouse's JSON-lines layout
(``clotho_moment_{split}_release.jsonl`` style: ``qid, query, vid, duration, relevant_windows``), so
``soundsift evaluate --task moments`` and ``benchmarks/moments.py`` read them. Deterministic per seed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import real_sounds

RATE = 16000
BACKGROUND_PACKAGES = ("lincity-ng-data", "extremetuxracer-data")
SNRS_DB = (0.0, 6.0, 12.0)
EVENT_SECONDS = (0.5, 12.0)
SONIC_PI_BACKGROUNDS = ("vinyl_hiss", "ambi_soft_buzz", "loop_3d_printer")


@dataclass(frozen=True)
class Event:
    name: str
    text: str
    wave: np.ndarray  # trimmed, 16 kHz mono


def _load(path: Path) -> np.ndarray:
    from soundsift.audio import load_audio

    wave = load_audio(path, RATE)
    return np.asarray(wave if wave.ndim == 1 else wave.mean(0), np.float32)


def trim(wave: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """The part of ``wave`` between the first and last sample within ``floor_db`` of its peak."""
    peak = float(np.abs(wave).max()) if len(wave) else 0.0
    loud = np.flatnonzero(np.abs(wave) >= peak * 10 ** (floor_db / 20)) if peak > 0 else []
    return wave[loud[0]: loud[-1] + 1] if len(loud) else wave[:0]


def events(cache: Path) -> list[Event]:
    """The usable event sounds, trimmed; the Sonic Pi textures used as backgrounds are left out."""
    out = []
    for path, text, name in real_sounds.collect(real_sounds.fetch(cache)):
        if name.removeprefix("sonic-pi/") in SONIC_PI_BACKGROUNDS:
            continue
        wave = trim(_load(path))
        if EVENT_SECONDS[0] <= len(wave) / RATE <= EVENT_SECONDS[1]:
            out.append(Event(name, text, wave))
    return out


def backgrounds(cache: Path) -> list[tuple[str, np.ndarray]]:
    """(name, wave) of the real ambience files (at least 1 s after trimming)."""
    roots = {**real_sounds.fetch(cache), **real_sounds.fetch(cache, BACKGROUND_PACKAGES)}
    paths = sorted((roots["lincity-ng-data"] / "usr/share/games/lincity-ng/sounds").glob("*.wav"))
    paths = [p for p in paths if not re.match(r"(Click|Build|Blacksmith|FireStation|Monument)", p.stem)]
    paths += sorted((roots["extremetuxracer-data"] / "usr/share/games/etr/sounds").glob("*_slide.wav"))
    paths += [roots["sonic-pi-samples"] / f"usr/share/sonic-pi/samples/{s}.flac" for s in SONIC_PI_BACKGROUNDS]
    out = []
    for path in paths:
        wave = trim(_load(path))
        if len(wave) >= RATE and np.abs(wave).max() > 1e-4:
            out.append((f"{path.parent.name}/{path.stem}", wave))
    return out


def _loop(wave: np.ndarray, n: int, fade: int = RATE // 4) -> np.ndarray:
    """``wave`` repeated to ``n`` samples with linear crossfades of ``fade`` samples."""
    fade = min(fade, len(wave) // 4)
    out = np.zeros(n + len(wave), np.float32)
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    piece = wave.copy()
    if fade:
        piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
    at, step = 0, len(wave) - fade
    while at < n:
        out[at: at + len(piece)] += piece
        at += step
    return out[:n]


def _noise(n: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
    spec /= f ** (0.5 if colour == "pink" else 1.0)
    return np.fft.irfft(spec, n).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def split_of(name: str) -> str:
    return real_sounds.split_of(name)


def compose(out: Path, evs: list[Event], bgs: list[tuple[str, np.ndarray]], split: str, n: int,
            seed: int) -> Path:
    """``n`` recordings of ``split`` under ``out/split/`` and their annotations; returns the JSONL path."""
    import soundfile

    rng = np.random.default_rng(int(hashlib.sha1(f"{seed}-{split}".encode()).hexdigest(), 16) % 2**32)
    pool = [e for e in evs if split_of(e.name) == split]
    bg_pool = [b for b in bgs if split_of(b[0]) == split]
    folder = out / split
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    lines, qid = [], 0
    for r in range(n):
        chosen = rng.choice(len(pool), size=int(rng.integers(3, 7)), replace=False)
        lengths = [len(pool[i].wave) for i in chosen]
        need = (sum(lengths) + RATE * (len(chosen) + 1)) // RATE + 1
        duration = max(int(rng.integers(60, 181)), need)
        total = duration * RATE
        kind = ("real", "real", "pink", "brown")[r % 4]
        if kind == "real":
            bg_name, bg_wave = bg_pool[int(rng.integers(len(bg_pool)))]
            bg = _loop(bg_wave, total)
        else:
            bg_name, bg = f"{kind} noise", _noise(total, rng, kind)
        bg = bg / _rms(bg) * 0.05
        mix = bg.copy()
        # non-overlapping onsets: random gaps (at least 1 s) share the free time
        free = total - sum(lengths) - RATE * (len(chosen) + 1)
        cuts = np.sort(rng.uniform(0, max(free, 0), len(chosen)))
        gaps = np.diff(np.concatenate([[0.0], cuts])).astype(int) + RATE
        vid = f"{split}_{r:03d}"
        at = 0
        for i, gap, length in zip(chosen, gaps, lengths):
            at += int(gap)
            ev = pool[i]
            snr = float(rng.choice(SNRS_DB))
            gain = _rms(bg[at: at + length]) * 10 ** (snr / 20) / _rms(ev.wave)
            mix[at: at + length] += gain * ev.wave
            lines.append({"qid": f"{vid}_{qid}", "query": ev.text, "vid": vid, "duration": duration,
                          "relevant_windows": [[round(at / RATE, 3), round((at + length) / RATE, 3)]],
                          "snr_db": snr, "event": ev.name, "background": bg_name})
            qid += 1
            at += length
        mix /= max(1.0, float(np.abs(mix).max()) / 0.95)
        soundfile.write(str(folder / f"{vid}.wav"), mix, RATE, subtype="PCM_16")
    ann = out / f"real_moments_{split}.jsonl"
    ann.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return ann
