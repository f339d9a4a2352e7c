"""Training entry point (PyTorch Lightning). Stage 1 and stage 2 are the same code with other configs.

loss = loss_weight * L_sup + distill_weight * L_dist, where L_dist's targets come from an ensemble of
teacher embedding files (stage 2). Validation mAP@10 selects the checkpoint; the test split is
evaluated at the end. A run directory holds: config.yaml (resolved), checkpoints/ (Lightning, for
resuming), model.pt (the selected model, soundsift format), metrics.json, problems.txt (skipped data).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from soundsift.atomic import atomic_write
from soundsift.config import dump_config
from soundsift.data.dataset import AudioStore, PairDataset, collate_pairs
from soundsift.data.records import SplitData
from soundsift.model import DualEncoder, load_model, read_model_file, save_model

log = logging.getLogger(__name__)
MONITOR = "val/mAP@10"


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _lightning():
    import lightning

    return lightning


def build_module(config: dict[str, Any], teachers=None):
    """The LightningModule for ``config`` (class defined lazily: importing Lightning is slow)."""
    L = _lightning()
    from soundsift.losses import contrastive_loss, distillation_loss, positives_from_ids

    class RetrievalModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.model = DualEncoder.from_config(config["model"])
            self.teachers = teachers
            self.strict_loading = False  # frozen pretrained towers are not stored in checkpoints

        def _gather(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """Across processes, every rank sees the whole global batch (gradients flow back)."""
            if self.trainer.world_size <= 1:
                return tensors
            return tuple(self.all_gather(t, sync_grads=True).flatten(0, 1) for t in tensors)

        def training_step(self, batch, batch_idx):
            loss_cfg = self.config["loss"]
            audio = self.model.encode_audio(batch.waveform, batch.lengths)
            text = self.model.encode_text(batch.texts)
            audio, text, clip_index, caption_index = self._gather(
                audio, text, batch.clip_index.to(self.device), batch.caption_index.to(self.device)
            )
            similarity = audio @ text.T  # (n_audio, n_caption)
            tau = float(loss_cfg["tau"])
            loss = similarity.new_zeros(())
            if float(loss_cfg["loss_weight"]):
                sup = contrastive_loss(similarity, positives_from_ids(clip_index, clip_index), tau)
                loss = loss + float(loss_cfg["loss_weight"]) * sup
                self.log("train/L_sup", sup, prog_bar=False)
            if float(loss_cfg["distill_weight"]):
                target = self.teachers.batch_similarity(clip_index, caption_index, device=self.device)
                dist = distillation_loss(similarity, target, tau)
                loss = loss + float(loss_cfg["distill_weight"]) * dist
                self.log("train/L_dist", dist, prog_bar=False)
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.texts))
            return loss

        def on_train_epoch_start(self) -> None:
            loader = self.trainer.train_dataloader
            if loader is not None and hasattr(loader.dataset, "set_epoch"):
                loader.dataset.set_epoch(self.current_epoch)

        def configure_optimizers(self):
            opt = self.config["optim"]
            base = float(opt["lr"])
            groups = []
            for name, params, lr in (
                ("audio", self.model.audio.parameters(), opt["lr_audio"]),
                ("text", self.model.text.parameters(), opt["lr_text"]),
                ("head", [*self.model.audio_proj.parameters(), *self.model.text_proj.parameters()], opt["lr_head"]),
            ):
                params = [p for p in params if p.requires_grad]
                if params:
                    groups.append({"name": name, "params": params, "lr": float(lr if lr is not None else base)})
            cls = torch.optim.AdamW if opt["optimizer"] == "adamw" else torch.optim.Adam
            optimizer = cls(
                groups, betas=tuple(opt["betas"]), eps=float(opt["eps"]), weight_decay=float(opt["weight_decay"])
            )
            total = int(self.trainer.estimated_stepping_batches)
            per_epoch = max(1, total // max(1, int(self.trainer.max_epochs)))
            warmup = int(round(float(opt["warmup_epochs"]) * per_epoch))
            ratio = float(opt["min_lr"]) / base if base > 0 else 0.0
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: warmup_cosine(step, warmup, total, ratio)
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            keep = {"model." + k for k in self.model.trainable_state_dict()}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    return RetrievalModule()


def build_validation_callback(split: SplitData, store: AudioStore, config: dict[str, Any]):
    """Embeds the validation split after every training epoch and logs retrieval metrics.

    It runs as a callback at train-epoch end (before ModelCheckpoint, which Lightning orders last), so
    embedding is the same deterministic path as evaluation and teacher estimation.
    """
    L = _lightning()
    from soundsift.embed import embed_split
    from soundsift.metrics import text_to_audio_metrics_from_embeddings

    class ValidationCallback(L.Callback):
        def __init__(self) -> None:
            self.history: list[dict[str, float]] = []

        def state_dict(self) -> dict[str, Any]:  # kept in checkpoints, so a resumed run keeps it
            return {"history": self.history}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.history = list(state_dict.get("history", []))

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            emb = embed_split(
                pl_module.model, split, store, config["data"]["max_seconds"],
                config["trainer"]["eval_batch_size"], progress=False,
            )
            metrics = text_to_audio_metrics_from_embeddings(emb.audio, emb.captions, emb.caption_clip)
            self.history.append({"epoch": trainer.current_epoch, **metrics})
            for key, value in metrics.items():
                pl_module.log(f"val/{key}", value, prog_bar=key == "mAP@10", sync_dist=False)

    return ValidationCallback()


@dataclass
class RunResult:
    out_dir: Path
    model_path: Path
    metrics: dict[str, Any]


def read_splits(config: dict[str, Any], sample_rate: int, progress: bool) -> tuple[dict[str, SplitData], AudioStore]:
    """The train/val/test splits of ``config`` with unreadable audio dropped (and reported).

    ``data.extra_train`` datasets are appended to the training split (clip ids prefixed by dataset).
    """
    from soundsift.data.readers import combine, read_split

    data = config["data"]
    if not data["root"]:
        raise ValueError("data.root is not set: point it at the dataset folder (data.root=PATH)")
    store = AudioStore(sample_rate, data["preload"])
    splits = {}
    for role in ("train", "val", "test"):
        name = data[f"{role}_split"]
        if name:
            split = read_split(data["format"], data["root"], name)
            if role == "train" and data["extra_train"]:
                extra = [read_split(e["format"], e["root"], e.get("split")) for e in data["extra_train"]]
                split = combine([split, *extra], name="train")
            splits[role] = store.readable(split, progress=progress)
    return splits, store


def write_problems(path: Path, splits: dict[str, SplitData]) -> int:
    lines = [f"[{role}] {p}" for role, s in splits.items() for p in s.problems]
    if lines:
        atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
        log.warning("%d data problems skipped; see %s", len(lines), path)
    return len(lines)


def load_teachers(paths: list[str], split: SplitData):
    from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble
    from soundsift.data.dataset import flatten_captions

    teachers = [TeacherEmbeddings.load(p) for p in paths]
    texts, _ = flatten_captions(split)
    for t in teachers:
        t.check_alignment([c.clip_id for c in split.clips], texts)
    return TeacherEnsemble(teachers)


def resolve_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """Stage 2 may leave ``model`` at its defaults: it then takes the stage-1 model's config."""
    if config["init_from"]:
        init_cfg = read_model_file(config["init_from"])["config"]
        if init_cfg != config["model"]:
            log.info("model config taken from %s (it differs from the config file's)", config["init_from"])
        config = {**config, "model": init_cfg}
    return config


