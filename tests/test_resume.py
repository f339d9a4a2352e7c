"""Exact resume: a training run SIGKILLed at any moment and started again with the same command ends
with what the uninterrupted run ends with (data order, crops, RNG, optimiser and schedule restored);
checkpoints are written atomically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from soundsift.cli.main import main
from soundsift.training.resume import KEY, AtomicCheckpointIO
from soundsift.training.sampling import EpochSampler, epoch_permutation

# 40 training clips, one caption each per epoch, batches of 4: 10 steps an epoch, a checkpoint every 3
TINY = ["model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}", "model.embed_dim=16",
        "trainer.progress_bar=false", "optim.epochs=3", "optim.batch_size=4", "trainer.checkpoint_every_n_steps=3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(root)]) == 0
    return root


def command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "soundsift.cli.main", "-q", "train", "--config", "demo/stage1.yaml",
            f"data.root={data}", f"out_dir={out}", *TINY]


def train(data: Path, out: Path) -> None:
    run = subprocess.run(command(data, out), capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def outcome(out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """metrics.json without its timing, and the selected model's weights."""
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("seconds")
    return metrics, torch.load(out / "model.pt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same(a: Path, b: Path) -> None:
    (ma, wa), (mb, wb) = outcome(a), outcome(b)
    assert mb["val_history"] == ma["val_history"]
    assert mb == ma
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def kill_at_next_checkpoint(data: Path, out: Path) -> dict:
    """Start the run, SIGKILL it as soon as a new last.ckpt appears; returns that checkpoint's position."""
    last = out / "checkpoints" / "last.ckpt"
    before = last.stat().st_mtime_ns if last.exists() else None
    proc = subprocess.Popen(command(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if last.exists() and last.stat().st_mtime_ns != before:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)  # loadable: written atomically
    return {**checkpoint[KEY], "step": checkpoint["global_step"]}


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    train(data, out)
    return out


@pytest.mark.slow
def test_two_uninterrupted_runs_are_identical(data, uninterrupted, tmp_path):
    train(data, tmp_path / "again")
    assert_same(uninterrupted, tmp_path / "again")


@pytest.mark.slow
def test_killed_twice_mid_epoch_and_rerun_ends_as_the_uninterrupted_run(data, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    first = kill_at_next_checkpoint(data, out)
    assert first["epoch"] == 0 and 0 < first["batches"] < first["epoch_batches"]  # mid-epoch
    second = kill_at_next_checkpoint(data, out)  # the resumed run, killed at its first new checkpoint
    assert second["step"] > first["step"]
    train(data, out)
    assert_same(uninterrupted, out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_an_interrupted_checkpoint_write_leaves_the_previous_one(uninterrupted, tmp_path, monkeypatch):
    last = tmp_path / "last.ckpt"
    last.write_bytes((uninterrupted / "checkpoints" / "last.ckpt").read_bytes())
    before = last.read_bytes()

    def save_part_then_fail(obj, f, *args, **kwargs):
        f.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_part_then_fail)
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint(checkpoint, last)
    monkeypatch.undo()
    assert last.read_bytes() == before
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == checkpoint["global_step"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    AtomicCheckpointIO().save_checkpoint({"step": 1}, last)
    assert torch.load(last, weights_only=True) == {"step": 1}


def test_epoch_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    sampler = EpochSampler(10, batch_size=3, seed=4)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and first == list(sampler)
    assert first == epoch_permutation(10, 4, 0).tolist()
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and second == EpochSampler(10, 3, seed=4).indices(1)
    assert EpochSampler(10, 3, seed=5).indices(1) != second
    sampler.resume(1, batches=2)  # the first 2 batches of epoch 1 were trained before the kill
    assert list(sampler) == second[6:] and len(sampler) == 10
    assert list(sampler) == second  # the skip is used once
    sampler.resume(2, batches=1)
    sampler.set_epoch(3)  # another epoch than the one resumed: whole
    assert list(sampler) == EpochSampler(10, 3, seed=4).indices(3)


def test_the_epoch_is_split_between_processes_as_distributed_sampler_does(monkeypatch):
    from soundsift.training import sampling

    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(sampling, "_world", lambda rank=rank: (rank, 2))
        parts.append(EpochSampler(9, batch_size=2, seed=0).indices(0))
    order = epoch_permutation(9, 0, 0)
    assert len(parts[0]) == len(parts[1]) == 5
    assert parts[0] == order[0::2].tolist() and parts[1] == [*order[1::2].tolist(), int(order[0])]
    assert set(parts[0]) | set(parts[1]) == set(range(9)) and np.isin(order, parts[0] + parts[1]).all()
