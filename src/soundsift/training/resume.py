"""Exact resume: a run killed at any moment and started again ends as the uninterrupted run ends.

Three Lightning pieces, used by ``training.run.fit``:

- ``LastCheckpoint`` writes ``checkpoints/last.ckpt`` at every epoch end (after validation and the
  best-model checkpoint, so it holds both) and every ``every_n_steps`` optimiser steps within an epoch
  (never on an epoch's last batch: the epoch-end checkpoint follows at once, and resuming from a
  last-batch checkpoint would skip that epoch's validation). Lightning 2.6's own ``save_last`` only
  refreshes last.ckpt when the monitored score improved.
- ``ResumeState`` stores where in its epoch the checkpoint was taken and the torch (CPU and CUDA),
  numpy and python RNG states; on load it points the sampler and the dataset at that epoch and batch
  (before Lightning creates the data iterator), and restores the RNG states just before the first
  batch after the resume, so dropout and augmentation draw what they drew in the uninterrupted run.
  Lightning itself, resuming mid-epoch with a plain DataLoader, keeps its batch counter but restarts
  the iterator, so it would train the epoch's first batches again and stop early, in a new order.
- ``AtomicCheckpointIO`` writes a checkpoint to a temporary file beside the target, flushes it to
  disk and renames it over the target: a kill while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from soundsift.atomic import atomic_write

#: The checkpoint entry ``ResumeState`` writes.
KEY = "soundsift_resume"


def rng_states() -> dict[str, Any]:
    """The process's RNG states, as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` returned (CUDA states only on as many devices as were saved)."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeState(L.Callback):
    """Saves and restores the position in the epoch and the RNG states (see the module docstring).

    ``sampler`` needs ``resume(epoch, batches)`` (EpochSampler), ``dataset`` ``set_epoch(epoch)``
    (PairDataset). With several processes rank 0's RNG states are saved and every rank restores them:
    ranks seeded alike draw alike.
    """

    def __init__(self, sampler: Any, dataset: Any) -> None:
        self.sampler, self.dataset = sampler, dataset
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = {
            "epoch": int(trainer.current_epoch),
            "batches": int(trainer.fit_loop.epoch_loop.batch_progress.current.processed),
            "epoch_batches": int(trainer.num_training_batches),
            "rng": rng_states(),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(KEY)
        if state is None:  # a checkpoint written before exact resume: Lightning's behaviour
            return
        epoch, batches = state["epoch"], state["batches"]
        if batches >= state["epoch_batches"]:  # taken at the end of an epoch: the next one starts whole
            epoch, batches = epoch + 1, 0
        if hasattr(self.sampler, "resume"):
            self.sampler.resume(epoch, batches)
        if hasattr(self.dataset, "set_epoch"):  # on a mid-epoch resume Lightning skips on_train_epoch_start
            self.dataset.set_epoch(epoch)
        self._pending = state["rng"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


class LastCheckpoint(Checkpoint):
    """``path`` rewritten at every epoch end and every ``every_n_steps`` steps (0: epoch ends only)."""

    def __init__(self, path: str | Path, every_n_steps: int = 0) -> None:
        self.path, self.every_n_steps = str(path), int(every_n_steps)
        self._saved_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._saved_step
                and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic: temporary file, fsync, rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())

        atomic_write(path, write)


def remove_partial_checkpoints(folder: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a kill interrupted; returns them."""
    leftovers = sorted(Path(folder).glob(".*.ckpt.*.tmp")) if Path(folder).is_dir() else []
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers
