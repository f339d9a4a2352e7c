"""Retrieval metrics as pure functions (DESIGN.md section 2). Values are fractions, not percent.

A similarity matrix is laid out ``(n_audio, n_caption)``; ``audio_of_caption[j]`` is the row index of
caption ``j``'s own audio. Text-to-audio: every caption is a query over the rows.

Ties. ``ties="pessimistic"`` (the default) ranks a relevant item *after* every other candidate with the
same score: its rank is the number of candidates scoring at least as high (itself included). Thus a
collapsed model that gives every audio the same score gets the worst rank, never R@1 = 1, and the
metrics do not depend on the order of the candidates. ``ties="optimistic"`` ranks it first among
equals (rank = 1 + number of candidates with a strictly higher score). With continuous scores ties
are rare and both agree. NaN scores raise ``ValueError``.

All metrics are one matrix product (for the embedding paths) plus vectorised counting: no Python loop
over queries. The ``*_from_embeddings`` functions work in chunks of captions, so the full
``(n_audio, n_caption)`` matrix never exists in memory. Several relevant audios per query (DCASE 2025):
:func:`multi_relevance_metrics`; the section "multi-relevance" below names the two AP@k normalisations.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from soundsift.atomic import atomic_write

__all__ = [
    "ap_at_k_from_ranks",
    "audio_to_text_metrics",
    "average_precision_at_k",
    "first_relevant_ranks",
    "jackknife_ci",
    "map_at_k",
    "metrics_from_ranks",
    "paired_bootstrap_ci",
    "multi_relevance_metrics",
    "recall_at_k_multi",
    "text_to_audio_metrics",
    "text_to_audio_metrics_from_embeddings",
    "text_to_audio_ranks",
    "text_to_audio_ranks_from_embeddings",
    "topk_audios",
    "topk_audios_from_embeddings",
    "write_dcase_submission",
]

_TIES = ("pessimistic", "optimistic")


# ---------------------------------------------------------------------------------------------- checks
def _similarity(similarity: Tensor, name: str = "similarity") -> Tensor:
    if not isinstance(similarity, Tensor):
        similarity = torch.as_tensor(similarity)
    if similarity.dim() != 2 or 0 in similarity.shape:
        raise ValueError(
            f"{name} must be a non-empty (n_audio, n_caption) matrix, got {tuple(similarity.shape)}"
        )
    if not similarity.is_floating_point():
        similarity = similarity.double()
    if bool(torch.isnan(similarity).any()):
        raise ValueError(f"{name} contains NaN scores")
    return similarity


def _targets(audio_of_caption: Tensor | Sequence[int], n_audio: int, n_caption: int, device) -> Tensor:
    target = torch.as_tensor(audio_of_caption, device=device)
    if target.dim() != 1 or target.numel() != n_caption:
        raise ValueError(
            f"audio_of_caption must have one entry per caption ({n_caption}), got shape {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"audio_of_caption must hold integer row indices, got {target.dtype}")
    target = target.long()
    if n_caption and (int(target.min()) < 0 or int(target.max()) >= n_audio):
        bad = int(((target < 0) | (target >= n_audio)).nonzero()[0])
        raise ValueError(f"audio_of_caption[{bad}] = {int(target[bad])} is not a row index in [0, {n_audio})")
    return target


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    return ks


def _check_ties(ties: str) -> None:
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")


def _rank_of_target(scores: Tensor, target: Tensor, ties: str) -> Tensor:
    """1-based rank of row ``target[q]`` in column ``q`` of ``scores`` (n_candidates, n_queries)."""
    own = scores.gather(0, target[None, :])
    if ties == "pessimistic":
        return (scores >= own).sum(dim=0)
    return (scores > own).sum(dim=0) + 1


# ----------------------------------------------------------------------------------- text to audio
def text_to_audio_ranks(
    similarity: Tensor, audio_of_caption: Tensor | Sequence[int], ties: str = "pessimistic"
) -> Tensor:
    """Per-caption 1-based rank (LongTensor ``(n_caption,)``) of its own audio among all rows."""
    _check_ties(ties)
    sim = _similarity(similarity)
    target = _targets(audio_of_caption, sim.shape[0], sim.shape[1], sim.device)
    return _rank_of_target(sim, target, ties)


def ap_at_k_from_ranks(ranks: Tensor, k: int = 10) -> Tensor:
    """Per-query AP@k with one relevant item: ``1/r`` if ``r <= k`` else 0 (float64)."""
    r = torch.as_tensor(ranks).double()
    return torch.where(r <= k, 1.0 / r, torch.zeros_like(r))


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"mAP@10": ..., "R@k": ...}`` from 1-based ranks (one relevant item per query)."""
    ks = _check_ks(ks)
    r = torch.as_tensor(ranks)
    if r.numel() == 0:
        raise ValueError("no queries to evaluate")
    out = {"mAP@10": float(ap_at_k_from_ranks(r, 10).mean())}
    for k in ks:
        out[f"R@{k}"] = float((r <= k).double().mean())
    return out


