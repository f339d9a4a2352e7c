"""Moment baselines for ``evaluate --task moments``: a sliding window over any soundsift model, and random
windows. Both write predictions in the task's format (``pred_relevant_windows``: up to 10 [start, end,
score], best first).

Sliding window: each recording is cut into windows (``spans.window_spans``: the model's default window
and hop, as the index builds them), each window embedded as the index embeds it
(``checkpoints.windows.window_vectors``: pooled from the recording's own patches for the zero-shot
model), and scored against each query's text embedding
(cosine). The windows' scores merge into moments as the search merges them (``spans.merge_moments``:
windows within 10 % of the best, temporal NMS); the remaining windows follow in score order, each kept
unless it overlaps a kept one by ``NMS_IOU`` or more, up to ``MAX_PREDICTIONS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.atomic import atomic_write
from soundsift.audio import load_audio
from soundsift.checkpoints.windows import window_vectors
from soundsift.data.readers.moments import MomentRecording
from soundsift.metrics.moments import MAX_PREDICTIONS
from soundsift.spans import NMS_IOU, merge_moments, temporal_iou, window_spans

Prediction = dict[str, Any]


def rank_windows(spans: np.ndarray, scores: np.ndarray, k: int = MAX_PREDICTIONS,
                 nms_iou: float = NMS_IOU) -> list[list[float]]:
    """Up to ``k`` [start, end, score] from window ``spans`` (W, 2 seconds) and their ``scores``: the merged
    moments first, then single windows by score, each dropped when it overlaps a kept one by ``nms_iou``."""
    kept = [(m.start, m.end, m.score) for m in merge_moments(spans, scores, nms_iou=nms_iou)]
    for i in np.argsort(-np.asarray(scores), kind="stable").tolist():
        if len(kept) >= k:
            break
        span = (float(spans[i][0]), float(spans[i][1]))
        if all(temporal_iou(span, (a, b)) < nms_iou for a, b, _ in kept):
            kept.append((*span, round(float(scores[i]), 6)))
    return [[round(a, 3), round(b, 3), s] for a, b, s in kept[:k]]


def sliding_window_predictions(model: Any, recordings: Sequence[MomentRecording], audio: Callable[[str], Path],
                               window: float, hop: float, batch_size: int = 32) -> list[Prediction]:
    """One prediction per query of ``recordings`` (``audio(vid)``: its file), in annotation order."""
    rate = int(model.sample_rate)
    out: list[Prediction] = []
    for rec in recordings:
        wave = load_audio(audio(rec.vid), rate)
        spans = window_spans(len(wave), int(round(window * rate)), int(round(hop * rate)))
        if not len(spans):  # no longer than one window: the whole recording
            spans = np.array([[0, len(wave)]], np.int64)
        vectors = window_vectors(model, wave, spans, batch_size)
        queries = model.embed_texts([q.query for q in rec.queries])
        scores = queries @ vectors.T  # (Q, W) cosine: both unit vectors
        seconds = np.round(spans / rate, 3)
        for q, row in zip(rec.queries, scores):
            out.append({"qid": q.qid, "query": q.query, "vid": rec.vid,
                        "pred_relevant_windows": rank_windows(seconds, row)})
    return out


def random_predictions(recordings: Sequence[MomentRecording], window: float, seed: int = 0,
                       k: int = MAX_PREDICTIONS) -> list[Prediction]:
    """``k`` windows of ``window`` seconds (the whole recording when shorter) at uniformly random starts
    per query, with decreasing scores: the chance level of the metrics."""
    rng = np.random.default_rng(seed)
    out: list[Prediction] = []
    for rec in recordings:
        length = min(window, rec.duration)
        for q in rec.queries:
            starts = np.sort(rng.uniform(0.0, rec.duration - length, size=k)) if length < rec.duration else np.zeros(k)
            starts = rng.permutation(starts)
            windows = [[round(float(s), 3), round(float(s) + length, 3), round(1.0 - i / k, 6)]
                       for i, s in enumerate(starts)]
            out.append({"qid": q.qid, "query": q.query, "vid": rec.vid, "pred_relevant_windows": windows})
    return out


def write_predictions(path: str | Path, predictions: Sequence[Prediction]) -> Path:
    """The predictions as JSON lines (the task's submission format), written atomically."""
    path = Path(path)
    data = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions).encode("utf-8")

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path
