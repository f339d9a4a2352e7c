"""The ensemble of M aligned teachers and the estimated correspondences ``C_hat = mean_m C^m`` it
gives per batch (:class:`TeacherEnsemble`), and how well a similarity separates true pairs (AUC)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from soundsift.correspondences.similarity import _checked_weights, ensemble_similarity
from soundsift.correspondences.teacher import TeacherEmbeddings
from soundsift.errors import AlignmentError
from soundsift.string_table import StringTable


class TeacherEnsemble:
    """M aligned teachers; gives ``C_hat`` for any set of clips and captions of the split: their mean
    similarity (the paper), or with ``weights`` (one per teacher, > 0) their weighted mean."""

    def __init__(self, teachers: Sequence[TeacherEmbeddings], weights: Sequence[float] | None = None) -> None:
        if len(teachers) == 0:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        self.teachers = list(teachers)
        self.weights = None if weights is None else _checked_weights(weights, len(self.teachers))
        first = self.teachers[0]
        for t in self.teachers[1:]:
            try:
                t.check_alignment(first.clip_ids, first.caption_texts, first._caption_clip_ref())
            except AlignmentError as err:
                raise AlignmentError(f"{err} (compared with {first.source or 'teacher 0'})") from None

    @property
    def clip_ids(self) -> StringTable:
        return self.teachers[0].clip_ids

    @property
    def caption_texts(self) -> StringTable:
        return self.teachers[0].caption_texts

    @property
    def caption_clip(self) -> Tensor:
        return self.teachers[0].caption_clip

    def __len__(self) -> int:
        return len(self.teachers)

    def batch_similarity(
        self, clip_index: Tensor, caption_index: Tensor, device: torch.device | str | None = None
    ) -> Tensor:
        """``C_hat`` for a batch, float32 ``(len(clip_index), len(caption_index))`` on ``device``.

        For a batch of B pairs pass each pair's clip index and caption index (global indices in the
        split): row i is the audio of pair i, column j the caption of pair j.
        """
        clips = _index(clip_index, len(self.clip_ids), "clip_index")
        caps = _index(caption_index, len(self.caption_texts), "caption_index")
        audio = [t.rows("audio", clips).to(device) for t in self.teachers]
        captions = [t.rows("captions", caps).to(device) for t in self.teachers]
        return ensemble_similarity(audio, captions, self.weights)

    def full_similarity(self, device: torch.device | str | None = None) -> Tensor:
        """``C_hat`` over the whole split, ``(n_clips, n_captions)`` float32 (for small splits)."""
        return ensemble_similarity(
            [t.audio.to(device) for t in self.teachers], [t.captions.to(device) for t in self.teachers], self.weights
        )


def _index(index: Tensor | Sequence[int], n: int, name: str) -> Tensor:
    idx = torch.as_tensor(index)
    if idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {idx.dtype} {tuple(idx.shape)}")
    idx = idx.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"{name} has values outside [0, {n})")
    return idx


def correspondence_auc(similarity: Tensor, holds: Tensor) -> float:
    """ROC AUC of ``similarity`` as a score for the bool ground truth ``holds`` (same shape).

    Pooled over all entries, rank based: the probability that a random true pair scores higher than a
    random false pair, ties counting one half.
    """
    scores = torch.as_tensor(similarity).detach().reshape(-1).cpu().double()
    truth = torch.as_tensor(holds).reshape(-1).cpu().bool()
    if scores.numel() != truth.numel():
        raise ValueError(f"similarity has {scores.numel()} entries, holds has {truth.numel()}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("similarity contains NaN")
    n_pos = int(truth.sum())
    n_neg = truth.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs true and false pairs, got {n_pos} true and {n_neg} false")
    _, group, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    pos = torch.bincount(group, weights=truth.double(), minlength=counts.numel())
    neg = counts.double() - pos
    neg_below = torch.cumsum(neg, 0) - neg  # false pairs with a strictly lower score
    wins = (pos * neg_below).sum() + 0.5 * (pos * neg).sum()
    return float(wins / (float(n_pos) * float(n_neg)))
