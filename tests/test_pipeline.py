"""Smoke run of the whole method through the CLI: synth -> stage 1 -> teachers -> stage 2 -> evaluate."""

import csv
import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from soundsift.cli.main import main

pytestmark = pytest.mark.slow

TINY = [
    "model.audio_encoder={name: cnn, size: tiny}",
    "model.text_encoder={name: tiny-bert}",
    "model.embed_dim=16",
    "optim.epochs=2",
    "optim.batch_size=16",
    "trainer.progress_bar=false",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main(["-q", "synth", "--preset", "tiny", "--seed", "0", "--out", str(root)]) == 0
    return root


def test_stage1_teachers_stage2_evaluate(data, tmp_path, capsys):
    s1 = tmp_path / "stage1"
    rc = main(["-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={s1}", *TINY])
    assert rc == 0
    metrics = json.loads((s1 / "metrics.json").read_text())
    assert len(metrics["val_history"]) == 2
    assert set(metrics["test"]) == {"mAP@10", "R@1", "R@5", "R@10"}
    assert 0 <= metrics["test"]["R@1"] <= metrics["test"]["R@5"] <= metrics["test"]["R@10"] <= 1
    assert (s1 / "config.yaml").is_file() and (s1 / "model.pt").is_file()
    assert (s1 / "checkpoints" / "last.ckpt").is_file()

    teacher = tmp_path / "t.safetensors"
    assert main(["-q", "teachers", "--model", str(s1 / "model.pt"), "--data-root", str(data), "--out", str(teacher)]) == 0
    assert teacher.is_file()

    s2 = tmp_path / "stage2"
    rc = main([
        "-q", "train", "--config", "demo/stage2.yaml", f"data.root={data}", f"out_dir={s2}",
        f"init_from={s1 / 'model.pt'}", f"teachers=['{teacher}', '{teacher}']", "optim.epochs=1",
        "trainer.progress_bar=false",
    ])
    assert rc == 0
    m2 = json.loads((s2 / "metrics.json").read_text())
    assert len(m2["val_history"]) == 1 and "test" in m2

    capsys.readouterr()
    sub = tmp_path / "submission.csv"
    rc = main(["-q", "evaluate", "--model", str(s2 / "model.pt"), "--data-root", str(data), "--submission", str(sub)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text_to_audio"]["R@10"] >= result["text_to_audio"]["R@1"]
    with open(sub, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["caption"] + [f"file_name_{i}" for i in range(1, 11)]
    assert len(rows) == 1 + result["n_captions"]


def test_rerun_resumes_from_last_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    args = ["-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={out}", *TINY]
    assert main(args) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert main(args) == 2  # a finished run is never silently replaced
    assert main([*args, "--resume"]) == 0  # finds last.ckpt at max_epochs: no new epoch, same selection
    second = json.loads((out / "metrics.json").read_text())
    assert second["val_history"] == first["val_history"]
    assert second["test"] == pytest.approx(first["test"])


def test_teachers_for_another_dataset_are_refused(data, tmp_path, capsys):
    s1 = tmp_path / "s1"
    assert main(["-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={s1}", *TINY]) == 0
    teacher = tmp_path / "val.safetensors"
    assert main(["-q", "teachers", "--model", str(s1 / "model.pt"), "--data-root", str(data),
                 "--split", "validation", "--out", str(teacher)]) == 0
    capsys.readouterr()
    rc = main(["-q", "train", "--config", "demo/stage2.yaml", f"data.root={data}", f"out_dir={tmp_path / 's2'}",
               f"init_from={s1 / 'model.pt'}", f"teachers=['{teacher}']", "trainer.progress_bar=false"])
    assert rc == 2
    assert "val.safetensors" in capsys.readouterr().err


def test_two_process_training_gathers_the_global_batch(data, tmp_path):
    """DDP on the CPU (gloo), launched as users do: both ranks train, rank 0 alone writes results."""
    out = tmp_path / "ddp"
    exe = Path(sys.executable).parent / "soundsift"
    args = [str(exe), "-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={out}",
            *TINY, "optim.epochs=1", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["val_history"]) == 1 and "test" in metrics
    assert run.stdout.count('"model"') == 1


def bar_text(bar) -> str:
    """The training bar's description: rich's task, or tqdm's (which ends in ': ')."""
    if hasattr(bar, "train_progress_bar_id"):
        return next(t.description for t in bar.progress.tasks if t.id == bar.train_progress_bar_id).strip()
    return bar.train_progress_bar.desc.removesuffix(": ")


@pytest.mark.parametrize("kind", ["rich", "tqdm"])
def test_the_progress_bar_counts_epochs_from_one_of_the_total(kind, tmp_path):
    import lightning as L
    import torch

    from soundsift.training.module import EpochRichProgressBar, EpochTQDMProgressBar, progress_bar

    if kind == "rich":
        pytest.importorskip("rich")
    assert isinstance(progress_bar(), EpochRichProgressBar if find_spec("rich") else EpochTQDMProgressBar)

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - batch).pow(2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen = []

    class Look(L.Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            seen.append(bar_text(trainer.progress_bar_callback))

    bar = EpochRichProgressBar() if kind == "rich" else EpochTQDMProgressBar()
    trainer = L.Trainer(max_epochs=2, callbacks=[bar, Look()], accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Tiny(), torch.utils.data.DataLoader(torch.ones(4, 1), batch_size=2))
    assert seen == ["Epoch 1/2", "Epoch 2/2"]  # Lightning's own: "Epoch 0/1", "Epoch 1/1" (rich), "Epoch 1"
