"""What runs beside an exported audio graph, in numpy: cutting clips into the pieces its core graph
embeds, and pooling the pieces' outputs per clip, exactly as the torch towers do
(``encoders.layers.split_snippets`` / ``average_by_owner``, YAMNet's patching and pooling)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def snippet_counts(length: int, window: int, min_remainder: int = 0) -> int:
    """Snippets of a ``length``-sample clip: ``ceil(length / window)`` (at least one), minus a trailing
    one holding fewer than ``min_remainder`` samples."""
    count = max(1, math.ceil(length / window))
    if min_remainder > 0 and count > 1 and length - (count - 1) * window < min_remainder:
        count -= 1
    return count


def patch_count(length: int, window: int, hop: int) -> int:
    """Patches of a clip zero-padded to at least one ``window`` and a whole number of ``hop`` after it."""
    return 1 + math.ceil(max(0, length - window) / hop)


def resample(waves: Sequence[np.ndarray], rate: int, to: int) -> list[np.ndarray]:
    """Whole clips resampled with soxr, as the transformers towers resample their input (an empty clip
    stays empty: it is cut into one piece of zeros either way)."""
    import soxr

    return [soxr.resample(np.asarray(w, np.float32), rate, to).astype(np.float32) if len(w) else
            np.zeros(0, np.float32) for w in waves]


def split_pieces(waves: Sequence[np.ndarray], split: str, window: int, hop: int = 0,
                 min_remainder: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pieces (N, window) float32, owner (N,) clip index, valid (N,) real samples per piece)``."""
    pieces, owner, valid = [], [], []
    for i, wave in enumerate(waves):
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        n = len(wave)
        if split == "snippets":
            starts = [j * window for j in range(snippet_counts(n, window, min_remainder))]
        elif split == "patches":
            starts = [j * hop for j in range(patch_count(n, window, hop))]
        else:
            raise ValueError(f"unknown split {split!r}")
        end = starts[-1] + window
        padded = np.zeros(max(end, n), np.float32)
        padded[:n] = wave
        pieces.extend(padded[s:s + window] for s in starts)
        owner.extend([i] * len(starts))
        valid.extend(int(np.clip(n - s, 0, window)) for s in starts)
    return (np.stack(pieces) if pieces else np.zeros((0, window), np.float32),
            np.asarray(owner, dtype=np.int64), np.asarray(valid, dtype=np.int64))


def pool_pieces(values: np.ndarray, owner: np.ndarray, n: int, pool: str = "mean", k: int = 1,
                weights: np.ndarray | None = None) -> np.ndarray:
    """Per-clip pooling of piece rows (``owner`` sorted): ``mean`` (weighted by ``weights``), ``max``,
    or ``topk`` (per feature, the mean of the clip's ``k`` largest values, fewer when it has fewer)."""
    out = np.zeros((n, values.shape[1]), dtype=np.float32)
    bounds = np.searchsorted(owner, np.arange(n + 1))
    for i in range(n):
        rows = values[bounds[i]:bounds[i + 1]].astype(np.float64)
        if pool == "max":
            out[i] = rows.max(0)
        elif pool == "topk":
            top = np.sort(rows, axis=0)[::-1][: min(k, len(rows))]
            out[i] = top.mean(0)
        elif weights is None:
            out[i] = rows.mean(0)
        else:
            w = weights[bounds[i]:bounds[i + 1]].astype(np.float64)
            out[i] = (rows * w[:, None]).sum(0) / max(w.sum(), np.finfo(np.float32).tiny)
    return out


def own_length_pieces(waves: Sequence[np.ndarray], window: int = 0, min_remainder: int = 0,
                      min_piece: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Pieces for a core graph with a dynamic time axis (MN): a clip shorter than ``window`` samples (every
    clip when ``window`` is 0) is one piece of its own length, a longer one is cut into snippets as
    ``split_pieces`` does; a piece shorter than ``min_piece`` is zero-padded to it. Returns ``(pieces``, a
    list of float32 arrays, ``owner (N,), valid (N,)`` real samples per piece)."""
    pieces: list[np.ndarray] = []
    owner, valid = [], []
    for i, wave in enumerate(waves):
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if window and len(wave) >= window:
            cut, _, counts = split_pieces([wave], "snippets", window, min_remainder=min_remainder)
            pieces.extend(cut)
            valid.extend(counts.tolist())
        else:
            pieces.append(np.pad(wave, (0, max(0, min_piece - len(wave)))))
            valid.append(len(wave))
        owner.extend([i] * (len(pieces) - len(owner)))
    return pieces, np.asarray(owner, dtype=np.int64), np.asarray(valid, dtype=np.int64)
