"""The model's side of an index build: loading it (``load_build_model``), its window defaults
(``build_windows``), and embedding decoded files with their windows (``embed_with_windows``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.checkpoints.windows import build_windows, model_input_seconds  # noqa: F401  (re-exported)
from soundsift.spans import PATCH_RULE, WINDOWS_ALONE, window_embedding_tag, window_spans


def load_build_model(model: Any, model_path: str | Path | None, runtime: str = "torch",
                     quantize: str | None = None) -> tuple[Any, Any]:
    """(loaded model, what the manifest records to load it again: a path, a published name, or a list
    of those for an ensemble), for ``runtime`` (``checkpoints.runtime``)."""
    from soundsift.checkpoints.runtime import load_for_runtime, wants_onnx

    if wants_onnx(model, runtime):
        loaded = load_for_runtime(model if isinstance(model, (list, tuple)) else [model], runtime, quantize)
        ref = model[0] if isinstance(model, (list, tuple)) else model
        from soundsift.checkpoints.names import PUBLISHED_NAMES

        return loaded, (str(ref) if str(ref) in PUBLISHED_NAMES else str(Path(ref).resolve()))
    if quantize:
        load_for_runtime(model, runtime, quantize)  # refused in one line: --quantize needs --runtime onnx
    from soundsift.checkpoints import load_model
    from soundsift.checkpoints.ensemble import ModelEnsemble
    from soundsift.checkpoints.load import PUBLISHED

    if isinstance(model, (list, tuple)):  # several models: a system ensemble
        if len(model) == 1:
            return load_build_model(model[0], model_path)
        loaded = [load_build_model(m, None) for m in model]
        recorded = [r for _, r in loaded]
        return (ModelEnsemble([m for m, _ in loaded], names=[str(m) for m in model]),
                recorded if all(recorded) else None)

    if isinstance(model, (str, Path)) and str(model) in PUBLISHED:  # a published model: recorded by name
        return load_model(str(model)), str(model)
    if isinstance(model, (str, Path)):
        model_path = Path(model).resolve()
        model = load_model(model_path)
    if isinstance(model_path, (list, tuple)):  # a loaded ensemble, recorded as the list of its models
        return model, [str(m) for m in model_path]
    if not model.identity:
        raise ValueError("the model has no identity (sha256 of its file): load it with soundsift.load_model")
    if model_path is not None and str(model_path) in PUBLISHED:
        return model, str(model_path)
    return model, (str(Path(model_path).resolve()) if model_path else None)



Embedded = tuple[np.ndarray, np.ndarray, np.ndarray]  # file vector, (W, 2) spans in seconds, (W, D) vectors


def window_embedding(model: Any, rule: str = PATCH_RULE) -> str:
    """The tag an index records of how ``embed_with_windows`` makes ``model``'s window vectors by ``rule``
    (``spans.window_embedding_tag``): an index is updated only by builds that make them the same way."""
    return window_embedding_tag(bool(getattr(model, "pools_patches", False)), rule)


def embed_with_windows(model: Any, waves: list[np.ndarray], batch_size: int, window: float, hop: float,
                       progress: Callable[[int], None] | None = None, rule: str = PATCH_RULE) -> list[Embedded]:
    """Each wave's whole-file embedding, and the spans and embeddings of its windows (none for a file no
    longer than ``window`` seconds). A model that ``pools_patches`` runs once per file and pools each
    window from the file's patches by ``rule`` (``spans.patch_ranges``; ``"alone"``: no); any other
    embeds every window on its own as well. ``progress(n)`` counts whole files."""
    rate = int(model.sample_rate)
    spans = [window_spans(len(w), int(round(window * rate)), int(round(hop * rate))) for w in waves]
    if window_embedding(model, rule) != WINDOWS_ALONE:
        pooled = model.embed_patch_windows(waves, spans, batch_size, rule, progress=progress)
        return [(vec, np.round(sp / rate, 3), win) for (vec, win), sp in zip(pooled, spans)]
    pieces = [wave[a:b] for wave, sp in zip(waves, spans) for a, b in sp.tolist()]
    vectors = model.embed_waveforms(waves, batch_size, progress=progress)
    windowed = model.embed_waveforms(pieces, batch_size) if pieces else np.zeros((0, model.embed_dim), np.float32)
    out, at = [], 0
    for vec, sp in zip(vectors, spans):
        out.append((vec, np.round(sp / rate, 3), windowed[at: at + len(sp)]))
        at += len(sp)
    return out
