"""``soundsift train --dry-run``: build everything, print the config and tower sizes, one training step.

It tells a user, before a long job, that the config resolves, the weights load (or, with
``--no-pretrained``, that the architecture builds), and that a forward and backward pass fits.
"""

from __future__ import annotations

import time

import torch
import yaml

from soundsift.config import Config, ModelConfig, OptimConfig


def offline_model(model: ModelConfig) -> ModelConfig:
    """The ``model`` section with both towers set to ``pretrained: false`` (random weights, no network)."""
    from soundsift.encoders.registry import random_weights

    specs = {key: random_weights(getattr(model, key).to_dict()) for key in ("audio_encoder", "text_encoder")}
    return ModelConfig.model_validate({**model.to_dict(), **specs})


def format_lr_schedule(optim: OptimConfig, steps_per_epoch: int = 1000) -> str:
    """The learning rate at the start of every epoch (warm-up, decay, and where the decay ends)."""
    from soundsift.training.module import lr_schedule

    schedule = lr_schedule(optim, steps_per_epoch)
    rates = [f"{epoch}: {optim.lr * schedule(epoch * steps_per_epoch):.3g}" for epoch in range(optim.epochs)]
    return (f"# learning rate at the start of each epoch (warm-up {optim.warmup_epochs} epoch(s), cosine "
            f"to {optim.min_lr:.3g} at epoch {optim.decay_end:g}, stepped every batch)\n" + ", ".join(rates))


def count(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


class RandomTargets:
    """Stand-in teachers for the dry run's stage-2 step: C_hat of random unit embeddings."""

    def batch_similarity(self, clip_index: torch.Tensor, caption_index: torch.Tensor,
                         device: torch.device | str | None = None) -> torch.Tensor:
        teacher = torch.nn.functional.normalize(torch.randn(len(clip_index), 8), dim=1)
        return (teacher @ teacher.T).to(device)


def dry_run(config: Config, pretrained: bool = True, batch_size: int = 2, seconds: float = 10.0) -> int:
    from soundsift.model import DualEncoder
    from soundsift.training.objective import Objective

    if not pretrained:
        config = config.model_copy(update={"model": offline_model(config.model)})
    print("# resolved config\n" + yaml.safe_dump(config.to_dict(), sort_keys=False))
    print(format_lr_schedule(config.optim))
    started = time.time()
    model = DualEncoder.from_config(config.model.to_dict())
    print(f"built in {time.time() - started:.1f} s")
    for name, part in (("audio tower", model.audio), ("text tower", model.text),
                       ("projections", torch.nn.ModuleList([model.audio_proj, model.text_proj]))):
        total, trainable = count(part)
        print(f"{name:12s} {total / 1e6:9.2f} M parameters ({trainable / 1e6:.2f} M trainable)")
    objective = Objective.from_config(config.loss, RandomTargets() if config.distills else None)
    model.train()
    n = int(seconds * model.sample_rate)
    wav = torch.randn(batch_size, n) * 0.1
    texts = [f"a dry run caption number {i}" for i in range(batch_size)]
    started = time.time()
    sim = model(wav, torch.full((batch_size,), n), texts)
    ids = torch.arange(batch_size)
    loss = objective(sim, ids, ids)["total"]
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    finite = all(torch.isfinite(g).all() for g in grads)
    print(f"one step on {batch_size} x {seconds:g} s of random audio: loss {loss.item():.4f}, "
          f"{len(grads)} gradient tensors, finite: {finite}, {time.time() - started:.1f} s")
    return 0 if finite and torch.isfinite(loss) else 1
