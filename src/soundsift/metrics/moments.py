"""Moment-retrieval metrics (DCASE 2026 task 6) as lighthouse's ``standalone_eval`` computes them.

A query has ground-truth windows ``(M, 2)`` (start, end in seconds) and predicted windows ``(K, 3)``
(start, end, score), in the order the prediction file lists them. The facts this module reproduces:

- Only the first ``max_predictions`` (10) windows *as listed* count; they are then ranked by score,
  ties keeping the listed order (a stable sort).
- Ground-truth windows whose length is not in ``(0, 1500]`` seconds are left out, and so is a query
  that keeps none (lighthouse's one "full" length range).
- R1@t: the *first listed* window (not the best scored) is compared with the ground-truth window of
  highest IoU (the first on ties), by intersection over the span covering both; hit when >= t.
- mAP@t: ActivityNet detection AP per query. Windows in score order each take the unclaimed
  ground-truth window of highest IoU >= t (a duplicate of a matched window is a false positive);
  precision is made monotone and summed over the recall steps (VOC 2011). Averaged over queries;
  "mAP" is the mean over t = 0.5, 0.55, ..., 0.95.
- Values are percent, rounded to two decimals (``rounded=False`` keeps every digit).

One deliberate difference: a query with no predicted window scores 0 (R1 miss, AP 0). Lighthouse
refuses such a file (an IndexError in R1; its AP alone would leave the query out of the mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
MAX_PREDICTIONS = 10
LENGTH_RANGE = (0.0, 1500.0)  # ground-truth window lengths kept: min < length <= max
R1_THRESHOLDS = (0.5, 0.7)
MAP_THRESHOLDS = (0.5, 0.75)


def temporal_iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """IoU of every window of ``a`` (N, 2+) with every window of ``b`` (M, 2+): (N, M); 0 where the
    union is empty."""
    a, b = np.asarray(a, float)[:, :2], np.asarray(b, float)[:, :2]
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union != 0)


def hull_iou(a: ArrayLike, b: ArrayLike) -> float:
    """Intersection of two windows over the span covering both (R1's IoU in lighthouse); 0 if empty."""
    (s1, e1), (s2, e2) = np.asarray(a, float)[:2], np.asarray(b, float)[:2]
    inter, hull = max(0.0, min(e1, e2) - max(s1, s2)), max(e1, e2) - min(s1, s2)
    return inter / hull if hull != 0 else 0.0


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 AP: precision made non-increasing, summed over the steps where recall changes."""
    p = np.concatenate([[0.0], precision, [0.0]])
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def detection_ap(gt: ArrayLike, pred: ArrayLike, thresholds: Sequence[float] = IOU_THRESHOLDS) -> np.ndarray:
    """AP of the predicted windows (K, 3) against the ground truth (M, 2) at each IoU threshold."""
    gt, pred = np.asarray(gt, float).reshape(-1, 2), np.asarray(pred, float).reshape(-1, 3)
    ap = np.zeros(len(thresholds))
    if len(pred) == 0 or len(gt) == 0:
        return ap
    pred = pred[np.argsort(-pred[:, 2], kind="stable")]
    iou = temporal_iou(pred, gt)
    order = [np.argsort(row)[::-1] for row in iou]  # best ground truth first, as lighthouse orders ties
    for t, threshold in enumerate(thresholds):
        claimed = np.zeros(len(gt), bool)
        tp = np.zeros(len(pred))
        for k, candidates in enumerate(order):
            for j in candidates:
                if iou[k, j] < threshold:
                    break
                if not claimed[j]:
                    claimed[j], tp[k] = True, 1.0
                    break
        hits = np.cumsum(tp)
        ap[t] = interpolated_ap(hits / np.arange(1, len(pred) + 1), hits / len(gt))
    return ap


def top1_iou(gt: ArrayLike, pred: ArrayLike) -> float:
    """R1's IoU: the first listed window against the ground-truth window it overlaps best; 0 if none."""
    gt, pred = np.asarray(gt, float).reshape(-1, 2), np.asarray(pred, float).reshape(-1, 3)
    if len(pred) == 0 or len(gt) == 0:
        return 0.0
    best = int(np.argmax(temporal_iou(pred[:1], gt)[0]))
    return hull_iou(pred[0], gt[best])


def _percent(value: float, rounded: bool) -> float:
    return float(f"{100 * value:.2f}") if rounded else float(100 * value)


def moment_retrieval_metrics(
    ground_truth: Sequence[ArrayLike], predictions: Sequence[ArrayLike | None],
    max_predictions: int | None = MAX_PREDICTIONS, rounded: bool = True,
) -> dict[str, object]:
    """R1@0.5, R1@0.7, mAP@0.5, mAP@0.75, mAP and the per-threshold tables, in percent.

    ``ground_truth[i]`` (M_i, 2) and ``predictions[i]`` (K_i, 3, or None for no prediction) belong to
    query i. Raises ValueError when the lists differ in length or no query keeps a ground-truth window.
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth queries but {len(predictions)} predictions")
    low, high = LENGTH_RANGE
    aps, ious, without = [], [], 0
    for gt, pred in zip(ground_truth, predictions):
        gt = np.asarray(gt, float).reshape(-1, 2)
        gt = gt[(gt[:, 1] - gt[:, 0] > low) & (gt[:, 1] - gt[:, 0] <= high)]
        if len(gt) == 0:
            continue
        pred = np.zeros((0, 3)) if pred is None else np.asarray(pred, float).reshape(-1, 3)
        without += len(pred) == 0
        aps.append(detection_ap(gt, pred[:max_predictions]))
        ious.append(top1_iou(gt, pred))
    if not aps:
        raise ValueError("no query has a ground-truth window of length in (0, 1500] s")
    ap_by_iou = np.mean(aps, axis=0)
    map_table = {str(t): _percent(v, rounded) for t, v in zip(IOU_THRESHOLDS, ap_by_iou)}
    r1_table = {str(t): _percent(float(np.mean(np.asarray(ious) >= t)), rounded) for t in IOU_THRESHOLDS}
    return {
        **{f"R1@{t}": r1_table[str(t)] for t in R1_THRESHOLDS},
        **{f"mAP@{t}": map_table[str(t)] for t in MAP_THRESHOLDS},
        "mAP": _percent(float(np.mean(ap_by_iou)), rounded),
        "mAP_by_iou": map_table,
        "R1_by_iou": r1_table,
        "n_queries": len(aps),
        "n_without_prediction": int(without),
    }
