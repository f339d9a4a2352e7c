"""Estimated correspondences as soft targets for the learned moment model (issue 17 item 5).

The paper's stage 2 (DESIGN.md section 1) applied to moments. For each training query, M soundsift models
(the teachers; M = 1 with the moment model's own feature model is self-distillation) give cosine
similarities between the query and every window of its recording; their mean is ``C_hat``
(``correspondences.ensemble_similarity``, the recording's windows as the audio rows and its queries as
the caption columns), and the column softmax at ``tau`` (the paper's ``p_hat_a``: which window, given the
query) is the query's soft target over the windows. ``losses.window_distillation_loss`` is the
cross-entropy between it and the moment model's softmax over its per-step relevance logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from soundsift.correspondences import ensemble_similarity
from soundsift.errors import AlignmentError
from soundsift.training.moment_features import SplitFeatures


def check_aligned(teachers: Sequence[SplitFeatures], names: Sequence[str] | None = None) -> None:
    """The teachers embed the same recordings' same windows and the same queries (else AlignmentError)."""
    first = teachers[0]
    for m, t in enumerate(teachers[1:], 1):
        name = names[m] if names else f"teacher {m}"
        if len(t.windows) != len(first.windows) or not np.array_equal(t.query_recording, first.query_recording):
            raise AlignmentError(f"{name}: its features hold other recordings or queries than teacher 0's")
        for r, (a, b) in enumerate(zip(first.spans, t.spans)):
            if a.shape != b.shape or not np.allclose(a, b, atol=1e-3):
                raise AlignmentError(f"{name}: recording {r}'s windows differ from teacher 0's "
                                     f"({len(b)} against {len(a)}); use the same --window and --hop")


def window_soft_targets(teachers: Sequence[SplitFeatures], tau: float) -> Tensor:
    """(Q, T) float32: query i's target distribution over its recording's windows (zero past them; T is the
    longest recording's window count): ``softmax over windows of mean_m cos(window_m, query_m) / tau``."""
    if not teachers:
        raise ValueError("window_soft_targets needs at least one teacher")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    check_aligned(teachers)
    first = teachers[0]
    owner = np.asarray(first.query_recording)
    out = torch.zeros(len(owner), max(len(w) for w in first.windows))
    for r in range(len(first.windows)):
        idx = np.flatnonzero(owner == r)
        if not len(idx):
            continue
        c_hat = ensemble_similarity([torch.from_numpy(np.asarray(t.windows[r], np.float32)) for t in teachers],
                                    [torch.from_numpy(np.asarray(t.queries[idx], np.float32)) for t in teachers])
        out[torch.from_numpy(idx), : c_hat.shape[0]] = torch.softmax(c_hat / tau, dim=0).T
    return out
