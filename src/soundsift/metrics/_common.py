"""Input checks and chunking shared by the metric modules: similarity matrices, caption targets, k, ties.

A similarity matrix is laid out ``(n_audio, n_caption)``; ``audio_of_caption[j]`` is the row index of
caption ``j``'s own audio. NaN scores raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_TIES = ("pessimistic", "optimistic")

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


def _check_k(k: int, n_audio: int) -> int:
    k = int(k)
    if not 1 <= k <= n_audio:
        raise ValueError(f"k must be in [1, n_audio={n_audio}], got {k}")
    return k
