"""Multi-relevance metrics (several relevant audios per caption, DCASE 2025: mAP@k with its two
normalisations, any-hit R@k) and audio-to-text metrics (every clip's captions are its relevant items)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from soundsift.metrics._common import _check_ks, _check_ties, _chunks, _similarity, _targets
from soundsift.metrics.intervals import jackknife_ci

# -------------------------------------------------------------------------------- multi-relevance
# Several relevant audios per caption (DCASE 2025 task 6: ClothoV2 evaluation captions with extra
# annotations). AP@k sums, over the relevant audios ranked within k, the precision at their rank; two
# divisors are in use and give different numbers whenever a query has more than k relevant audios or
# relevant audios ranked below k:
#   normalise="relevant": divided by the number of relevant audios. This is what the DCASE 2025 task 6
#       baseline's code computes (CPJKU/dcase2025_task6_baseline, retrieval_module.py: the sum is divided by
#       len(relevant_ranks)), and so the challenge's mAP@16; it cannot reach 1 when #relevant > k.
#   normalise="min_k": divided by min(#relevant, k), the textbook AP@k (1 for a perfect ranking).
# The baseline breaks score ties by argsort order; here ties follow ``ties`` (the package docstring).
_NORMALISE = ("relevant", "min_k")


def _check_normalise(normalise: str) -> None:
    if normalise not in _NORMALISE:
        raise ValueError(f"normalise must be one of {_NORMALISE}, got {normalise!r}")


def _ap_block(scores: Tensor, relevance: Tensor, k: int, ties: str, normalise: str) -> Tensor:
    """AP@k per query for query-major ``(n_query, n_candidates)`` blocks; NaN without relevant items.

    Without sorting: the m-th best relevant item (1-based) sits at position ``m + c``, where ``c`` is
    the number of non-relevant items scoring at least as high (pessimistic) or strictly higher
    (optimistic); only the k best relevant and k best non-relevant scores can matter.
    """
    kk = min(k, scores.shape[1])
    n_rel = relevance.sum(dim=1, keepdim=True)
    n_non = scores.shape[1] - n_rel
    top_rel = torch.topk(scores.masked_fill(~relevance, -math.inf), kk, dim=1).values  # (nq, kk)
    top_non = torch.topk(scores.masked_fill(relevance, -math.inf), kk, dim=1).values  # (nq, kk)
    slot = torch.arange(kk, device=scores.device)[None, :]
    valid_rel, valid_non = slot < n_rel, slot < n_non  # real items, not -inf padding
    # beats[q, m, l]: does the l-th best non-relevant item come before the m-th best relevant one?
    if ties == "pessimistic":
        beats = top_non[:, None, :] >= top_rel[:, :, None]
    else:
        beats = top_non[:, None, :] > top_rel[:, :, None]
    position = slot + 1 + (beats & valid_non[:, None, :]).sum(dim=2)  # (nq, kk)
    inside = valid_rel & (position <= k)
    precision = torch.where(inside, (slot + 1).double() / position.double(), 0.0)
    n_rel = n_rel.squeeze(1)
    divisor = n_rel.clamp(min=1) if normalise == "relevant" else n_rel.clamp(max=k, min=1)
    ap = precision.sum(dim=1) / divisor.double()
    return torch.where(n_rel > 0, ap, torch.full_like(ap, math.nan))


def _relevance(sim: Tensor, relevance: Tensor) -> Tensor:
    rel = torch.as_tensor(relevance, device=sim.device)
    if rel.shape != sim.shape:
        raise ValueError(f"relevance has shape {tuple(rel.shape)}, similarity has {tuple(sim.shape)}")
    return rel.bool()


def average_precision_at_k(
    similarity: Tensor, relevance: Tensor, k: int = 16, ties: str = "pessimistic", normalise: str = "min_k"
) -> Tensor:
    """Per-caption AP@k (float64, ``(n_caption,)``) with several relevant audios per caption.

    ``relevance`` is a bool ``(n_audio, n_caption)`` matrix. AP@k = sum over the relevant audios ranked
    within k of the precision at their rank, divided by ``min(#relevant, k)`` (``normalise="min_k"``, the
    standard AP@k) or by ``#relevant`` (``normalise="relevant"``, the DCASE 2025 task 6 baseline's code,
    by which the challenge's mAP@16 was computed). With one relevant audio both equal ``1/r`` for
    ``r <= k`` (:func:`ap_at_k_from_ranks`). Captions with no relevant audio get NaN (:func:`map_at_k`
    leaves them out).
    """
    _check_ties(ties)
    _check_normalise(normalise)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sim = _similarity(similarity)
    rel = _relevance(sim, relevance)
    kk = min(int(k), sim.shape[0])  # bound the masked copies and the (kk, kk, block) comparison
    block = max(1, (1 << 24) // max(sim.shape[0], kk * kk))
    # query-major blocks: each caption's scores contiguous, which makes top-k several times faster
    return torch.cat(
        [
            _ap_block(sim[:, a:b].T.contiguous(), rel[:, a:b].T.contiguous(), int(k), ties, normalise)
            for a, b in _chunks(sim.shape[1], block)
        ]
    )


def map_at_k(
    similarity: Tensor, relevance: Tensor, k: int = 16, ties: str = "pessimistic", normalise: str = "min_k"
) -> float:
    """Mean AP@k over the captions that have at least one relevant audio (see average_precision_at_k).

    ``normalise="relevant"`` gives the DCASE 2025 challenge's mAP@16 (at ``k=16``); the default
    ``"min_k"`` the standard mAP@k.
    """
    ap = average_precision_at_k(similarity, relevance, k, ties, normalise)
    valid = ~torch.isnan(ap)
    if not bool(valid.any()):
        raise ValueError("no caption has a relevant audio; mAP is undefined")
    return float(ap[valid].mean())


def first_relevant_ranks(similarity: Tensor, relevance: Tensor, ties: str = "pessimistic") -> Tensor:
    """Per caption, the 1-based rank (LongTensor ``(n_caption,)``) of its best-ranked relevant audio; 0
    for a caption without relevant audio. Pessimistic ties put it after every non-relevant audio with
    the same score."""
    _check_ties(ties)
    sim = _similarity(similarity)
    rel = _relevance(sim, relevance)
    out = torch.zeros(sim.shape[1], dtype=torch.long, device=sim.device)
    for a, b in _chunks(sim.shape[1], None, sim.shape[0]):
        scores, r = sim[:, a:b], rel[:, a:b]
        best = scores.masked_fill(~r, -math.inf).max(dim=0).values
        ahead = (scores >= best[None, :]) if ties == "pessimistic" else (scores > best[None, :])
        rank = 1 + (ahead & ~r).sum(dim=0)
        out[a:b] = torch.where(r.any(dim=0), rank, torch.zeros_like(rank))
    return out


def recall_at_k_multi(
    similarity: Tensor, relevance: Tensor, ks: Sequence[int] = (1, 5, 10), ties: str = "pessimistic"
) -> dict[str, float]:
    """``{"R@k": ...}``: the fraction of captions with ANY relevant audio in their top k (captions without
    relevant audio are left out). With one relevant audio per caption this is the DCASE R@k."""
    ks = _check_ks(ks)
    ranks = first_relevant_ranks(similarity, relevance, ties)
    ranks = ranks[ranks > 0]
    if ranks.numel() == 0:
        raise ValueError("no caption has a relevant audio; R@k is undefined")
    return {f"R@{k}": float((ranks <= k).double().mean()) for k in ks}


def multi_relevance_metrics(
    similarity: Tensor,
    relevance: Tensor,
    map_ks: Sequence[int] = (16, 10),
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
) -> dict[str, Any]:
    """DCASE 2025 style metrics over the captions with at least one relevant audio (fractions).

    ``mAP@k`` uses the DCASE 2025 baseline's normalisation (by #relevant: the challenge ranked systems by
    ``mAP@16``), ``mAP@k_min_k`` the standard one (by min(#relevant, k)); ``R@k``: any relevant audio in
    the top k; ``mAP@16_ci95``: jackknife 95% interval of ``mAP@16`` (when 16 is in ``map_ks`` and there
    are at least 2 queries); ``n_queries``.
    """
    out: dict[str, Any] = {}
    per_query: dict[int, Tensor] = {}
    for k in _check_ks(map_ks):
        ap = average_precision_at_k(similarity, relevance, k, ties, normalise="relevant")
        valid = ~torch.isnan(ap)
        if not bool(valid.any()):
            raise ValueError("no caption has a relevant audio; mAP is undefined")
        per_query[k] = ap[valid]
        out[f"mAP@{k}"] = float(ap[valid].mean())
    for k in _check_ks(map_ks):
        out[f"mAP@{k}_min_k"] = map_at_k(similarity, relevance, k, ties, normalise="min_k")
    out.update(recall_at_k_multi(similarity, relevance, ks, ties))
    if 16 in per_query and per_query[16].numel() >= 2:
        _, low, high = jackknife_ci(per_query[16])
        out["mAP@16_ci95"] = [low, high]
    out["n_queries"] = int(next(iter(per_query.values())).numel())
    return out


# ----------------------------------------------------------------------------------- audio to text
def audio_to_text_metrics(
    similarity: Tensor,
    audio_of_caption: Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
) -> dict[str, float]:
    """Audio-to-text metrics: every audio (row) is a query over all captions.

    R@k counts a hit when ANY of the clip's captions is in its top k. "mAP@10" is the multi-relevant
    AP@10 (relevant = all the clip's captions; divided by min(#captions of the clip, 10)). Audios
    without any caption are not queries.
    """
    _check_ties(ties)
    ks = _check_ks(ks)
    sim = _similarity(similarity)
    n_audio, n_caption = sim.shape
    target = _targets(audio_of_caption, n_audio, n_caption, sim.device)
    relevance = torch.zeros(n_audio, n_caption, dtype=torch.bool, device=sim.device)
    relevance[target, torch.arange(n_caption, device=sim.device)] = True
    own = sim[target, torch.arange(n_caption, device=sim.device)]
    best = torch.full((n_audio,), -math.inf, dtype=sim.dtype, device=sim.device)
    best = best.scatter_reduce(0, target, own, reduce="amax")
    has_caption = torch.bincount(target, minlength=n_audio) > 0
    if ties == "pessimistic":
        first_hit = 1 + ((sim >= best[:, None]) & ~relevance).sum(dim=1)
    else:
        first_hit = 1 + (sim > best[:, None]).sum(dim=1)
    first_hit = first_hit[has_caption]
    ap = average_precision_at_k(sim.T, relevance.T, 10, ties, normalise="min_k")
    out = {"mAP@10": float(ap[has_caption].mean())}
    for k in ks:
        out[f"R@{k}"] = float((first_hit <= k).double().mean())
    return out
