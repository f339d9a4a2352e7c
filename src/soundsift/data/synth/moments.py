"""A Clotho-Moment-like benchmark from the generated sounds: long recordings with events at known times.

As Clotho-Moment (Munakata et al., arXiv 2409.15672) overlays Clotho clips on background noise, each
recording here is a background (coloured noise from the generator) with 1-3 generated clips of the
retrieval benchmark (``sounds.render_clip``: events over their own faint noise) overlaid at random,
non-overlapping times, each at a random level over the background. Each overlaid clip gives one query:
one of its five generated captions, and its true window: exactly the samples it occupies (onsets and
lengths are whole milliseconds, so ``start``/``end`` in seconds are exact). The clips of one recording
have different primary sound classes.

Layout under ``out_dir``::

    development/ validation/ evaluation/           the recordings, 16-bit PCM mono WAVs named ``{vid}.wav``
    clotho_moment_{train,val,test}_release.jsonl   one query per line, lighthouse's layout:
                                                   {"qid", "query", "vid", "duration", "relevant_windows",
                                                   "fg_dB"} (``data.readers.moments`` reads it)
    synth_moments_info.json                        preset, seed, rate, counts

Deterministic in (preset, seed, sample_rate): the same call writes the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.data.synth.benchmark import SPLIT_ALIASES, _atomic_write, _write_wav
from soundsift.data.synth.facts import SPLITS, rng_for, sample_facts
from soundsift.data.synth.text import make_captions
from soundsift.errors import ConfigError
from soundsift.names import TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT

FORMAT_VERSION = 1
STREAM_MOMENTS = 5  # rng stream of a recording's layout (facts.py uses 0-3)
MAX_EVENTS = 3
EVENTS_P = (0.4, 0.35, 0.25)  # 1, 2, 3 events
BACKGROUND_DBFS = (-40.0, -30.0)
FOREGROUND_DB = (3.0, 12.0)  # an overlaid clip's rms over the background's, dB (Clotho-Moment's fg_dB)
LIGHTHOUSE_SPLIT = {TRAIN_SPLIT: "train", VAL_SPLIT: "val", TEST_SPLIT: "test"}


@dataclass(frozen=True)
class MomentPreset:
    """Recordings per split, their duration, and the range of an overlaid clip's duration (seconds)."""

    development: int
    validation: int
    evaluation: int
    duration: float
    event_min: float
    event_max: float

    def recordings(self, split: str) -> int:
        return int(getattr(self, split))


MOMENT_PRESETS: dict[str, MomentPreset] = {
    "tiny": MomentPreset(4, 3, 3, 20.0, 2.0, 6.0),  # tests
    "small": MomentPreset(100, 40, 40, 60.0, 5.0, 15.0),  # one-minute recordings, as Clotho-Moment
}


@dataclass(frozen=True)
class PlacedEvent:
    """One overlaid clip: its sample span [start, end) in the recording, its caption (the query), its level."""

    start: int
    end: int
    query: str
    fg_db: float


def moment_split(split: str) -> str:
    """The canonical split name (development/validation/evaluation) of ``split`` or an alias (train/val/test)."""
    name = SPLIT_ALIASES.get(split, split)
    if name not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} (or train/val/test)")
    return name


def annotation_file(root: str | Path, split: str) -> Path:
    """The annotation file of ``split`` under ``root``: ``clotho_moment_{train,val,test}_release.jsonl``."""
    return Path(root) / f"clotho_moment_{LIGHTHOUSE_SPLIT[moment_split(split)]}_release.jsonl"


def resolve_moment_preset(preset: str | MomentPreset) -> MomentPreset:
    if isinstance(preset, MomentPreset):
        return preset
    if preset not in MOMENT_PRESETS:
        raise ConfigError(f"unknown synth --moments preset {preset!r}; use one of {', '.join(MOMENT_PRESETS)}")
    return MOMENT_PRESETS[preset]


def _layout(rng: np.random.Generator, n_ms: int, lengths_ms: list[int]) -> list[int]:
    """Onsets (ms) of non-overlapping events of ``lengths_ms`` in ``n_ms``, in a random order of events."""
    free = n_ms - sum(lengths_ms)
    cuts = np.sort(rng.integers(0, free + 1, size=len(lengths_ms)))  # gaps before each event, cumulative
    order = rng.permutation(len(lengths_ms))
    onsets, at = [0] * len(lengths_ms), 0
    for slot, k in enumerate(order):
        onsets[int(k)] = int(cuts[slot]) + at
        at += lengths_ms[int(k)]
    return onsets


