"""The window embeddings of a moment benchmark's split, embedded once and cached to a file, so that the
learned moment model (``training/moment_model.py``) trains and evaluates without re-embedding.

A split's features: for each recording its window spans (seconds) and their embeddings (one row per
window of ``window`` seconds every ``hop`` seconds, as ``spans.window_spans`` cuts them), and for each
query its text embedding and the recording it belongs to. The cache is one ``.npz`` file named by the
model, the window, the hop and the split, under ``{data_root}/moment_features/``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.atomic import atomic_write
from soundsift.audio import load_audio
from soundsift.checkpoints.windows import window_vectors
from soundsift.data.readers.moment_layout import MomentData
from soundsift.data.readers.moments import MomentRecording
from soundsift.spans import window_spans

CACHE_VERSION = 2  # 2: the zero-shot model's windows pooled from the recording's patches


@dataclass(frozen=True)
class SplitFeatures:
    """Window embeddings of a split: ``windows[r]`` (W_r, D) and ``spans[r]`` (W_r, 2 seconds) of recording
    r, ``queries`` (Q, D) text embeddings, ``query_recording`` (Q,) the recording index of each query."""

    windows: tuple[np.ndarray, ...]
    spans: tuple[np.ndarray, ...]
    queries: np.ndarray
    query_recording: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.queries.shape[1])


def embed_split(model: Any, recordings: Sequence[MomentRecording], audio: Callable[[str], Path], window: float,
                hop: float, batch_size: int = 32) -> SplitFeatures:
    """Embed every window of every recording (``audio(vid)``: its file) and every query with ``model``."""
    rate = int(model.sample_rate)
    windows, spans, owner, texts = [], [], [], []
    for r, rec in enumerate(recordings):
        wave = load_audio(audio(rec.vid), rate)
        cut = window_spans(len(wave), int(round(window * rate)), int(round(hop * rate)))
        if not len(cut):  # no longer than one window: the whole recording
            cut = np.array([[0, len(wave)]], np.int64)
        windows.append(window_vectors(model, wave, cut, batch_size))
        spans.append(np.round(cut / rate, 3))
        for q in rec.queries:
            owner.append(r)
            texts.append(q.query)
    queries = np.asarray(model.embed_texts(texts), np.float32) if texts else np.zeros((0, windows[0].shape[1]))
    return SplitFeatures(tuple(windows), tuple(spans), queries, np.asarray(owner, np.int64))


def cache_path(data_root: str | Path, model_name: str, window: float, hop: float, split: str) -> Path:
    """The cache file of (model, window, hop, split): a model file is named by its path, size and mtime."""
    key = str(model_name)
    path = Path(model_name)
    if path.exists():
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{key}|{window}|{hop}".encode()).hexdigest()[:16]
    return Path(data_root) / "moment_features" / f"{split}_{digest}.npz"


def save_features(path: Path, features: SplitFeatures) -> Path:
    """Write ``features`` to ``path`` (``.npz``), atomically."""
    arrays: dict[str, np.ndarray] = {"queries": features.queries, "query_recording": features.query_recording,
                                     "n_recordings": np.array(len(features.windows))}
    for r, (w, s) in enumerate(zip(features.windows, features.spans)):
        arrays[f"windows_{r}"] = w
        arrays[f"spans_{r}"] = s

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path


def load_features(path: Path) -> SplitFeatures:
    """The features ``save_features`` wrote."""
    with np.load(path) as data:
        n = int(data["n_recordings"])
        return SplitFeatures(tuple(data[f"windows_{r}"] for r in range(n)), tuple(data[f"spans_{r}"] for r in range(n)),
                             data["queries"], data["query_recording"])


def split_features(load: Callable[[], Any], model_name: str, recordings: Sequence[MomentRecording], data: MomentData,
                   window: float, hop: float, batch_size: int = 32) -> SplitFeatures:
    """The split's features from the cache, or embedded with the model ``load()`` returns (called only when
    the cache misses) and cached."""
    path = cache_path(data.root, model_name, window, hop, data.split)
    if path.is_file():
        cached = load_features(path)
        if len(cached.windows) == len(recordings) and len(cached.queries) == sum(len(r.queries) for r in recordings):
            return cached
    features = embed_split(load(), recordings, data.audio, window, hop, batch_size)
    save_features(path, features)
    return features