def text_to_audio_metrics(
    similarity: Tensor,
    audio_of_caption: Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
) -> dict[str, float]:
    """DCASE text-to-audio metrics: mAP@10 and R@k over caption queries (fractions)."""
    return metrics_from_ranks(text_to_audio_ranks(similarity, audio_of_caption, ties), ks)


_BLOCK_ELEMENTS = 1 << 24  # default similarity block: 16M scores, 64 MB in float32


def _chunks(n: int, chunk_size: int | None, n_audio: int = 1):
    """(start, stop) ranges over n queries; ``None`` picks blocks of about 16M scores."""
    if chunk_size is None:
        chunk_size = max(1, _BLOCK_ELEMENTS // max(1, n_audio))
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, n, int(chunk_size)):
        yield start, min(n, start + int(chunk_size))


def _embeddings(audio_emb: Tensor, caption_emb: Tensor, normalize: bool) -> tuple[Tensor, Tensor]:
    if audio_emb.dim() != 2 or caption_emb.dim() != 2 or audio_emb.shape[1] != caption_emb.shape[1]:
        raise ValueError(
            "audio_emb and caption_emb must be (n, D) matrices with the same D, got "
            f"{tuple(audio_emb.shape)} and {tuple(caption_emb.shape)}"
        )
    if audio_emb.shape[0] == 0:
        raise ValueError("audio_emb has no rows")
    dtype = torch.promote_types(torch.promote_types(audio_emb.dtype, caption_emb.dtype), torch.float32)
    audio = audio_emb.to(dtype)
    return (F.normalize(audio, dim=1) if normalize else audio), caption_emb


def _caption_chunk(caption_emb: Tensor, start: int, stop: int, audio: Tensor, normalize: bool) -> Tensor:
    """Similarity block for captions ``start:stop``, caption-major ``(stop - start, n_audio)``.

    Caption-major keeps each query's scores contiguous, which makes top-k about 5x faster.
    """
    chunk = caption_emb[start:stop].to(device=audio.device, dtype=audio.dtype)
    if normalize:
        chunk = F.normalize(chunk, dim=1)
    sim = chunk @ audio.T
    if bool(torch.isnan(sim).any()):
        raise ValueError(f"NaN similarity for captions {start}:{stop} (NaN in the embeddings?)")
    return sim


def text_to_audio_ranks_from_embeddings(
    audio_emb: Tensor,
    caption_emb: Tensor,
    audio_of_caption: Tensor | Sequence[int],
    chunk_size: int | None = None,
    normalize: bool = True,
    ties: str = "pessimistic",
) -> Tensor:
    """Like :func:`text_to_audio_ranks` on cosine similarities, one chunk of captions at a time.

    Peak extra memory is about ``n_audio * chunk_size * 5`` bytes (a float32 block plus a bool mask);
    the default chunk holds about 16M scores (~80 MB), e.g. 838 captions at 20k audios. ``normalize=False`` uses plain inner products.
    """
    _check_ties(ties)
    audio, captions = _embeddings(audio_emb, caption_emb, normalize)
    target = _targets(audio_of_caption, audio.shape[0], captions.shape[0], audio.device)
    ranks = torch.empty(captions.shape[0], dtype=torch.long, device=audio.device)
    for start, stop in _chunks(captions.shape[0], chunk_size, audio.shape[0]):
        sim = _caption_chunk(captions, start, stop, audio, normalize)
        ranks[start:stop] = _rank_of_target(sim.T, target[start:stop], ties)
    return ranks


