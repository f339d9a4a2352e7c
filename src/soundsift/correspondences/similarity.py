"""``C_hat = mean_m C^m``: the (weighted) mean cosine similarity of M teachers' embeddings (tensors only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from soundsift.errors import ConfigError


def ensemble_similarity(
    audio_embs: Sequence[Tensor], caption_embs: Sequence[Tensor], weights: Sequence[float] | None = None
) -> Tensor:
    """``C_hat = 1/M sum_m normalise(audio_m) @ normalise(caption_m).T``, float32 ``(n_audio, n_caption)``.

    Teachers may have different embedding sizes; each pair ``(audio_m, caption_m)`` shares one. With
    ``weights`` (one per teacher, > 0) the mean is weighted: ``sum_m w_m C^m / sum_m w_m``.
    """
    if len(audio_embs) != len(caption_embs) or len(audio_embs) == 0:
        raise ValueError(
            f"need one caption matrix per audio matrix and at least one teacher, got {len(audio_embs)} "
            f"audio and {len(caption_embs)} caption matrices"
        )
    if weights is not None:
        weights = _checked_weights(weights, len(audio_embs))
    shape = (audio_embs[0].shape[0], caption_embs[0].shape[0])
    total: Tensor | None = None
    for m, (a, c) in enumerate(zip(audio_embs, caption_embs)):
        if a.dim() != 2 or c.dim() != 2 or a.shape[1] != c.shape[1]:
            raise ValueError(
                f"teacher {m}: audio {tuple(a.shape)} and captions {tuple(c.shape)} must be (n, D)"
            )
        if (a.shape[0], c.shape[0]) != shape:
            raise ValueError(
                f"teacher {m} gives a {(a.shape[0], c.shape[0])} matrix, teacher 0 gives {shape}"
            )
        dtype = torch.promote_types(a.dtype, torch.float32)
        sim = F.normalize(a.to(dtype), dim=1) @ F.normalize(c.to(device=a.device, dtype=dtype), dim=1).T
        if weights is not None:
            sim = sim * weights[m]
        total = sim if total is None else total + sim.to(total.device)
    assert total is not None
    return total / (len(audio_embs) if weights is None else sum(weights))


def _checked_weights(weights: Sequence[float], n: int) -> list[float]:
    values = [float(w) for w in weights]
    if len(values) != n or not all(math.isfinite(w) and w > 0 for w in values):
        raise ConfigError(f"ensemble weights must be {n} finite numbers > 0 (one per teacher), got {values}")
    return values
