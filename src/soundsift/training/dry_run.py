"""``soundsift train --dry-run``: build everything, print the config and tower sizes, one training step.

It tells a user, before a long job, that the config resolves, the weights load (or, with
``--no-pretrained``, that the architecture builds), and that a forward and backward pass fits.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import yaml


def format_lr_schedule(optim: dict[str, Any], steps_per_epoch: int = 1000) -> str:
    """The learning rate at the start of every epoch (warm-up, decay, and where the decay ends)."""
    from soundsift.training.module import lr_schedule

    schedule, base = lr_schedule(optim, steps_per_epoch), float(optim["lr"])
    rates = [f"{epoch}: {base * schedule(epoch * steps_per_epoch):.3g}" for epoch in range(int(optim["epochs"]))]
    decay = optim["decay_epochs"] if optim["decay_epochs"] is not None else optim["epochs"]
    return (f"# learning rate at the start of each epoch (warm-up {optim['warmup_epochs']} epoch(s), cosine "
            f"to {float(optim['min_lr']):.3g} at epoch {decay:g}, stepped every batch)\n" + ", ".join(rates))


def count(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def dry_run(config: dict[str, Any], pretrained: bool = True, batch_size: int = 2, seconds: float = 10.0) -> int:
    from soundsift.encoders.registry import random_weights
    from soundsift.losses import contrastive_loss, distillation_loss, positives_from_ids
    from soundsift.model import DualEncoder

    config = copy.deepcopy(config)
    model_cfg = config["model"]
    if not pretrained:
        for key in ("audio_encoder", "text_encoder"):  # random weights, never the network
            spec = {"name": model_cfg[key]} if isinstance(model_cfg[key], str) else model_cfg[key]
            model_cfg[key] = random_weights(spec)
    print("# resolved config\n" + yaml.safe_dump(config, sort_keys=False))
    print(format_lr_schedule(config["optim"]))
    started = time.time()
    model = DualEncoder.from_config(model_cfg)
    print(f"built in {time.time() - started:.1f} s")
    for name, part in (("audio tower", model.audio), ("text tower", model.text),
                       ("projections", torch.nn.ModuleList([model.audio_proj, model.text_proj]))):
        total, trainable = count(part)
        print(f"{name:12s} {total / 1e6:9.2f} M parameters ({trainable / 1e6:.2f} M trainable)")
    model.train()
    n = int(seconds * model.sample_rate)
    wav = torch.randn(batch_size, n) * 0.1
    texts = [f"a dry run caption number {i}" for i in range(batch_size)]
    started = time.time()
    sim = model(wav, torch.full((batch_size,), n), texts)
    ids = torch.arange(batch_size)
    loss_cfg = config["loss"]
    loss = float(loss_cfg["loss_weight"]) * contrastive_loss(sim, positives_from_ids(ids, ids), loss_cfg["tau"])
    if float(loss_cfg["distill_weight"]):
        teacher = torch.nn.functional.normalize(torch.randn(batch_size, 8), dim=1)
        loss = loss + float(loss_cfg["distill_weight"]) * distillation_loss(sim, teacher @ teacher.T, loss_cfg["tau"])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    finite = all(torch.isfinite(g).all() for g in grads)
    print(f"one step on {batch_size} x {seconds:g} s of random audio: loss {loss.item():.4f}, "
          f"{len(grads)} gradient tensors, finite: {finite}, {time.time() - started:.1f} s")
    return 0 if finite and torch.isfinite(loss) else 1