def text_to_audio_metrics_from_embeddings(
    audio_emb: Tensor,
    caption_emb: Tensor,
    audio_of_caption: Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    normalize: bool = True,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """:func:`text_to_audio_metrics` from embeddings without materialising the full matrix."""
    ranks = text_to_audio_ranks_from_embeddings(
        audio_emb, caption_emb, audio_of_caption, chunk_size, normalize, ties
    )
    return metrics_from_ranks(ranks, ks)


# ------------------------------------------------------------------------------------ top-k / DCASE
def _check_k(k: int, n_audio: int) -> int:
    k = int(k)
    if not 1 <= k <= n_audio:
        raise ValueError(f"k must be in [1, n_audio={n_audio}], got {k}")
    return k


def topk_audios(similarity: Tensor, k: int = 10) -> Tensor:
    """Indices ``(n_caption, k)`` of each caption's k best audios, best first."""
    sim = _similarity(similarity)
    k = _check_k(k, sim.shape[0])
    return torch.topk(sim.T.contiguous(), k, dim=1).indices  # contiguous rows: much faster top-k


def topk_audios_from_embeddings(
    audio_emb: Tensor, caption_emb: Tensor, k: int = 10, chunk_size: int | None = None, normalize: bool = True
) -> Tensor:
    """:func:`topk_audios` on cosine similarities, computed one chunk of captions at a time."""
    audio, captions = _embeddings(audio_emb, caption_emb, normalize)
    k = _check_k(k, audio.shape[0])
    out = torch.empty(captions.shape[0], k, dtype=torch.long, device=audio.device)
    for start, stop in _chunks(captions.shape[0], chunk_size, audio.shape[0]):
        sim = _caption_chunk(captions, start, stop, audio, normalize)
        out[start:stop] = torch.topk(sim, k, dim=1).indices
    return out


def write_dcase_submission(
    path: str | os.PathLike,
    captions: Sequence[str],
    audio_names: Sequence[str],
    topk_indices: Tensor | Sequence[Sequence[int]],
) -> Path:
    """Write a DCASE retrieval submission CSV (``caption,file_name_1,...,file_name_k``), atomically.

    Row q holds ``captions[q]`` and the names of the audios ``topk_indices[q]``, best first. The file
    is written to a temporary file next to ``path`` and moved into place, so a crash never leaves a
    half-written submission.
    """
    path = Path(path)
    idx = torch.as_tensor(topk_indices, dtype=torch.long).cpu()
    if idx.dim() != 2 or idx.shape[0] != len(captions):
        raise ValueError(
            f"{path}: topk_indices must be (n_captions={len(captions)}, k), got {tuple(idx.shape)}"
        )
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(audio_names)):
        row = int(((idx < 0) | (idx >= len(audio_names))).any(dim=1).nonzero()[0])
        raise ValueError(f"{path}: row {row} of topk_indices has an index outside [0, {len(audio_names)})")
    header = ["caption"] + [f"file_name_{i + 1}" for i in range(idx.shape[1])]
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for caption, row in zip(captions, idx.tolist()):
                writer.writerow([caption] + [audio_names[i] for i in row])

    return atomic_write(path, write)


# -------------------------------------------------------------------------------- multi-relevance
# Several relevant audios per caption (DCASE 2025 task 6: ClothoV2 evaluation captions with extra
# annotations). AP@k sums, over the relevant audios ranked within k, the precision at their rank; two
# divisors are in use and give different numbers whenever a query has more than k relevant audios or
# relevant audios ranked below k:
#   normalise="relevant": divided by the number of relevant audios. This is what the DCASE 2025 task 6
#       baseline's code computes (CPJKU/dcase2025_task6_baseline, retrieval_module.py: the sum is divided by
#       len(relevant_ranks)), and so the challenge's mAP@16; it cannot reach 1 when #relevant > k.
#   normalise="min_k": divided by min(#relevant, k), the textbook AP@k (1 for a perfect ranking).
# The baseline breaks score ties by argsort order; here ties follow ``ties`` (module docstring).
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