def train(
    config: dict[str, Any], progress: bool = True, splits=None, store: AudioStore | None = None
) -> RunResult:
    """Run one training job described by ``config``; ``splits``/``store`` let callers share loaded data."""
    L = _lightning()
    from soundsift.embed import embed_split
    from soundsift.metrics import text_to_audio_metrics_from_embeddings

    started = time.time()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner/tips per run
    # frozen pretrained towers stay in eval mode on purpose (no dropout, fixed statistics)
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")  # Lightning vs newer torch
    warnings.filterwarnings("ignore", message=r".*all_gather is deprecated.*")
    # validation metrics are computed on the whole split by every rank: identical, nothing to reduce
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")
    config = resolve_model_config(config)
    out_dir = Path(config["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, out_dir / "config.yaml")
    L.seed_everything(int(config["seed"]), workers=True, verbose=False)

    module = build_module(config)
    if splits is None or store is None:
        splits, store = read_splits(config, module.model.sample_rate, progress)
    write_problems(out_dir / "problems.txt", splits)
    train_split = splits["train"]
    if not train_split.clips:
        raise ValueError(f"no readable training clips in {config['data']['root']}")
    if config["teachers"]:
        module.teachers = load_teachers(config["teachers"], train_split)
    if config["init_from"]:
        init = read_model_file(config["init_from"])
        module.model.load_trainable_state_dict(init["state_dict"], source=str(config["init_from"]))
    text_encoder = module.model.text
    if hasattr(text_encoder, "precompute") and getattr(text_encoder, "freeze", False):
        texts = [t for s in splits.values() for c in s.clips for t in c.captions]
        text_encoder.precompute(texts, progress=progress)

    data = config["data"]
    dataset = PairDataset(train_split, store, data["captions_per_epoch"], data["max_seconds"], int(config["seed"]))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=int(config["optim"]["batch_size"]),
        shuffle=True,
        drop_last=len(dataset) > int(config["optim"]["batch_size"]),
        collate_fn=collate_pairs,
        num_workers=int(data["num_workers"]),  # workers are re-created each epoch, so they see set_epoch
    )
    validation = build_validation_callback(splits["val"], store, config)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out_dir / "checkpoints", monitor=MONITOR, mode="max", save_top_k=1, save_last=True,
        save_on_train_epoch_end=True, filename="best", enable_version_counter=False,
    )
    tr = config["trainer"]
    trainer = L.Trainer(
        max_epochs=int(config["optim"]["epochs"]),
        accelerator=tr["accelerator"], devices=tr["devices"], num_nodes=int(tr["num_nodes"]),
        strategy=tr["strategy"], precision=tr["precision"],
        callbacks=[validation, checkpoint],
        logger=L.pytorch.loggers.CSVLogger(out_dir, name="logs", version=""),
        enable_progress_bar=bool(tr["progress_bar"]) and progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(int(tr["log_every_n_steps"]), len(loader))),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=config["optim"]["grad_clip"],
    )
    last = out_dir / "checkpoints" / "last.ckpt"
    trainer.fit(module, train_dataloaders=loader, ckpt_path=str(last) if last.is_file() else None)
    if not trainer.is_global_zero:  # with several processes, rank 0 alone writes the results
        return RunResult(out_dir, out_dir / "model.pt", {})

    if checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.model.load_trainable_state_dict({k[len("model."):]: v for k, v in state.items()})
    model_path = save_model(module.model.cpu(), out_dir / "model.pt", meta={"run": str(out_dir)})
    metrics: dict[str, Any] = {"best_epoch": None, "val": None, "val_history": validation.history}
    if validation.history:
        best = max(validation.history, key=lambda h: h["mAP@10"])
        metrics["best_epoch"], metrics["val"] = best["epoch"], {k: v for k, v in best.items() if k != "epoch"}
    if "test" in splits and splits["test"].clips:
        model = load_model(model_path)  # evaluate exactly what was saved, on the GPU when there is one
        emb = embed_split(model, splits["test"], store, data["max_seconds"], tr["eval_batch_size"], progress)
        metrics["test"] = text_to_audio_metrics_from_embeddings(emb.audio, emb.captions, emb.caption_clip)
    metrics["seconds"] = round(time.time() - started, 2)
    text = json.dumps(metrics, indent=2)
    atomic_write(out_dir / "metrics.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return RunResult(out_dir, model_path, metrics)
