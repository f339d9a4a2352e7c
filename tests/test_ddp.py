"""Distributed training computes what one process computes on the whole batch.

Two CPU processes (gloo, Lightning's ``ddp_spawn``), each given half of a fixed batch, must give the
same L_sup, the same L_dist and the same parameter update as one process given the whole batch: the
embeddings, clip and caption indices are gathered across ranks (so repeated-audio positives are found
across ranks and the teachers' C_hat covers the global batch), and the gradients that flow back
through the gather, averaged by DDP, equal the single-process gradients.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from soundsift.config import Config, load_config
from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble
from soundsift.data.dataset import PairBatch
from soundsift.training.module import RetrievalModule, ValidationCallback

pytestmark = pytest.mark.slow

N_CLIPS, N_CAPTIONS, DIM = 6, 12, 8
#: (clip, caption) pairs of the fixed batch; clips 0 and 3 appear twice, once on each rank's half
PAIRS = [(0, 0), (1, 2), (3, 6), (4, 8), (0, 1), (2, 4), (3, 7), (5, 10)]


def make_config(stage: int) -> Config:
    overrides = [
        # no randomness in the forward pass (dropout, patchout), LayerNorm only: the step is a
        # deterministic function of the batch
        "model.audio_encoder={name: patchformer, size: tiny, patchout_freq: 0, patchout_time: 0, sample_rate: 8000}",
        "model.text_encoder={name: tiny-bert, dropout: 0.0}", "model.embed_dim=16",
        # Adam's eps well above float noise: a parameter whose true gradient is 0 (the key bias of an
        # attention layer) must not turn rounding noise into a full-size step
        "optim.lr=1.0e-2", "optim.eps=1.0e-2", "optim.warmup_epochs=0", "optim.epochs=1", "optim.batch_size=8",
    ]
    if stage == 2:
        overrides += ["loss.loss_weight=0.5", "loss.distill_weight=1.0", "teachers=[unused]"]
    return load_config("demo/stage1.yaml", overrides)


def fixed_batch() -> PairBatch:
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(8000 + 800 * c).astype(np.float32) * 0.1 for c in range(N_CLIPS)]
    texts = [f"caption {j} of a sound, number {j % 5}" for j in range(N_CAPTIONS)]
    longest = max(len(waves[c]) for c, _ in PAIRS)
    waveform = torch.zeros(len(PAIRS), longest)
    for i, (c, _) in enumerate(PAIRS):
        waveform[i, : len(waves[c])] = torch.from_numpy(waves[c])
    return PairBatch(waveform, torch.tensor([len(waves[c]) for c, _ in PAIRS]), [texts[j] for _, j in PAIRS],
                     torch.tensor([c for c, _ in PAIRS]), torch.tensor([j for _, j in PAIRS]))


def teachers() -> TeacherEnsemble:
    gen = torch.Generator().manual_seed(1)
    made = []
    for _ in range(2):
        made.append(TeacherEmbeddings(
            clip_ids=[f"c{i}" for i in range(N_CLIPS)], audio=torch.randn(N_CLIPS, DIM, generator=gen),
            caption_texts=[f"t{j}" for j in range(N_CAPTIONS)],
            caption_clip=torch.arange(N_CAPTIONS) // 2, captions=torch.randn(N_CAPTIONS, DIM, generator=gen)))
    return TeacherEnsemble(made)


def half(batch: PairBatch, rank: int, world: int) -> PairBatch:
    n = len(batch.texts) // world
    s = slice(rank * n, (rank + 1) * n)
    longest = int(batch.lengths[s].max())
    return PairBatch(batch.waveform[s, :longest], batch.lengths[s], batch.texts[s], batch.clip_index[s],
                     batch.caption_index[s])


class OneBatch(torch.utils.data.IterableDataset):
    """The fixed batch, or this rank's half of it under distributed training."""

    def __iter__(self):
        batch = fixed_batch()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            batch = half(batch, torch.distributed.get_rank(), torch.distributed.get_world_size())
        yield batch


