"""The embedded benchmark: a generated audio-caption retrieval dataset in the exact ClothoV2 layout.

Nothing public can be downloaded here, so ``generate`` writes clips of procedurally synthesised sound
events (synth_sounds) over noise, five captions per clip from a grammar (synth_text), and, per split, the
ground truth of every (caption, clip) pair, computed from the clips' structured facts (synth_facts). As in
real data, many captions truly describe several clips: that is what the two-stage method exploits.

Layout under ``out_dir``::

    development/ validation/ evaluation/          16-bit PCM mono WAVs (a few names with spaces,
                                                  commas and non-ASCII characters, as in Clotho)
    clotho_captions_{split}.csv                   file_name,caption_1,...,caption_5 (UTF-8)
    synth_ground_truth_{split}.npz                see load_ground_truth
    relevance_evaluation.csv                      the evaluation split's ground truth in the DCASE 2025
                                                  layout (query,audio_filenames; see relevance_queries)
    synth_info.json                               preset, seed, rate, classes, counts, format version

Everything is deterministic in (preset, sizes, seed, sample_rate): the same call writes the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import wave
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from soundsift.atomic import atomic_write
from soundsift.data.relevance import write_relevance
from soundsift.data.synth.facts import (
    ASSERTIONS,
    CLASSES,
    LEVELS,
    PITCHED,
    PITCHES,
    POSITIONS,
    RATES,
    REPETITIVE,
    SPLITS,
    ClipFacts,
    assertion_name,
    assertion_truth,
    caption_holds,
    sample_facts,
)
from soundsift.data.synth.styles import get_style
from soundsift.data.synth.text import CAPTIONS_PER_CLIP, MAX_ASSERTIONS, Caption, make_captions
from soundsift.errors import ConfigError
from soundsift.names import TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT

__all__ = [
    "CLASSES",
    "CSV_HEADER",
    "PRESETS",
    "Preset",
    "SynthSplit",
    "build_split",
    "generate",
    "ground_truth",
    "ground_truth_block",
    "load_ground_truth",
    "relevance_queries",
    "resolve_preset",
]

FORMAT_VERSION = 1
RELEVANCE_FILE = "relevance_evaluation.csv"  # the name `soundsift download dcase2025` gives the real one
DENSE_LIMIT = 64_000_000  # store holds/fraction densely up to this many (caption, clip) pairs
CSV_HEADER = ("file_name", *(f"caption_{k}" for k in range(1, CAPTIONS_PER_CLIP + 1)))
SPLIT_ALIASES = {"train": TRAIN_SPLIT, "dev": TRAIN_SPLIT, "val": VAL_SPLIT, "valid": VAL_SPLIT,
                 "test": TEST_SPLIT, "eval": TEST_SPLIT}


@dataclass(frozen=True)
class Preset:
    """Clips per split, clip duration in seconds and the caption style (synth.styles)."""

    development: int
    validation: int
    evaluation: int
    duration: float
    style: str = "broad"

    def clips(self, split: str) -> int:
        return int(getattr(self, split))


PRESETS: dict[str, Preset] = {
    "tiny": Preset(40, 12, 12, 2.0),  # tests (the original, broad captions)
    # the demo: 12 small models on 2 cores in minutes; 800 test clips (4000 queries) so that a paired
    # interval of a stage-2 gain is at most about +-1 point (docs/benchmark.md)
    "small": Preset(600, 150, 800, 4.0, "clotho"),
    "medium": Preset(3000, 750, 750, 5.0, "clotho"),
    "large": Preset(12000, 1000, 1000, 5.0, "clotho"),
}


@dataclass
class SynthSplit:
    """One split without audio: file names, facts and captions, in CSV row order."""

    name: str
    duration: float
    file_names: list[str]
    clips: list[ClipFacts]
    captions: list[list[Caption]]

    def caption_texts(self) -> list[str]:
        """All captions, row-major: caption k of row r is item 5 * r + k."""
        return [c.text for caps in self.captions for c in caps]


def resolve_preset(preset: str | Preset, **sizes: Any) -> Preset:
    """``preset`` (a name or a Preset) with any of development/validation/evaluation/duration replaced."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ConfigError(f"unknown synth preset {preset!r}; use one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    values = {k: getattr(preset, k) for k in ("development", "validation", "evaluation", "duration")}
    values.update({k: v for k, v in sizes.items() if v is not None})
    for split in SPLITS:
        if int(values[split]) < 1:
            raise ConfigError(f"synth: {split} needs at least 1 clip, got {values[split]}")
    if not float(values["duration"]) >= 0.5:
        raise ConfigError(f"synth: clip duration must be at least 0.5 s, got {values['duration']}")
    get_style(preset.style)
    return Preset(int(values["development"]), int(values["validation"]), int(values["evaluation"]),
                  float(values["duration"]), preset.style)


_SPECIAL_NAMES = (
    "{desc} {i:05d} é.wav",
    "Ambiente {i:05d}, grabación ñ.wav",
    "field recording – {desc} {i:05d}.wav",
    "kid's room (Straße) {i:05d} ü.wav",
)


