"""Confidence intervals of per-query values: the jackknife interval of a mean (the official DCASE
evaluation's) and the paired (cluster) bootstrap interval of a difference between two systems."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from torch import Tensor


# ------------------------------------------------------------------------------ confidence intervals
def jackknife_ci(
    per_query_values: Sequence[float] | Tensor, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Mean and leave-one-out jackknife ``1 - alpha`` interval (normal quantile) of per-query values.

    ``SE^2 = (n-1)/n * sum_i (mean_{-i} - mean(mean_{-*}))^2``; for a mean this equals
    ``std(ddof=1) / sqrt(n)``. Returns ``(mean, low, high)``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = per_query_values
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"jackknife needs at least 2 values, got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError("per_query_values contains NaN or inf")
    n = x.size
    leave_one_out = (x.sum() - x) / (n - 1)
    se = math.sqrt((n - 1) / n * float(((leave_one_out - leave_one_out.mean()) ** 2).sum()))
    z = NormalDist().inv_cdf(1 - alpha / 2)
    mean = float(x.mean())
    return mean, mean - z * se, mean + z * se


# ------------------------------------------------------------------------------ paired differences
def paired_bootstrap_ci(
    values_a: Sequence[float] | Tensor,
    values_b: Sequence[float] | Tensor,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> tuple[float, float, float]:
    """Mean paired difference ``mean(a - b)`` of two systems' per-query values on the same queries
    (entry i of both is query i), with a percentile bootstrap ``1 - alpha`` interval.

    Resample r draws n query indices with replacement, ``numpy.random.default_rng(seed)``'s r-th
    ``integers(0, n, size=n)``, and takes the mean difference over them; the interval holds the
    ``alpha/2`` and ``1 - alpha/2`` quantiles of the ``n_resamples`` means (linear interpolation).
    Resampling whole queries keeps how hard each query is out of the interval. The same seed gives
    the same interval. Returns ``(mean, low, high)``.

    ``groups`` (one label per query, e.g. the clip a caption describes): a cluster bootstrap. Each
    resample draws G of the G groups with replacement, ``integers(0, G, size=G)``, and its mean is the
    sum of the drawn groups' differences over the number of queries they hold. Queries of one group
    (the five captions of a ClothoV2 clip) are not independent; resampling them together gives the
    honest, wider interval.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    a, b = (
        np.asarray(v.detach().cpu().double().numpy() if isinstance(v, Tensor) else v, dtype=np.float64).ravel()
        for v in (values_a, values_b)
    )
    if a.shape != b.shape:
        raise ValueError(f"paired values need one entry per query in both, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"a bootstrap needs at least 2 queries, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired values contain NaN or inf")
    diff, n = a - b, a.size
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_resamples), dtype=np.float64)
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"groups needs one label per query ({n}), got {len(groups)}")
        _, label = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        sums, counts = np.bincount(label, weights=diff), np.bincount(label).astype(np.float64)
        g = sums.size
        per_block = max(1, (1 << 22) // g)
        for start in range(0, means.size, per_block):
            stop = min(means.size, start + per_block)
            pick = rng.integers(0, g, size=(stop - start, g))
            means[start:stop] = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
        low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
        return float(diff.mean()), float(low), float(high)
    per_block = max(1, (1 << 22) // n)  # about 32 MB of indices at a time
    for start in range(0, means.size, per_block):
        stop = min(means.size, start + per_block)
        means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(low), float(high)
