"""The Lightning pieces of training: the module (loss, optimiser, schedule), the validation callback and
the progress bar.

Both are module-level classes, importable and subclassable, and take what they use (nanoGPT's style):
the module a model (or its ``model`` section), the ``optim`` section and an :class:`Objective`; the
callback the validation split and two numbers. Stage 1 and stage 2 differ only in the objective.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from soundsift.atomic import atomic_write
from soundsift.config import Config, ModelConfig, OptimConfig
from soundsift.data.dataset import AudioStore
from soundsift.data.records import Problem, SplitData
from soundsift.model import DualEncoder
from soundsift.names import MAP_AT_10, MONITOR
from soundsift.training.embed import embed_split
from soundsift.training.metric import RetrievalMetrics
from soundsift.training.objective import Objective, Targets

LOSS_KEY = "soundsift_epoch_losses"  # the checkpoint entry of the current epoch's loss sums


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_schedule(optim: OptimConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """``step -> LR multiplier`` of an ``optim`` section: linear warm-up over ``warmup_epochs``, cosine
    decay to ``min_lr`` at the end of ``decay_epochs`` (default: all ``epochs``), then ``min_lr``
    (salsa's ``rampdown_stop``)."""
    warmup = int(round(float(optim.warmup_epochs) * steps_per_epoch))
    end = int(round(optim.decay_end * steps_per_epoch))
    ratio = optim.min_lr / optim.lr if optim.lr > 0 else 0.0
    return lambda step: warmup_cosine(step, warmup, end, ratio)


def configure_optimizer(model: DualEncoder, optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam(W) over the model's trainable parameters in three groups (audio, text, head), each at its
    own learning rate (``optim.lr_audio``... else ``optim.lr``)."""
    groups = []
    for name, params in (
        ("audio", model.audio.parameters()),
        ("text", model.text.parameters()),
        ("head", [*model.audio_proj.parameters(), *model.text_proj.parameters()]),
    ):
        params = [p for p in params if p.requires_grad]
        if params:
            groups.append({"name": name, "params": params, "lr": optim.lr_of(name)})
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay)


def student_similarity(audio: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``audio @ text.T`` in float32 whatever the autocast precision (bf16 would round it)."""
    with torch.autocast(device_type=audio.device.type, enabled=False):
        return audio.float() @ text.float().T


class RetrievalModule(L.LightningModule):
    """A DualEncoder trained on (audio, caption) batches with an :class:`Objective` (stage 1 or 2: the
    objective's teachers supply L_dist's targets) and the ``optim`` section's optimiser and schedule."""

    def __init__(self, model: DualEncoder | ModelConfig, optim: OptimConfig, objective: Objective) -> None:
        super().__init__()
        self.model = model if isinstance(model, DualEncoder) else DualEncoder.from_config(model.to_dict())
        self.optim, self.objective = optim, objective
        self.strict_loading = False  # frozen pretrained towers are not stored in checkpoints
        self.late_problems: set[Problem] = set()  # clips that failed to decode during training (replaced)
        self.loss_sums: dict[str, float] = {}  # this epoch's loss terms so far (kept in checkpoints)
        self.loss_steps = 0

    @classmethod
    def from_config(cls, config: Config, teachers: Targets | None = None) -> RetrievalModule:
        """The module of a whole config (``model``, ``optim``, ``loss``) with stage 2's ``teachers``
        (ConfigError when the loss distils and there are none)."""
        return cls(config.model, config.optim, Objective.from_config(config.loss, teachers))

    @property
    def teachers(self) -> Targets | None:
        """Stage 2's targets (the objective's)."""
        return self.objective.teachers

    def _gather(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Across processes, every rank sees the whole global batch (gradients flow back)."""
        if self.trainer.world_size <= 1:
            return tensors
        return tuple(self.all_gather(t, sync_grads=True).flatten(0, 1) for t in tensors)

    def similarities(self, audio: torch.Tensor, text: torch.Tensor, clip_index: torch.Tensor,
                     caption_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The student's ``audio @ text.T`` and the teachers' C_hat (None without distillation), both
        (n_audio, n_caption) float32 whatever the precision: under bf16 autocast they would be rounded
        to about 3 significant digits before the division by tau = 0.05."""
        return student_similarity(audio, text), self.objective.targets(clip_index, caption_index, self.device)

    def training_step(self, batch, batch_idx):
        for replaced in batch.problems:  # clips that failed to decode while the batch was made
            self.late_problems.add(replaced.problem)
        audio = self.model.encode_audio(batch.waveform, batch.lengths)
        text = self.model.encode_text(batch.texts)
        audio, text, clip_index, caption_index = self._gather(
            audio, text, batch.clip_index.to(self.device), batch.caption_index.to(self.device)
        )
        terms = self.objective(student_similarity(audio, text), clip_index, caption_index)
        loss = terms.pop("total")
        # of the global batch, the same on every rank
        self.last_losses: dict[str, float] = {k: float(v.detach()) for k, v in terms.items()}
        for key, value in terms.items():
            self.log(f"train/{key}", value, prog_bar=False)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.texts))
        for key, value in {"loss": float(loss.detach()), **self.last_losses}.items():
            self.loss_sums[key] = self.loss_sums.get(key, 0.0) + value
        self.loss_steps += 1
        return loss

    def take_epoch_losses(self) -> dict[str, float]:
        """The mean of each loss term over this epoch's steps; starts the next epoch's sums."""
        means = {k: v / self.loss_steps for k, v in self.loss_sums.items()} if self.loss_steps else {}
        self.loss_sums, self.loss_steps = {}, 0
        return means

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        if loader is not None and hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        optimizer = configure_optimizer(self.model, self.optim)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, int(self.trainer.max_epochs)))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(self.optim, per_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {"model." + k for k in self.model.trainable_state_dict()}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint[LOSS_KEY] = {"sums": dict(self.loss_sums), "steps": self.loss_steps}  # a mid-epoch resume

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(LOSS_KEY) or {}
        self.loss_sums, self.loss_steps = dict(state.get("sums", {})), int(state.get("steps", 0))


class ValidationCallback(L.Callback):
    """Embeds the validation split after every training epoch and logs retrieval metrics.

    It runs at train-epoch end (before ModelCheckpoint, which Lightning orders last), so embedding is
    the same deterministic path as evaluation and teacher estimation. With several processes each
    embeds its block of the clips and a RetrievalMetrics object gathers the blocks (not repeated on every rank). ``history``
    (validation metrics) and ``losses`` (the epoch's mean loss terms and learning rates) are kept in
    checkpoints, so a resumed run keeps them; rank 0 rewrites ``history.json`` (both, per epoch) in the
    run folder after every epoch.
    """

    def __init__(self, split: SplitData, store: AudioStore, max_seconds: float | None = None,
                 batch_size: int = 32, out_dir: str | Path | None = None) -> None:
        self.split, self.store, self.max_seconds, self.batch_size = split, store, max_seconds, batch_size
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.history: list[dict[str, float]] = []
        self.losses: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "losses": self.losses}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.losses = list(state_dict.get("losses", []))

    def write_history(self, path: Path) -> None:
        """``history.json``: per epoch, the training loss terms (means over the epoch's steps), the
        learning rate of each parameter group at the epoch's end, and the validation metrics."""
        val = {h["epoch"]: {k: v for k, v in h.items() if k != "epoch"} for h in self.history}
        epochs = [{**e, "val": val.get(e["epoch"], {})} for e in self.losses]
        text = json.dumps({"monitor": MONITOR, "epochs": epochs}, indent=1)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @staticmethod
    def shard(split: SplitData, rank: int, world: int) -> SplitData:
        """This rank's contiguous block of the split's clips (with their captions)."""
        per = -(-len(split.clips) // world)
        return SplitData(split.name, split.clips[rank * per:(rank + 1) * per], [])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        world, rank = trainer.world_size, trainer.global_rank
        part = self.shard(self.split, rank, world) if world > 1 else self.split
        emb = embed_split(pl_module.model, part, self.store, self.max_seconds, self.batch_size, progress=False)
        offset = rank * -(-len(self.split.clips) // world) if world > 1 else 0  # this block's first clip
        metric = RetrievalMetrics().to(pl_module.device)  # compute() gathers every rank's block
        metric.update(emb.audio, emb.captions, offset + torch.arange(emb.audio.shape[0]), emb.caption_clip + offset)
        metrics = metric.compute()
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        take = getattr(pl_module, "take_epoch_losses", dict)
        lrs = {g.get("name", str(i)): float(g["lr"]) for o in trainer.optimizers for i, g in enumerate(o.param_groups)}
        self.losses.append({"epoch": trainer.current_epoch, "steps": int(trainer.global_step), "train": take(),
                            "lr": lrs})
        if trainer.is_global_zero and self.out_dir is not None:
            self.write_history(self.out_dir / "history.json")
        for key, value in metrics.items():
            pl_module.log(f"val/{key}", value, prog_bar=key == MAP_AT_10, sync_dist=False)


def epoch_text(epoch: int, epochs: int | None) -> str:
    """``Epoch 2/2`` for the second (``epoch`` 1) of two: counted from 1, of the total. Lightning's own
    bars count from 0 (``Epoch 1/1`` or ``Epoch 1`` there)."""
    return f"Epoch {epoch + 1}/{epochs}" if epochs is not None and epochs > 0 else f"Epoch {epoch + 1}"


class EpochRichProgressBar(RichProgressBar):
    """Lightning's rich progress bar, epochs as :func:`epoch_text` writes them."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = epoch_text(current_epoch, self.trainer.max_epochs)
        return f"{text:{len(self.validation_description)}}"  # padded as Lightning pads it


class EpochTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar, epochs as :func:`epoch_text` writes them."""

    def on_train_epoch_start(self, trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(epoch_text(trainer.current_epoch, trainer.max_epochs))


def progress_bar() -> L.Callback:
    """The bar Lightning would choose (rich when it is installed, else tqdm), counting epochs from 1."""
    try:
        return EpochRichProgressBar()
    except ModuleNotFoundError:  # rich is not installed
        return EpochTQDMProgressBar()
