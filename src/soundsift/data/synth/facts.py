"""What a generated clip contains, as structured facts, and the atomic assertions captions make about them.

A clip holds 1-3 events of distinct classes (so a caption's "the dog" names exactly one event). Each
event has a level (quiet/loud, relative to the background), a pitch register (low/high, pitched classes
only), a repetition rate (slow/fast, repetitive classes only, and only where the event lasts long enough
to hear it) and an onset/offset from which the position (start/end/throughout) and the order of two
non-overlapping events follow. Captions assert subsets of these facts; ``assertion_truth`` evaluates
every assertion against every clip at once, which is what the ground truth is built from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from soundsift.errors import ConfigError
from soundsift.names import SPLITS

CLASSES: tuple[str, ...] = (
    "dog_bark",
    "bird_chirp",
    "siren",
    "bell",
    "engine_hum",
    "rain",
    "knocking",
    "whistle",
    "clapping",
    "drum",
    "beep",
    "water_drip",
    "footsteps",
    "telephone_ring",
    "wind",
)
N_CLASSES = len(CLASSES)
PITCHED = frozenset(CLASSES) - {"rain", "clapping", "footsteps"}
# Repetition rate ranges in events (or, for the siren, sweeps) per second: (slow, fast).
RATE_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "dog_bark": ((1.1, 1.7), (3.4, 4.6)),
    "bird_chirp": ((2.0, 3.2), (7.0, 10.0)),
    "siren": ((0.8, 1.2), (3.0, 4.5)),
    "bell": ((0.9, 1.4), (3.0, 4.2)),
    "knocking": ((1.5, 2.3), (5.0, 7.0)),
    "clapping": ((1.4, 2.2), (5.0, 7.5)),
    "drum": ((1.2, 2.0), (4.0, 6.0)),
    "beep": ((1.0, 1.5), (4.0, 6.0)),
    "water_drip": ((1.2, 2.0), (4.5, 7.0)),
    "footsteps": ((1.2, 1.8), (3.0, 4.2)),
    "telephone_ring": ((0.6, 0.9), (1.6, 2.3)),
}
REPETITIVE = frozenset(RATE_RANGES)
MIN_REPEATS = 2.0  # a rate is observable (and nameable) when the event spans this many periods

LEVELS = ("quiet", "loud")
PITCHES = ("low", "high")
RATES = ("slow", "fast")
POSITIONS = ("start", "end", "throughout")
NONE = -1
VALUE_NAMES = {"level": LEVELS, "pitch": PITCHES, "rate": RATES, "pos": POSITIONS}

# Event placements as fractions of the clip: (onset range, offset range). Chosen so that the derived
# position and order facts are never borderline (see position()).
SLOTS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "full": ((0.00, 0.04), (0.96, 1.00)),
    "start": ((0.00, 0.04), (0.32, 0.45)),
    "early": ((0.17, 0.25), (0.40, 0.47)),
    "middle": ((0.20, 0.32), (0.66, 0.80)),
    "centre": ((0.37, 0.42), (0.58, 0.63)),
    "late": ((0.53, 0.60), (0.76, 0.85)),
    "end": ((0.55, 0.68), (0.96, 1.00)),
    "first": ((0.00, 0.04), (0.26, 0.31)),
    "last": ((0.69, 0.74), (0.96, 1.00)),
}
LAYOUTS: dict[int, tuple[tuple[tuple[str, ...], float], ...]] = {
    1: ((("full",), 4), (("start",), 2), (("end",), 2), (("middle",), 2)),
    2: (
        (("start", "end"), 3),
        (("early", "late"), 2),
        (("start", "late"), 1),
        (("early", "end"), 1),
        (("full", "start"), 2),
        (("full", "end"), 2),
        (("full", "middle"), 2),
        (("middle", "start"), 1),
        (("middle", "end"), 1),
        (("full", "full"), 1),
    ),
    3: (
        (("first", "centre", "last"), 3),
        (("full", "start", "end"), 3),
        (("full", "early", "late"), 2),
        (("full", "middle", "start"), 1),
        (("start", "middle", "end"), 1),
    ),
}
N_EVENTS_P = (0.3, 0.45, 0.25)


@dataclass(frozen=True)
class Event:
    """One sound event: class index, level/pitch/rate categories (NONE where absent), times in seconds."""

    cls: int
    level: int
    pitch: int
    rate: int
    rate_hz: float
    onset: float
    offset: float

    @property
    def name(self) -> str:
        return CLASSES[self.cls]


@dataclass(frozen=True)
class ClipFacts:
    """Everything a caption may say about one clip."""

    duration: float
    events: tuple[Event, ...]

    def event(self, cls: int) -> Event | None:
        return next((e for e in self.events if e.cls == cls), None)


def position(onset: float, offset: float, duration: float) -> int:
    """The nameable position of an event: start, end, throughout, or NONE (middle/early/late)."""
    if onset <= 0.1 * duration and offset >= 0.9 * duration:
        return POSITIONS.index("throughout")
    if onset <= 0.1 * duration and offset <= 0.5 * duration:
        return POSITIONS.index("start")
    if onset >= 0.5 * duration and offset >= 0.9 * duration:
        return POSITIONS.index("end")
    return NONE


def split_index(split: str) -> int:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def rng_for(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """A generator private to (seed, split, clip or block index, stream): no global state."""
    if int(seed) < 0:
        raise ConfigError(f"synth: seed must be a non-negative integer, got {seed}")
    return np.random.default_rng([int(seed), split_index(split), int(index), int(stream)])


STREAM_FACTS, STREAM_CAPTIONS, STREAM_AUDIO, STREAM_BLOCK = 0, 1, 2, 3


def primary_class(seed: int, split: str, index: int) -> int:
    """Class of the clip's first event: a fresh permutation of all classes per block of N_CLASSES clips,
    so every class occurs in every split of at least N_CLASSES clips."""
    block = rng_for(seed, split, index // N_CLASSES, STREAM_BLOCK).permutation(N_CLASSES)
    return int(block[index % N_CLASSES])


def sample_facts(seed: int, split: str, index: int, duration: float,
                 events_p: tuple[float, float, float] = N_EVENTS_P) -> ClipFacts:
    """The facts of clip ``index`` of ``split``: deterministic in (seed, split, index, duration);
    ``events_p``: the probability of 1, 2 and 3 events (see synth.styles)."""
    rng = rng_for(seed, split, index, STREAM_FACTS)
    n = int(rng.choice(3, p=events_p)) + 1
    layouts = LAYOUTS[n]
    weights = np.array([w for _, w in layouts], dtype=float)
    slots = layouts[int(rng.choice(len(layouts), p=weights / weights.sum()))][0]
    first = primary_class(seed, split, index)
    others = rng.permutation([c for c in range(N_CLASSES) if c != first])[: n - 1]
    classes = [first, *(int(c) for c in others)]
    order = rng.permutation(n)  # which class takes which slot
    events = []
    for slot_i, cls_i in enumerate(order):
        cls = classes[cls_i]
        name = CLASSES[cls]
        (on_lo, on_hi), (off_lo, off_hi) = SLOTS[slots[slot_i]]
        onset = round(float(rng.uniform(on_lo, on_hi)) * duration, 3)
        offset = round(float(rng.uniform(off_lo, off_hi)) * duration, 3)
        level = int(rng.integers(2))
        pitch = int(rng.integers(2)) if name in PITCHED else NONE
        rate, rate_hz = NONE, 0.0
        if name in REPETITIVE:
            category = int(rng.integers(2))
            rate_hz = round(float(rng.uniform(*RATE_RANGES[name][category])), 3)
            rate = category if (offset - onset) * rate_hz >= MIN_REPEATS else NONE
        events.append(Event(cls, level, pitch, rate, rate_hz, onset, offset))
    events.sort(key=lambda e: (e.onset, e.cls))
    return ClipFacts(duration=duration, events=tuple(events))


# ---- assertions -------------------------------------------------------------------------------------
# An assertion is (kind, cls, value, cls2): ("has", c, -1, -1), ("level"|"pitch"|"rate"|"pos", c, v, -1),
# ("before", a, -1, b). The table below fixes one index per assertion, the same for every split.
Assertion = tuple[str, int, int, int]


def _all_assertions() -> tuple[Assertion, ...]:
    table: list[Assertion] = []
    for c, name in enumerate(CLASSES):
        table.append(("has", c, NONE, NONE))
        table += [("level", c, v, NONE) for v in range(len(LEVELS))]
        if name in PITCHED:
            table += [("pitch", c, v, NONE) for v in range(len(PITCHES))]
        if name in REPETITIVE:
            table += [("rate", c, v, NONE) for v in range(len(RATES))]
        table += [("pos", c, v, NONE) for v in range(len(POSITIONS))]
    table += [("before", a, NONE, b) for a in range(N_CLASSES) for b in range(N_CLASSES) if a != b]
    return tuple(table)


ASSERTIONS = _all_assertions()
ASSERTION_INDEX = {a: i for i, a in enumerate(ASSERTIONS)}


def assertion_name(a: Assertion) -> str:
    """Readable form, e.g. ``level:dog_bark=loud`` or ``before:dog_bark<bell``."""
    kind, c, v, c2 = a
    if kind == "has":
        return f"has:{CLASSES[c]}"
    if kind == "before":
        return f"before:{CLASSES[c]}<{CLASSES[c2]}"
    return f"{kind}:{CLASSES[c]}={VALUE_NAMES[kind][v]}"


def fact_arrays(clips: list[ClipFacts]) -> dict[str, np.ndarray]:
    """Per-(clip, class) arrays: present, level, pitch, rate, pos (NONE where absent), onset, offset."""
    shape = (len(clips), N_CLASSES)
    out = {k: np.full(shape, NONE, dtype=np.int8) for k in ("level", "pitch", "rate", "pos")}
    out["present"] = np.zeros(shape, dtype=bool)
    out["onset"] = np.full(shape, np.nan, dtype=np.float64)
    out["offset"] = np.full(shape, np.nan, dtype=np.float64)
    for i, clip in enumerate(clips):
        for e in clip.events:
            out["present"][i, e.cls] = True
            out["level"][i, e.cls] = e.level
            out["pitch"][i, e.cls] = e.pitch
            out["rate"][i, e.cls] = e.rate
            out["pos"][i, e.cls] = position(e.onset, e.offset, clip.duration)
            out["onset"][i, e.cls] = e.onset
            out["offset"][i, e.cls] = e.offset
    return out


def assertion_truth(clips: list[ClipFacts]) -> np.ndarray:
    """Bool (n_assertions, n_clips): whether each assertion of ASSERTIONS holds for each clip."""
    f = fact_arrays(clips)
    truth = np.zeros((len(ASSERTIONS), len(clips)), dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN comparisons (absent events) are False, as intended
        before = f["offset"][:, :, None] <= f["onset"][:, None, :]  # (clip, a, b)
    for i, (kind, c, v, c2) in enumerate(ASSERTIONS):
        if kind == "has":
            truth[i] = f["present"][:, c]
        elif kind == "before":
            truth[i] = before[:, c, c2]
        else:
            truth[i] = f[kind][:, c] == v
    return truth


def caption_holds(
    assertion_ids: np.ndarray, truth: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth from caption assertion ids (n_captions, k; -1 pads) and ``assertion_truth``.

    Returns ``holds`` (bool) and ``fraction`` (float32), both (n_captions, n_clips).
    """
    n_cap, n_clip = assertion_ids.shape[0], truth.shape[1]
    ext = np.vstack([truth, np.ones((1, n_clip), dtype=bool)])  # row -1: the pad, always true
    n_assert = (assertion_ids >= 0).sum(axis=1)
    if (n_assert == 0).any():
        raise ValueError(f"caption {int(np.argmin(n_assert))} makes no assertion")
    holds = np.empty((n_cap, n_clip), dtype=bool)
    fraction = np.empty((n_cap, n_clip), dtype=np.float32)
    for s in range(0, n_cap, chunk):
        ids = assertion_ids[s : s + chunk]
        count = np.zeros((ids.shape[0], n_clip), dtype=np.uint8)
        for k in range(ids.shape[1]):
            count += ext[ids[:, k]]
        count -= (ids < 0).sum(axis=1).astype(np.uint8)[:, None]  # pads counted as true
        holds[s : s + chunk] = count == n_assert[s : s + chunk, None]
        fraction[s : s + chunk] = count / n_assert[s : s + chunk, None].astype(np.float32)
    return holds, fraction