class Record(L.Callback):
    """The losses, the gradients DDP averaged, and the parameters after the step (rank 0)."""

    def __init__(self, out: Path) -> None:
        self.out, self.grads = out, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {k: p.grad.detach().clone() for k, p in pl_module.model.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
            torch.save({"losses": dict(pl_module.last_losses), "state": state, "grads": self.grads}, self.out)


class NoGather(RetrievalModule):
    """Each rank keeps its own half (what training would compute without the gather)."""

    def _gather(self, *tensors):
        return tensors


def one_step(stage: int, devices: int, out: Path, initial: dict, cls=RetrievalModule) -> dict:
    config = make_config(stage)
    module = cls.from_config(config, teachers() if stage == 2 else None)
    module.model.load_state_dict(initial)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_epochs=1,
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[Record(out)], use_distributed_sampler=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(OneBatch(), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return torch.load(out, weights_only=True)


def close(x: torch.Tensor, y: torch.Tensor, rel: float, floor: float) -> bool:
    """Max |x - y| within ``rel`` of y's largest magnitude (plus ``floor`` for tensors that are ~0)."""
    return float((x.double() - y.double()).abs().max()) <= rel * float(y.abs().max()) + floor


@pytest.fixture(scope="module")
def initial() -> dict:
    torch.manual_seed(0)
    return copy.deepcopy(RetrievalModule.from_config(make_config(2), teachers()).model.state_dict())


@pytest.mark.parametrize("stage", [1, 2])
def test_ddp_equivalence_two_processes_match_one(stage, initial, tmp_path):
    single = one_step(stage, 1, tmp_path / "single.pt", initial)
    double = one_step(stage, 2, tmp_path / "double.pt", initial)
    assert set(single["losses"]) == ({"L_sup"} if stage == 1 else {"L_sup", "L_dist"})
    for name, value in single["losses"].items():
        assert double["losses"][name] == pytest.approx(value, rel=1e-5), name
    assert set(double["grads"]) == set(single["grads"]) and len(single["grads"]) > 10
    for key, grad in single["grads"].items():  # float rounding relative to the tensor's scale
        assert close(double["grads"][key], grad, 1e-5, 1e-9), key
    moved = 0
    for key, before in initial.items():
        a, b = single["state"][key], double["state"][key]
        assert close(b - before, a - before, 1e-4, 1e-8), key  # the same update
        moved += int(not torch.equal(a, before))
    assert moved > 10  # the step really updated the parameters


def test_ddp_equivalence_needs_the_gather(initial, tmp_path):
    """Without gathering, each rank would see only its half: the losses differ (the test can fail)."""
    single = one_step(1, 1, tmp_path / "single.pt", initial)
    double = one_step(1, 2, tmp_path / "double.pt", initial, cls=NoGather)
    assert double["losses"]["L_sup"] != pytest.approx(single["losses"]["L_sup"], rel=1e-3)


class CountingValidation(ValidationCallback):
    """Records, per rank, how many clips the rank embedded and the metrics it logged."""

    def __init__(self, split, store, config, out: Path) -> None:
        super().__init__(split, store, config.data.max_seconds, config.trainer.eval_batch_size, config.out_dir)
        self.out = out

    def shard(self, split, rank, world):
        part = super().shard(split, rank, world)
        (self.out / f"rank{rank}.txt").write_text(str(len(part.clips)))
        return part

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.is_global_zero:
            torch.save(self.history[-1], self.out / "metrics.pt")


def validate(devices: int, out: Path, initial: dict, data: Path) -> dict:
    from soundsift.data.dataset import AudioStore
    from soundsift.data.readers import read_split

    out.mkdir()
    config = make_config(1)
    store = AudioStore(8000, preload=False)
    split = store.readable(read_split("clotho", data, "validation"), progress=False)
    module = RetrievalModule.from_config(config)
    module.model.load_state_dict(initial)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_epochs=1,
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[CountingValidation(split, store, config, out)],
        use_distributed_sampler=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(OneBatch(), batch_size=None))
    return {"metrics": torch.load(out / "metrics.pt", weights_only=True), "n_clips": len(split.clips),
            "per_rank": sorted(int(p.read_text()) for p in out.glob("rank*.txt"))}


def test_ddp_validation_is_split_across_ranks_and_gathered(initial, tmp_path):
    from soundsift.cli.main import main

    data = tmp_path / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(data)]) == 0
    single = validate(1, tmp_path / "one", initial, data)
    double = validate(2, tmp_path / "two", initial, data)
    n = single["n_clips"]
    assert single["per_rank"] == [] and double["per_rank"] == sorted([(n + 1) // 2, n - (n + 1) // 2])
    for key, value in single["metrics"].items():
        assert double["metrics"][key] == pytest.approx(value, abs=1e-6), key
