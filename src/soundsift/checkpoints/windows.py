"""A loaded model's windows for long files: its longest input in one piece and the (window, hop) a
build or the sliding-window moment baseline uses by default. Shared by search and training."""

from __future__ import annotations

from typing import Any

import numpy as np

from soundsift.spans import PATCH_RULE, check_windows, default_windows


def model_input_seconds(model: Any) -> float | None:
    """The longest input the model's audio encoder takes in one piece (PaSST, ATST: 10-s segments), or
    None when it has no fixed input (the zero-shot model); an ensemble: its shortest member's."""
    members = getattr(model, "members", None)
    if members:
        found = [s for s in (model_input_seconds(m) for m in members) if s]
        return min(found) if found else None
    segment = getattr(getattr(model, "audio", None), "segment", None)
    return int(segment) / float(model.sample_rate) if segment else None


def build_windows(model: Any, window: float | None, hop: float | None) -> tuple[float, float]:
    """(window, hop) seconds for a build: given, or the model's defaults (``default_windows``); checked
    against the model's input length. (0, 0): whole files only."""
    seconds = model_input_seconds(model)
    default_window, default_hop = default_windows(seconds)
    if window is None:
        return check_windows(default_window, default_hop if hop is None else hop, seconds)
    return check_windows(window, hop, seconds)


def window_vectors(model: Any, wave: np.ndarray, spans: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(W, D) unit vectors of ``wave``'s windows ``spans`` ((W, 2) samples) made as an index build makes
    them (``search.embedding.embed_with_windows``): pooled from the file's own patches (``PATCH_RULE``) for a
    model that ``pools_patches``, else each window embedded on its own."""
    if getattr(model, "pools_patches", False):
        return np.asarray(model.embed_patch_windows([wave], [spans], batch_size, PATCH_RULE)[0][1], np.float32)
    return np.asarray(model.embed_waveforms([wave[a:b] for a, b in spans.tolist()], batch_size), np.float32)
