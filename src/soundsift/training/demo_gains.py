"""Paired gains of the demo's rows, per seed and pooled over seeds.

Every gain is model B's test metric minus model A's on the same queries (each caption of the test
split), in percentage points, with a 95% percentile interval from a paired bootstrap over the test clips
(all captions of a clip resampled together; 10000 resamples, seed 0). Pooled over seeds, the queries are
paired within each seed (seed s's run B against seed s's run A) and a resampling unit is a (seed, clip);
the pooled difference is the mean over all those queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from soundsift.training.compare import FILE, N_RESAMPLES, PerQuery, paired, read_per_query

METRICS = ("mAP@10", "mAP@16")
NOTE = ("test metric of the row minus that of the reference run on the same queries, percentage points; "
        "the interval is a 95% paired bootstrap over the test clips, each with all its captions "
        f"({N_RESAMPLES} resamples, seed 0); pooled over seeds, queries are paired within their seed and a "
        "resampled unit is a (seed, clip).")


def pooled_gain(refs: Sequence[PerQuery], runs: Sequence[PerQuery], metric: str) -> list[float]:
    """[difference, low, high] in percentage points of ``runs`` over ``refs`` (seed i: runs[i] vs refs[i])."""
    from soundsift.metrics import paired_bootstrap_ci

    base, new, groups = [], [], []
    for s, (ref, run) in enumerate(zip(refs, runs, strict=True)):
        a, b = paired(ref, run, metric)
        keep = np.isfinite(a) & np.isfinite(b)  # AP@16: captions that are no query of the relevance file
        base.append(a[keep])
        new.append(b[keep])
        groups += [f"{s}\0{c}" for c, k in zip(ref.clips, keep) if k]
    diff, low, high = paired_bootstrap_ci(np.concatenate(new), np.concatenate(base), N_RESAMPLES, 0.05, 0,
                                          groups=groups)
    return [round(100 * v, 2) for v in (diff, low, high)]


def run_gains(refs: Sequence[Path], runs: Sequence[Path]) -> dict[str, list[float]] | None:
    """Both metrics' pooled gains of run folders ``runs`` over ``refs``; None when one saved no queries."""
    files = [Path(r) / FILE for r in (*refs, *runs)]
    if not all(f.is_file() for f in files):
        return None
    ref_q = [read_per_query(Path(r) / FILE) for r in refs]
    run_q = [read_per_query(Path(r) / FILE) for r in runs]
    has16 = all(q.ap16 is not None for q in (*ref_q, *run_q))
    return {m: pooled_gain(ref_q, run_q, m) for m in METRICS if m == "mAP@10" or has16}
