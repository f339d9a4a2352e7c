"""Samples/s and peak GPU memory of training steps, stage 1 and stage 2 (M = 3), for a paper config.

Random weights (no download), a fixed batch of ``--batch`` 10-s clips, the config's precision
(``bf16-mixed`` in configs/paper), the real ``RetrievalModule.training_step`` (forward, backward,
optimiser step) inside a Lightning trainer. On a machine without a GPU, ``--tiny`` runs the same code
at test size on the CPU (the CPU part of scripts/gpu_check.sh).

    python scripts/gpu_throughput.py [--config paper/table1-passt-stage1.yaml] [--batch 64] [--steps 10] [--tiny]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from stage2_overhead import Steps, Timer, make_batch, teachers  # noqa: E402

from soundsift.config import load_config  # noqa: E402
from soundsift.encoders.registry import random_weights  # noqa: E402
from soundsift.training.module import RetrievalModule  # noqa: E402


def run(config: dict, stage: int, batch, steps: int, accelerator: str) -> tuple[float, float]:
    if stage == 2:
        config = {**config, "teachers": ["unused"], "loss": {**config["loss"], "loss_weight": 0.0, "distill_weight": 1.0}}
    module = RetrievalModule(config)
    if stage == 2:
        module.teachers = teachers(3)
    timer = Timer()
    precision = config["trainer"]["precision"] if accelerator == "gpu" else "32-true"
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=steps, max_epochs=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0)
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Steps(batch, steps), batch_size=None))
    step = sorted(timer.times[2:])[len(timer.times[2:]) // 2] if len(timer.times) > 2 else timer.times[-1]
    peak = torch.cuda.max_memory_allocated() / 2**30 if accelerator == "gpu" else float("nan")
    return len(batch.texts) / step, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="paper/table1-passt-stage1.yaml")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="test-size models on the CPU")
    args = parser.parse_args()
    overrides = ["optim.epochs=1", "optim.decay_epochs=null"]
    if args.tiny:
        overrides += ["model.audio_encoder={name: passt, size: tiny, pretrained: false}",
                      "model.text_encoder={name: tiny-bert}", "model.embed_dim=16"]
    config = load_config(args.config, overrides)
    model = config["model"]
    model["audio_encoder"] = random_weights(model["audio_encoder"])
    model["text_encoder"] = random_weights(model["text_encoder"])
    accelerator = "gpu" if torch.cuda.is_available() and not args.tiny else "cpu"
    batch = make_batch(args.batch if not args.tiny else 4, 10.0 if not args.tiny else 2.0, 32000)
    print(f"{args.config}: {'tiny, ' if args.tiny else ''}{accelerator}, batch {len(batch.texts)}, "
          f"precision {config['trainer']['precision'] if accelerator == 'gpu' else '32-true'}")
    for stage in (1, 2):
        started = time.time()
        rate, peak = run(config, stage, batch, args.steps, accelerator)
        print(f"  stage {stage}: {rate:8.1f} samples/s, peak GPU memory {peak:.2f} GiB ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
