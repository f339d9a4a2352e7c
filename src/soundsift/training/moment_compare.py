"""Two moment systems on the same queries: each one's metrics and the paired bootstrap interval (over
queries, ``metrics.intervals.paired_bootstrap_ci``) of their difference. Used by ``benchmarks/moments.py``,
``benchmarks/moment_soft_targets.py`` and ``reproduce moments``' results table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.metrics.intervals import paired_bootstrap_ci
from soundsift.metrics.moments import moment_retrieval_metrics

KEYS = ("R1@0.5", "R1@0.7", "mAP@0.5", "mAP")
Windows = Sequence[Sequence[float]]


def per_query(truth: Sequence[Windows], predicted: Sequence[Windows | None]) -> dict[str, np.ndarray]:
    """Each query's R1@0.5, R1@0.7, mAP@0.5 and mAP (percent, unrounded): their means are the metrics."""
    rows = [moment_retrieval_metrics([gt], [p], rounded=False) for gt, p in zip(truth, predicted)]
    return {k: np.array([float(r[k]) for r in rows]) for k in KEYS}


def compare(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, Any]:
    """Per metric: A's and B's mean, B - A and its 95 % paired bootstrap interval (10,000 resamples)."""
    out: dict[str, Any] = {}
    for k in KEYS:
        mean, low, high = paired_bootstrap_ci(b[k], a[k], seed=seed)
        out[k] = {"A": round(float(np.mean(a[k])), 2), "B": round(float(np.mean(b[k])), 2),
                  "B-A": round(mean, 2), "95% CI": [round(low, 2), round(high, 2)]}
    return out


def compare_files(annotations: str | Path, a: str | Path, b: str | Path) -> dict[str, Any]:
    """``compare`` of two prediction files on the annotations' queries (a missing query scores 0)."""
    from soundsift.data.readers.moments import read_moment_annotations, read_moment_predictions

    queries = [q for rec in read_moment_annotations(annotations) for q in rec.queries]
    truth = [q.windows for q in queries]
    values = [per_query(truth, [p.get(q.qid) for q in queries]) for p in map(read_moment_predictions, (a, b))]
    return {"A": str(a), "B": str(b), "n_queries": len(queries), **compare(*values)}
