"""The math of the correspondence estimators: tensors in, tensors out (no models, no files).

Every estimator (``soundsift.training.estimators``) ends as one pair of embedding matrices whose
cosine similarity *is* its ``C_hat``, so it is stored as an ordinary teacher file and stage 2 reads it
like any teacher. Two constructions make that exact:

- **a weighted mix** of M teachers, ``C = sum_m w_m C^m`` with ``sum_m w_m = 1``, ``w_m > 0``: concatenate
  ``sqrt(w_m) * a^m_i`` (audio) and ``sqrt(w_m) * c^m_j`` (captions) over the teachers. Both rows keep
  unit norm and their dot product is ``sum_m w_m cos(a^m_i, c^m_j)`` (:func:`combine_embeddings`).
- **caption similarity** (Xie et al. 2024): ``C[i, j] = mean over clip i's captions c of cos(t_c, t_j)``
  for a text model's caption embeddings ``t``. That is ``m_i . u_j`` with ``m_i`` the mean of clip i's
  unit caption embeddings (norm <= 1) and ``u_j`` caption j's unit embedding; appending
  ``sqrt(1 - |m_i|^2)`` to ``m_i`` and 0 to ``u_j`` makes both rows unit vectors without changing the dot
  product (:func:`caption_mean_embeddings`). The mean of cosines (not the cosine to the mean, which
  would divide row i by ``|m_i|``) is kept: a clip whose captions disagree gets less confident targets.

:func:`column_softmax_mass` measures an estimate against ground truth the way stage 2 uses it: the
probability that the target distribution over a batch's clips (column softmax at ``tau``) gives to
clips the caption truly describes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "caption_mean_embeddings",
    "caption_similarity",
    "column_softmax_mass",
    "combine_embeddings",
    "normalised_weights",
]


def normalised_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """``weights`` scaled to sum to 1 (equal weights when None); each must be a finite number > 0."""
    if weights is None:
        return [1.0 / n] * n
    values = [float(w) for w in weights]
    if len(values) != n:
        raise ValueError(f"{len(values)} weights for {n} teachers")
    if not all(math.isfinite(w) and w > 0 for w in values):
        raise ValueError(f"weights must be finite numbers > 0, got {values}")
    total = sum(values)
    return [w / total for w in values]


def combine_embeddings(
    audio: Sequence[Tensor], captions: Sequence[Tensor], weights: Sequence[float] | None = None
) -> tuple[Tensor, Tensor]:
    """``(audio, captions)`` float32 with ``cos(audio_i, captions_j) = sum_m w_m cos(audio_m,i, captions_m,j)``
    (weights normalised to sum 1; equal when None): the weighted mean of M teachers as one teacher."""
    if len(audio) != len(captions) or not audio:
        raise ValueError(f"need one caption matrix per audio matrix, got {len(audio)} and {len(captions)}")
    w = normalised_weights(weights, len(audio))
    parts_a, parts_c = [], []
    for m, (a, c) in enumerate(zip(audio, captions)):
        if a.dim() != 2 or c.dim() != 2 or a.shape[1] != c.shape[1]:
            raise ValueError(f"teacher {m}: audio {tuple(a.shape)} and captions {tuple(c.shape)} must be (n, D)")
        if (a.shape[0], c.shape[0]) != (audio[0].shape[0], captions[0].shape[0]):
            raise ValueError(f"teacher {m} covers {a.shape[0]} clips and {c.shape[0]} captions, teacher 0 "
                             f"{audio[0].shape[0]} and {captions[0].shape[0]}")
        scale = math.sqrt(w[m])
        parts_a.append(F.normalize(a.double(), dim=1) * scale)
        parts_c.append(F.normalize(c.double(), dim=1) * scale)
    return torch.cat(parts_a, 1).float(), torch.cat(parts_c, 1).float()


def _caption_means(captions: Tensor, caption_clip: Tensor, n_clips: int) -> tuple[Tensor, Tensor]:
    """(mean of each clip's unit caption embeddings (n_clips, D) float64, unit captions float64)."""
    if captions.dim() != 2 or caption_clip.dim() != 1 or caption_clip.numel() != captions.shape[0]:
        raise ValueError(f"captions {tuple(captions.shape)} and caption_clip {tuple(caption_clip.shape)} "
                         "must be (n_captions, D) and (n_captions,)")
    index = caption_clip.long().to(captions.device)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_clips):
        raise ValueError(f"caption_clip has values outside [0, {n_clips})")
    unit = F.normalize(captions.double(), dim=1)
    sums = unit.new_zeros(n_clips, unit.shape[1]).index_add_(0, index, unit)
    counts = torch.bincount(index, minlength=n_clips).clamp(min=1).to(unit.dtype)
    return sums / counts[:, None], unit  # a clip without captions gets a zero row: similarity 0


def caption_mean_embeddings(captions: Tensor, caption_clip: Tensor, n_clips: int) -> tuple[Tensor, Tensor]:
    """Unit rows ``(clip_rows (n_clips, D+1), caption_rows (n_captions, D+1))``, float32, whose cosine is
    ``mean over captions c of clip i of cos(t_c, t_j)``; ``caption_clip[j]`` is caption j's clip."""
    means, unit = _caption_means(captions, caption_clip, n_clips)
    rest = (1.0 - (means * means).sum(1, keepdim=True)).clamp(min=0.0).sqrt()
    clip_rows = torch.cat([means, rest], 1)
    caption_rows = torch.cat([unit, unit.new_zeros(unit.shape[0], 1)], 1)
    return clip_rows.float(), caption_rows.float()


def caption_similarity(captions: Tensor, caption_clip: Tensor, n_clips: int) -> Tensor:
    """``C[i, j] = mean over clip i's captions c of cos(t_c, t_j)``, float32 ``(n_clips, n_captions)``."""
    means, unit = _caption_means(captions, caption_clip, n_clips)
    return (means @ unit.T).float()


def column_softmax_mass(similarity: Tensor, relevant: Tensor, tau: float) -> Tensor:
    """Per caption column j: ``sum_i softmax_i(similarity[:, j] / tau) * relevant[i, j]``, float32
    ``(n_caption,)``: the probability the target over the clips puts on the truly relevant ones."""
    if similarity.shape != relevant.shape or similarity.dim() != 2:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevant {tuple(relevant.shape)} must be one "
                         "(n_audio, n_caption) shape")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    p = torch.softmax(similarity.double() / tau, dim=0)
    return (p * relevant.to(p.device, torch.bool)).sum(0).float()
