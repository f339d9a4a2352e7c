"""The training objective, one object for training, the dry run and tests.

``total = loss_weight * L_sup + distill_weight * L_dist`` (paper 5.1). ``L_sup`` is the contrastive loss
against the pair labels; ``L_dist`` the distillation loss against the targets' ``C_hat`` of the batch
(teacher files or an estimator's targets: anything with ``batch_similarity``). The weights are used as
written (salsa's ``lw`` enters a config already squared: recipes/table2.yaml). Stage 1 versus stage 2 is
decided here once: :attr:`Objective.uses_teachers`.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from soundsift.config import LossConfig
from soundsift.errors import ConfigError
from soundsift.losses import contrastive_loss, distillation_loss, positives_from_ids


class Targets(Protocol):
    """Stage 2's targets: the C_hat of a batch's clips and captions (a TeacherEnsemble, say)."""

    def batch_similarity(self, clip_index: Tensor, caption_index: Tensor,
                         device: torch.device | str | None = None) -> Tensor: ...


class Objective:
    """The loss of a batch as named terms: ``{"L_sup", "L_dist", "total"}`` (a term with weight 0 is
    left out, so logs and ``history.json`` name only what was trained)."""

    def __init__(self, loss_weight: float = 1.0, distill_weight: float = 0.0, tau: float = 0.05,
                 teachers: Targets | None = None) -> None:
        if loss_weight == 0 and distill_weight == 0:
            raise ConfigError("loss.loss_weight and loss.distill_weight are both 0: nothing to train")
        if distill_weight and teachers is None:
            raise ConfigError("loss.distill_weight > 0 needs teachers: build the Objective with the teachers' "
                              "targets (training.run.load_teachers) or set loss.distill_weight=0")
        self.loss_weight, self.distill_weight, self.tau = float(loss_weight), float(distill_weight), float(tau)
        self.teachers = teachers

    @classmethod
    def from_config(cls, loss: LossConfig, teachers: Targets | None = None) -> Objective:
        """The objective of a config's ``loss`` section with stage 2's ``teachers``."""
        return cls(loss.loss_weight, loss.distill_weight, loss.tau, teachers)

    @property
    def uses_teachers(self) -> bool:
        """Stage 2: the loss has a distillation term."""
        return self.distill_weight > 0

    def targets(self, clip_index: Tensor, caption_index: Tensor, device: torch.device | str) -> Tensor | None:
        """The teachers' float32 C_hat of the batch (None in stage 1)."""
        if not self.uses_teachers:
            return None
        with torch.autocast(device_type=torch.device(device).type, enabled=False):  # bf16 would round C_hat
            return self.teachers.batch_similarity(clip_index, caption_index, device=device).float()

    def __call__(self, similarity: Tensor, clip_index: Tensor, caption_index: Tensor) -> dict[str, Tensor]:
        """The terms of a batch whose student similarity is ``similarity`` (n_audio, n_caption): audio i
        is clip ``clip_index[i]``, caption j is caption ``caption_index[j]`` of the training split."""
        terms: dict[str, Tensor] = {}
        total = similarity.new_zeros(())
        if self.loss_weight:
            terms["L_sup"] = contrastive_loss(similarity, positives_from_ids(clip_index, clip_index), self.tau)
            total = total + self.loss_weight * terms["L_sup"]
        if self.uses_teachers:
            target = self.targets(clip_index, caption_index, similarity.device)
            terms["L_dist"] = distillation_loss(similarity, target, self.tau)
            total = total + self.distill_weight * terms["L_dist"]
        terms["total"] = total
        return terms