def render_recording(preset: str | MomentPreset, seed: int, split: str, index: int,
                     sample_rate: int = 16000) -> tuple[np.ndarray, list[PlacedEvent]]:
    """Recording ``index`` of ``split``: its waveform (float32 in [-1, 1]) and its events in time order."""
    from soundsift.data.synth.sounds import active_rms, background, render_clip

    p, split, sr = resolve_moment_preset(preset), moment_split(split), int(sample_rate)
    if sr % 1000:
        raise ConfigError(f"synth --moments: sample_rate must be a whole number of kHz, got {sample_rate}")
    rng = rng_for(seed, split, index, STREAM_MOMENTS)
    n_events = int(rng.choice(MAX_EVENTS, p=EVENTS_P)) + 1
    n_ms = int(round(p.duration * 1000))
    lengths = [int(rng.integers(int(p.event_min * 1000), int(p.event_max * 1000) + 1)) for _ in range(n_events)]
    onsets = _layout(rng, n_ms, lengths)
    bg_db = float(rng.uniform(*BACKGROUND_DBFS))
    wave = background(rng, n_ms * sr // 1000, sr) * 10 ** (bg_db / 20)
    events = []
    for k, (onset, length) in enumerate(zip(onsets, lengths)):
        clip_index = MAX_EVENTS * index + k  # one block of N_CLASSES clips: distinct primary classes
        facts = sample_facts(seed, split, clip_index, length / 1000)
        clip = render_clip(facts, sr, seed, split, clip_index).astype(np.float64)
        captions = make_captions(facts, seed, split, clip_index)
        fg_db = round(float(rng.uniform(*FOREGROUND_DB)), 2)
        clip *= 10 ** ((bg_db + fg_db) / 20) / (active_rms(clip, sr) + 1e-12)
        start = onset * sr // 1000
        wave[start: start + len(clip)] += clip
        events.append(PlacedEvent(start, start + len(clip), captions[int(rng.integers(len(captions)))].text, fg_db))
    peak = float(np.abs(wave).max())
    if peak > 0.98:
        wave *= 0.98 / peak
    return wave.astype(np.float32), sorted(events, key=lambda e: e.start)


def generate_moments(out_dir: str | Path, preset: str | MomentPreset = "small", seed: int = 0,
                     sample_rate: int = 16000, progress: bool = True) -> Path:
    """Write the moment benchmark for ``preset`` into ``out_dir``; returns it."""
    from tqdm.auto import tqdm

    if int(seed) < 0:
        raise ConfigError(f"synth: seed must be a non-negative integer, got {seed}")
    p = resolve_moment_preset(preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "generator": "soundsift.data.synth.moments",
        "preset": preset if isinstance(preset, str) else "custom", "seed": int(seed),
        "sample_rate": int(sample_rate), "duration_s": p.duration,
        "event_duration_s": [p.event_min, p.event_max], "splits": {},
    }
    sr = int(sample_rate)
    for split in SPLITS:
        folder = out / split
        folder.mkdir(exist_ok=True)
        lines, qid = [], 0
        for r in tqdm(range(p.recordings(split)), disable=not progress, desc=f"synth moments {split}", unit="rec"):
            wave, events = render_recording(p, seed, split, r, sr)
            vid = f"moment_{LIGHTHOUSE_SPLIT[split]}_{r:05d}"
            _write_wav(folder / f"{vid}.wav", wave, sr)
            for e in events:
                lines.append({"qid": f"{LIGHTHOUSE_SPLIT[split]}_{qid:06d}", "query": e.query, "vid": vid,
                              "duration": len(wave) / sr, "relevant_windows": [[e.start / sr, e.end / sr]],
                              "fg_dB": e.fg_db})
                qid += 1
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        _atomic_write(annotation_file(out, split), lambda f, data=data: f.write(data))
        info["splits"][split] = {"recordings": p.recordings(split), "queries": len(lines)}
    data = (json.dumps(info, indent=2) + "\n").encode("utf-8")
    _atomic_write(out / "synth_moments_info.json", lambda f: f.write(data))
    return out
