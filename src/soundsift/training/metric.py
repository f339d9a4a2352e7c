"""``RetrievalMetrics``: the DCASE text-to-audio metrics as a torchmetrics ``Metric`` object.

``update`` takes a batch of audio and caption embeddings with their global indices; ``compute`` returns
what :func:`soundsift.metrics.text_to_audio_metrics` returns on the whole set (``mAP@10``, ``R@k``). It
subclasses ``torchmetrics.Metric`` (installed with Lightning) rather than gathering by hand: its list
states are concatenated across processes at ``compute`` (uneven sizes included, with any backend), it
moves with ``.to(device)``, and Lightning and other torchmetrics users know the update/compute/reset
protocol. The math stays in :mod:`soundsift.metrics` (torch only); this module lives in ``training/``
because the math layer may not import torchmetrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from soundsift.metrics import text_to_audio_metrics_from_embeddings

__all__ = ["RetrievalMetrics"]


class RetrievalMetrics(Metric):
    """Text-to-audio mAP@10 and R@k over every caption seen by any process (fractions).

    Each ``update`` adds audio rows with their global indices ``audio_index`` and captions with the
    global index of their own audio ``audio_of_caption``; a process may add captions whose audio
    another process added. At ``compute`` the states of all processes are gathered; an audio index
    seen twice (a sampler that pads the last batch) counts once. Similarities are cosine (the rows are
    normalised) and ties pessimistic, as in :func:`soundsift.metrics.text_to_audio_metrics`; the
    result is computed on the CPU, so it does not depend on the device the states were gathered on.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = (1, 5, 10), **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks = tuple(int(k) for k in ks)
        self.add_state("audio", default=[], dist_reduce_fx="cat")
        self.add_state("audio_index", default=[], dist_reduce_fx="cat")
        self.add_state("captions", default=[], dist_reduce_fx="cat")
        self.add_state("audio_of_caption", default=[], dist_reduce_fx="cat")

    def update(self, audio: Tensor, captions: Tensor, audio_index: Tensor | Sequence[int],
               audio_of_caption: Tensor | Sequence[int]) -> None:
        """Add ``audio`` ``(n_a, D)`` with global indices ``audio_index`` ``(n_a,)`` and ``captions``
        ``(n_c, D)`` whose own audios have the global indices ``audio_of_caption`` ``(n_c,)``."""
        audio_index = torch.as_tensor(audio_index, dtype=torch.long, device=self.device)
        audio_of_caption = torch.as_tensor(audio_of_caption, dtype=torch.long, device=self.device)
        if audio.dim() != 2 or audio_index.shape != (audio.shape[0],):
            raise ValueError(f"audio {tuple(audio.shape)} needs one index per row, got {tuple(audio_index.shape)}")
        if captions.dim() != 2 or audio_of_caption.shape != (captions.shape[0],):
            raise ValueError(
                f"captions {tuple(captions.shape)} need one audio index per row, got {tuple(audio_of_caption.shape)}"
            )
        self.audio.append(audio.detach().to(self.device))
        self.audio_index.append(audio_index)
        self.captions.append(captions.detach().to(self.device))
        self.audio_of_caption.append(audio_of_caption)

    def compute(self) -> dict[str, float]:
        """``{"mAP@10": ..., "R@1": ..., ...}`` over all captions, as ``text_to_audio_metrics``."""
        if len(self.audio) == 0 or len(self.captions) == 0:  # a list before syncing, a tensor after
            raise ValueError("RetrievalMetrics.compute() before any update")
        audio, index = dim_zero_cat(self.audio).cpu(), dim_zero_cat(self.audio_index).cpu()
        captions, target = dim_zero_cat(self.captions).cpu(), dim_zero_cat(self.audio_of_caption).cpu()
        known, first = torch.unique(index, return_inverse=True)
        keep = torch.full((known.numel(),), index.numel(), dtype=torch.long).scatter_reduce(
            0, first, torch.arange(index.numel()), reduce="amin"
        )  # the first row of every audio index, rows in order of their index
        row = torch.searchsorted(known, target)
        missing = (row >= known.numel()) | (known[row.clamp(max=known.numel() - 1)] != target)
        if bool(missing.any()):
            bad = int(target[missing][0])
            raise ValueError(f"a caption's audio index {bad} was never added with update(audio=...)")
        return text_to_audio_metrics_from_embeddings(audio[keep], captions, row, self.ks)
