"""Time spans of long recordings: the windows a long file is cut into, and the moments window scores
merge into. Shared by search (the index's moments) and training (the sliding-window baseline of
``evaluate --task moments``), so it sits below both. Pure numpy: no model, no index, no files.

A file longer than the window is embedded as overlapping windows (``window_spans``: starts every
``hop`` samples, the last window aligned to the end of the file, so every sample is covered); a file
no longer than the window stays one item. ``merge_moments`` merges a file's window scores into moments,
by one of two rules, chosen by the window length (short windows: the peak rule; ``PEAK_MAX_WINDOW``):

- the peak rule (``level=``; ``PEAK_LEVEL`` for short windows): every local maximum of the window
  scores above the file's median (or, when none is, the first best window), best first, grows into the
  run of consecutive windows around it that score at least ``floor + level * (peak - floor)``, where
  ``floor`` is the median window score of the file (its background); the moment is scored by its peak.
  The threshold follows each file's own score range, so a short event in a long file stays short.
- the ratio rule (``ratio=``; 0.9 for windows of ``PEAK_MAX_WINDOW`` or more): consecutive windows
  scoring at least ``best - (1 - ratio) * |best|`` form one moment scored by its best window.

Either way, moments overlapping a better one by a temporal IoU of ``NMS_IOU`` or more are dropped
(temporal non-maximum suppression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from soundsift.errors import ConfigError

MOMENT_RATIO = 0.9  # the ratio rule: windows within 10 % of the file's best window score join a moment
PEAK_LEVEL = 0.1  # the peak rule: a moment spans the windows above 10 % of the way from the median to its
# peak; chosen on the development half of benchmarks/real_moments.py and the synthetic validation split
PEAK_MAX_WINDOW = 4.0  # seconds: windows shorter than this merge by the peak rule, longer by the ratio rule
DEFAULT_WINDOW = 2.0  # seconds, for models without a fixed input length (the zero-shot model); chosen on
# the development half of benchmarks/real_moments.py (docs/moments.md, "Real recordings")
NMS_IOU = 0.5  # a moment overlapping a better one by this temporal IoU or more is dropped
#: Which of a file's patches pool into a window (``patch_ranges``): those lying wholly inside it, or those
#: whose centre lies inside it.
PATCH_RULES = ("inside", "centre")
#: How the windows of a model that pools patches are made by default (or ``"alone"``: each window
#: embedded on its own); chosen on the development half of ``benchmarks/real_moments.py`` (docs/moments.md).
PATCH_RULE = "inside"
#: The index manifest's tag of window vectors embedded each on its own (every model can).
WINDOWS_ALONE = "alone"


@dataclass(frozen=True)
class Moment:
    """A span of a file (seconds) and the best score of the windows it merges."""

    start: float
    end: float
    score: float

    def to_dict(self) -> dict[str, float]:
        return {"start": self.start, "end": self.end, "score": self.score}


def window_spans(n_samples: int, window: int, hop: int) -> np.ndarray:
    """(W, 2) int64 sample spans [start, end) of the windows of a file of ``n_samples``; empty when
    ``window`` is 0 or the file is no longer than one window. Starts 0, hop, 2 hop, ... below
    ``n_samples - window``, then one window ending at the last sample."""
    if window <= 0 or n_samples <= window:
        return np.zeros((0, 2), np.int64)
    if not 0 < hop <= window:
        raise ConfigError(f"hop {hop} samples must be above 0 and at most the window ({window} samples)")
    starts = list(range(0, n_samples - window, hop)) + [n_samples - window]
    return np.array([[s, s + window] for s in starts], np.int64)


def patch_ranges(spans: np.ndarray, n_patches: int, patch: int, hop: int, rule: str = "inside") -> np.ndarray:
    """(W, 2) int64 ranges [first, last + 1) of the patches of a file (patch k covers samples
    [k * hop, k * hop + patch); ``n_patches`` of them) that pool into each window of ``spans`` (W, 2
    samples [start, end)): by ``rule`` (``PATCH_RULES``), those wholly inside the window or those whose
    centre lies in it. A window that no patch fits gets the one patch whose centre is nearest its own
    (the earlier of two)."""
    if rule not in PATCH_RULES:
        raise ConfigError(f"unknown patch rule {rule!r}; use one of {', '.join(PATCH_RULES)}")
    spans = np.asarray(spans, np.int64).reshape(-1, 2)
    a, b = spans[:, 0], spans[:, 1]
    if rule == "inside":  # k * hop >= a and k * hop + patch <= b
        lo, hi = -(-a // hop), np.floor_divide(b - patch, hop) + 1
    else:  # 2 k hop + patch in [2a, 2b): the centre, in half samples
        lo, hi = -(-(2 * a - patch) // (2 * hop)), -(-(2 * b - patch) // (2 * hop))
    lo, hi = np.clip(lo, 0, n_patches), np.clip(hi, 0, n_patches)
    empty = hi <= lo
    # the k whose centre k hop + patch / 2 is nearest (a + b) / 2, the earlier one on a tie
    nearest = np.clip(-(-(a + b - patch - hop) // (2 * hop)), 0, max(n_patches - 1, 0))
    return np.stack([np.where(empty, nearest, lo), np.where(empty, nearest + 1, hi)], 1).astype(np.int64)


def window_embedding_tag(pools_patches: bool, rule: str) -> str:
    """What an index records of how its window vectors were made: ``"patches-RULE"`` (pooled from the
    file's own patches by ``patch_ranges``' rule) for a model that ``pools_patches``, else ``"alone"``."""
    return f"patches-{rule}" if pools_patches and rule != WINDOWS_ALONE else WINDOWS_ALONE


def range_rows(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The patch indices that ``ranges`` (W, 2: [first, last + 1)) cover, concatenated in order, and the
    window each belongs to."""
    ranges = np.asarray(ranges, np.int64).reshape(-1, 2)
    counts = ranges[:, 1] - ranges[:, 0]
    owner = np.repeat(np.arange(len(ranges)), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(ranges[:, 0], counts) + offsets, owner


def files_then_windows(vectors: np.ndarray, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows laid out as one vector per file, then every file's window vectors in file order (``sizes``:
    windows per file) -> per file (its vector, its (W, D) window vectors)."""
    out, at = [], len(sizes)
    for j, size in enumerate(sizes):
        out.append((vectors[j], vectors[at: at + size]))
        at += size
    return out


def default_windows(input_seconds: float | None) -> tuple[float, float]:
    """(window, hop) seconds: the model's fixed input length (or ``DEFAULT_WINDOW``), hop half of it."""
    window = input_seconds or DEFAULT_WINDOW
    return window, window / 2


def check_windows(window: float, hop: float | None, input_seconds: float | None) -> tuple[float, float]:
    """(window, hop) checked: ConfigError naming the value for a negative window, a window longer than
    the model accepts (``input_seconds``) or a hop outside (0, window]. Hop defaults to half the window."""
    if not math.isfinite(window) or window < 0:
        raise ConfigError(f"--window {window}: must be 0 (whole files only) or a number of seconds above 0")
    if input_seconds and window > input_seconds + 1e-9:
        raise ConfigError(f"--window {window}: longer than the model's input of {input_seconds:g} s")
    hop = window / 2 if hop is None else hop
    if window and not (math.isfinite(hop) and 0 < hop <= window):
        raise ConfigError(f"--hop {hop}: must be above 0 and at most the window ({window:g} s)")
    return float(window), float(hop if window else 0.0)


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time spans (0 when both are empty)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def merge_moments(spans: np.ndarray, scores: np.ndarray, ratio: float | None = None,
                  nms_iou: float = NMS_IOU, level: float | None = None, limit: int | None = None) -> list[Moment]:
    """Moments from window ``spans`` (W, 2 seconds, in time order) and their ``scores``, best first (see
    the module docstring): the ratio rule when ``ratio`` is given, the peak rule when ``level`` is;
    neither: the peak rule at ``PEAK_LEVEL`` for windows shorter than ``PEAK_MAX_WINDOW``, else the
    ratio rule at ``MOMENT_RATIO``. ``limit``: stop after that many moments (the best ones)."""
    if not len(scores):
        return []
    scores = np.asarray(scores, np.float64)
    if ratio is None and level is None:
        short = float(np.median(np.asarray(spans, float)[:, 1] - np.asarray(spans, float)[:, 0])) < PEAK_MAX_WINDOW
        ratio, level = (None, PEAK_LEVEL) if short else (MOMENT_RATIO, None)
    if ratio is not None:
        runs = _ratio_runs(spans, scores, ratio)
    else:
        runs = _peak_runs(spans, scores, float(level))
    kept: list[Moment] = []
    for m in runs:
        if all(temporal_iou((m.start, m.end), (o.start, o.end)) < nms_iou for o in kept):
            kept.append(m)
            if limit is not None and len(kept) >= limit:
                break
    return kept


def _ratio_runs(spans: np.ndarray, scores: np.ndarray, ratio: float) -> list[Moment]:
    best = float(np.max(scores))
    threshold = best - (1.0 - ratio) * abs(best)
    runs: list[Moment] = []
    first = None
    for i, s in enumerate([*scores.tolist(), -math.inf]):
        if s >= threshold and first is None:
            first = i
        elif s < threshold and first is not None:
            runs.append(Moment(float(spans[first][0]), float(spans[i - 1][1]),
                               round(float(np.max(scores[first:i])), 6)))
            first = None
    return sorted(runs, key=lambda m: (-m.score, m.start))


def _peak_runs(spans: np.ndarray, scores: np.ndarray, level: float):
    """Each local maximum's run, best peak first (ties: the earlier), lazily."""
    if not 0.0 <= level <= 1.0:
        raise ConfigError(f"moment level {level}: must be between 0 and 1")
    floor = float(np.median(scores))
    padded = np.concatenate([[-np.inf], scores, [-np.inf]])
    peaks = np.flatnonzero((scores >= padded[:-2]) & (scores >= padded[2:]) & (scores > floor))
    if not len(peaks):  # no window above the median (all equal, say): the best one alone
        peaks = np.array([int(np.argmax(scores))])
    for i in peaks[np.argsort(-scores[peaks], kind="stable")].tolist():
        peak = float(scores[i])
        threshold = min(peak, floor + level * (peak - floor))
        lo = hi = i
        while lo > 0 and scores[lo - 1] >= threshold:
            lo -= 1
        while hi < len(scores) - 1 and scores[hi + 1] >= threshold:
            hi += 1
        yield Moment(float(spans[lo][0]), float(spans[hi][1]), round(peak, 6))
