"""How the learned moment model trains (``training.moment_model``): a typed record, light to import (the
CLI reads its defaults without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

from soundsift.errors import ConfigError


@dataclass(frozen=True)
class MomentTrainOptions:
    """How the moment model trains: steps of full-batch AdamW over the training queries."""

    hidden: int = 128
    kernel: int = 5
    steps: int = 400
    lr: float = 2e-3
    weight_decay: float = 1e-2
    dropout: float = 0.1
    offset_weight: float = 0.2
    loss_weight: float = 1.0  # the supervised relevance term (BCE against the true windows)
    distill_weight: float = 1.0  # the soft targets' term (L_dist); on: measured in docs/moments.md
    tau: float = 0.05  # the soft targets' temperature: the paper's
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss_weight < 0 or self.distill_weight < 0 or self.loss_weight + self.distill_weight <= 0:
            raise ConfigError(f"loss weight {self.loss_weight} and distill weight {self.distill_weight}: "
                              "both must be >= 0 and one > 0")
        if not self.tau > 0:
            raise ConfigError(f"tau {self.tau}: must be > 0")
