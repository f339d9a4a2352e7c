"""Single-relevance (DCASE) text-to-audio metrics: ranks, mAP@10, R@k and top-k, from a similarity
matrix or, in chunks of captions, from embeddings (the full matrix never exists in memory)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from soundsift.metrics._common import (
    _caption_chunk,
    _check_k,
    _check_ks,
    _check_ties,
    _chunks,
    _embeddings,
    _rank_of_target,
    _similarity,
    _targets,
)
from soundsift.names import MAP_AT_10


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
    out = {MAP_AT_10: float(ap_at_k_from_ranks(r, 10).mean())}
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