def file_name(index: int, facts: ClipFacts) -> str:
    """Clotho-like names: mostly ``synth_00042.wav``; clips 1, 7, 47, 87, ... get names with spaces,
    commas and non-ASCII characters (always unique: they carry the index)."""
    if index == 1 or index % 40 == 7:
        desc = ", then ".join(CLASSES[e.cls].replace("_", " ") for e in facts.events)
        return _SPECIAL_NAMES[(index // 40 + (index == 1)) % len(_SPECIAL_NAMES)].format(desc=desc, i=index)
    return f"synth_{index:05d}.wav"


def build_split(split: str, preset: str | Preset = "small", seed: int = 0, n_clips: int | None = None,
                duration: float | None = None) -> SynthSplit:
    """The facts and captions of ``split`` without rendering audio (fast: a facts-only path)."""
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} (or train/val/test)")
    p = resolve_preset(preset, duration=duration, **{split: n_clips})
    style = get_style(p.style)
    clips = [sample_facts(seed, split, i, p.duration, style.events_p) for i in range(p.clips(split))]
    captions = [make_captions(f, seed, split, i, style) for i, f in enumerate(clips)]
    names = [file_name(i, f) for i, f in enumerate(clips)]
    return SynthSplit(split, p.duration, names, clips, captions)


def caption_assertion_ids(split: SynthSplit) -> np.ndarray:
    """(n_captions, MAX_ASSERTIONS) int16 indices into ASSERTIONS, padded with -1."""
    ids = np.full((len(split.clips) * CAPTIONS_PER_CLIP, MAX_ASSERTIONS), -1, dtype=np.int16)
    for j, cap in enumerate(c for caps in split.captions for c in caps):
        a = cap.assertion_ids()
        ids[j, : len(a)] = a
    return ids


def ground_truth(split: SynthSplit, dense: bool = True) -> dict[str, np.ndarray]:
    """The arrays of ``synth_ground_truth_{split}.npz`` (see load_ground_truth)."""
    events = [(i, e) for i, clip in enumerate(split.clips) for e in clip.events]
    gt: dict[str, np.ndarray] = {
        "file_names": np.array(split.file_names, dtype=str),
        "captions": np.array(split.caption_texts(), dtype=str),
        "class_names": np.array(CLASSES, dtype=str),
        "assertion_names": np.array([assertion_name(a) for a in ASSERTIONS], dtype=str),
        "assertion_truth": assertion_truth(split.clips),
        "caption_assertions": caption_assertion_ids(split),
        "event_clip": np.array([i for i, _ in events], dtype=np.int32),
        "event_class": np.array([e.cls for _, e in events], dtype=np.int16),
        "event_level": np.array([e.level for _, e in events], dtype=np.int8),
        "event_pitch": np.array([e.pitch for _, e in events], dtype=np.int8),
        "event_rate": np.array([e.rate for _, e in events], dtype=np.int8),
        "event_rate_hz": np.array([e.rate_hz for _, e in events], dtype=np.float32),
        "event_onset": np.array([e.onset for _, e in events], dtype=np.float32),
        "event_offset": np.array([e.offset for _, e in events], dtype=np.float32),
    }
    if dense:
        gt["holds"], gt["fraction"] = caption_holds(gt["caption_assertions"], gt["assertion_truth"])
    return gt


def ground_truth_block(gt: dict[str, np.ndarray], caption_idx: Sequence[int] | np.ndarray,
                       clip_idx: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``holds`` and ``fraction`` of some captions against some clips, from the compact arrays only
    (e.g. per training batch of the large preset, whose dense matrices are not stored)."""
    ids = gt["caption_assertions"][np.asarray(caption_idx)]
    return caption_holds(ids, gt["assertion_truth"][:, np.asarray(clip_idx)])


def load_ground_truth(root: str | Path, split: str, dense: bool = True) -> dict[str, np.ndarray]:
    """Read ``root/synth_ground_truth_{split}.npz``.

    Keys: ``holds`` (bool) and ``fraction`` (float32), both (n_captions, n_clips): whether all, and
    which fraction, of a caption's assertions hold for a clip; captions are in CSV row-major order
    (row r, caption k -> 5 * r + k) and clips in CSV row order (``file_names``). Also ``captions``,
    ``class_names``, ``assertion_names``, ``assertion_truth`` (n_assertions, n_clips),
    ``caption_assertions`` (n_captions, k; -1 pads) and the event table ``event_*`` (one row per event:
    clip, class, level, pitch, rate (-1 where absent), rate_hz, onset, offset in seconds). Splits above
    DENSE_LIMIT pairs store only the compact arrays; ``dense=True`` then computes holds/fraction.
    """
    split = SPLIT_ALIASES.get(split, split)
    path = Path(root) / f"synth_ground_truth_{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no synth ground truth (generate the benchmark with soundsift synth)")
    with np.load(path, allow_pickle=False) as f:
        gt = {k: f[k] for k in f.files}
    if dense and "holds" not in gt:
        gt["holds"], gt["fraction"] = caption_holds(gt["caption_assertions"], gt["assertion_truth"])
    return gt


def relevance_queries(gt: dict[str, np.ndarray], block: int = 4096) -> list[tuple[str, list[str]]]:
    """Every distinct caption of a split with every clip it truly describes (``holds``), clips in CSV row
    order: the ground truth as DCASE 2025 annotations (its own clip is always among them). Captions of
    the same text are one query (their files merged). Works from the compact arrays when ``holds`` is
    not stored, ``block`` captions at a time."""
    names, captions = [str(n) for n in gt["file_names"]], [str(c) for c in gt["captions"]]
    merged: dict[str, dict[int, None]] = {}
    all_clips = np.arange(len(names))
    for start in range(0, len(captions), block):
        stop = min(len(captions), start + block)
        if "holds" in gt:
            holds = gt["holds"][start:stop]
        else:
            holds, _ = ground_truth_block(gt, np.arange(start, stop), all_clips)
        for j, row in enumerate(holds, start=start):
            merged.setdefault(captions[j], {}).update(dict.fromkeys(np.flatnonzero(row).tolist()))
    return [(text, [names[i] for i in sorted(clips)]) for text, clips in merged.items() if clips]


# ---- writing --------------------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write(path, to_file)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")

    def write(f: IO[bytes]) -> None:
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.tobytes())

    _atomic_write(path, write)


def _write_csv(path: Path, split: SynthSplit) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(CSV_HEADER)
    for name, caps in zip(split.file_names, split.captions):
        writer.writerow([name, *(c.text for c in caps)])
    data = text.getvalue().encode("utf-8")
    _atomic_write(path, lambda f: f.write(data))


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz numpy can read, without the wall-clock timestamps np.savez puts in (byte-identical)."""

    def write(f: IO[bytes]) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key, arr in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)

    _atomic_write(path, write)


def _split_info(split: SynthSplit, dense: bool) -> dict[str, Any]:
    per_class = np.bincount([e.cls for c in split.clips for e in c.events], minlength=len(CLASSES))
    return {
        "clips": len(split.clips),
        "captions": len(split.clips) * CAPTIONS_PER_CLIP,
        "events": int(per_class.sum()),
        "events_per_class": dict(zip(CLASSES, (int(v) for v in per_class))),
        "held_out_phrasings": split.name == TEST_SPLIT,
        "ground_truth_dense": dense,
    }


def generate(out_dir: str | Path, preset: str | Preset = "small", seed: int = 0, sample_rate: int = 16000,
             progress: bool = True, *, n_development: int | None = None, n_validation: int | None = None,
             n_evaluation: int | None = None, duration: float | None = None) -> Path:
    """Write the benchmark for ``preset`` (PRESETS name; sizes overridable) into ``out_dir``; returns it.

    Existing files of the same names are replaced atomically; other files in ``out_dir`` are left alone.
    """
    from tqdm.auto import tqdm

    from soundsift.data.synth.sounds import render_clip

    if int(seed) < 0:
        raise ConfigError(f"synth: seed must be a non-negative integer, got {seed}")
    if int(sample_rate) < 8000:
        raise ConfigError(f"synth: sample_rate must be at least 8000 Hz, got {sample_rate}")
    p = resolve_preset(preset, development=n_development, validation=n_validation,
                       evaluation=n_evaluation, duration=duration)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "generator": "soundsift.data.synth.benchmark",
        "preset": preset if isinstance(preset, str) else "custom",
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "duration_s": p.duration,
        "caption_style": p.style,
        "classes": list(CLASSES),
        "attributes": {
            "level": {"values": list(LEVELS), "classes": list(CLASSES)},
            "pitch": {"values": list(PITCHES), "classes": [c for c in CLASSES if c in PITCHED]},
            "rate": {"values": list(RATES), "classes": [c for c in CLASSES if c in REPETITIVE]},
            "position": {"values": list(POSITIONS), "classes": list(CLASSES)},
            "order": {"values": ["before"], "classes": list(CLASSES)},
        },
        "splits": {},
    }
    for split_name in SPLITS:
        split = build_split(split_name, p, seed)
        folder = out / split_name
        folder.mkdir(exist_ok=True)
        for i, (facts, name) in enumerate(tqdm(list(zip(split.clips, split.file_names)), disable=not progress,
                                               desc=f"synth {split_name}", unit="clip")):
            _write_wav(folder / name, render_clip(facts, int(sample_rate), seed, split_name, i), int(sample_rate))
        _write_csv(out / f"clotho_captions_{split_name}.csv", split)
        dense = len(split.clips) ** 2 * CAPTIONS_PER_CLIP <= DENSE_LIMIT
        gt = ground_truth(split, dense=dense)
        _write_npz(out / f"synth_ground_truth_{split_name}.npz", gt)
        if split_name == TEST_SPLIT:
            write_relevance(out / RELEVANCE_FILE, relevance_queries(gt))
        info["splits"][split_name] = _split_info(split, dense)
    data = (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    _atomic_write(out / "synth_info.json", lambda f: f.write(data))
    return out
