"""The cost of stage 2: a training step with M = 3 teachers against a stage-1 step, same batch and model.

Stage 2's only extra work is gathering the teachers' rows of the batch and M small (B x B) products
(C_hat), plus a second loss on the same similarity matrix; the target is a step-time ratio <= 1.03.
Both steps run the real ``RetrievalModule.training_step`` inside a Lightning trainer (forward,
backward, optimiser step) on one fixed batch, alternating stage 1 and stage 2 runs so machine noise
hits both alike; medians of the per-step times are compared.

Second part: DCASE metrics at 100k captions x 20k clips (D = 1024), run in a fresh process so its peak
resident memory is its own; target < 2 GB.

    .venv/bin/python benchmarks/stage2_overhead.py [--batch 64] [--seconds 10] [--steps 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import lightning as L
import torch

from soundsift.config import load_config
from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble
from soundsift.data.dataset import PairBatch
from soundsift.training.module import RetrievalModule

N_CLIPS, N_CAPTIONS, TEACHER_DIM = 4000, 20000, 1024


def make_batch(size: int, seconds: float, sample_rate: int) -> PairBatch:
    gen = torch.Generator().manual_seed(0)
    samples = int(seconds * sample_rate)
    return PairBatch(
        waveform=torch.randn(size, samples, generator=gen) * 0.1, lengths=torch.full((size,), samples),
        texts=[f"a sound number {i} with some words in it" for i in range(size)],
        clip_index=torch.randint(0, N_CLIPS, (size,), generator=gen),
        caption_index=torch.randint(0, N_CAPTIONS, (size,), generator=gen),
    )


def teachers(m: int) -> TeacherEnsemble:
    gen = torch.Generator().manual_seed(1)
    return TeacherEnsemble([TeacherEmbeddings(
        clip_ids=[f"c{i}" for i in range(N_CLIPS)], audio=torch.randn(N_CLIPS, TEACHER_DIM, generator=gen),
        caption_texts=[f"t{j}" for j in range(N_CAPTIONS)], caption_clip=torch.arange(N_CAPTIONS) % N_CLIPS,
        captions=torch.randn(N_CAPTIONS, TEACHER_DIM, generator=gen)) for _ in range(m)])


class Steps(torch.utils.data.IterableDataset):
    def __init__(self, batch: PairBatch, n: int) -> None:
        self.batch, self.n = batch, n

    def __iter__(self):
        for _ in range(self.n):
            yield self.batch


class Timer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self.start)


def step_times(stage: int, batch: PairBatch, steps: int, ensemble: TeacherEnsemble) -> list[float]:
    overrides = ["optim.epochs=1"]
    if stage == 2:
        overrides += ["loss.loss_weight=1", "loss.distill_weight=1", "teachers=[unused]"]
    torch.manual_seed(0)
    module = RetrievalModule.from_config(load_config("demo/stage1.yaml", overrides), ensemble if stage == 2 else None)
    timer = Timer()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Steps(batch, steps), batch_size=None))
    return timer.times[2:]  # the first steps warm up allocators and caches


METRICS_CODE = """
import json, resource, time, torch
from soundsift.metrics import text_to_audio_metrics_from_embeddings
gen = torch.Generator().manual_seed(0)
audio = torch.nn.functional.normalize(torch.randn(20000, 1024, generator=gen), dim=1)
captions = torch.nn.functional.normalize(torch.randn(100000, 1024, generator=gen), dim=1)
of = torch.arange(100000) % 20000
t = time.perf_counter()
text_to_audio_metrics_from_embeddings(audio, captions, of)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    batch, ensemble = make_batch(args.batch, args.seconds, 16000), teachers(3)
    one, two = [], []
    for _ in range(args.rounds):  # alternate, so slow phases of the machine hit both
        one += step_times(1, batch, args.steps, ensemble)
        two += step_times(2, batch, args.steps, ensemble)
    s1, s2 = statistics.median(one), statistics.median(two)
    print(f"demo model (cnn + frozen MiniLM), batch {args.batch} x {args.seconds:g} s, {len(one)} steps each")
    print(f"  stage 1 step  median {1000 * s1:8.1f} ms")
    print(f"  stage 2 step  median {1000 * s2:8.1f} ms   (M=3 teachers, {TEACHER_DIM}-d, L_sup + L_dist)")
    print(f"  stage 2 / stage 1 step time: {s2 / s1:.3f} (target <= 1.03)")
    out = subprocess.run([sys.executable, "-c", METRICS_CODE], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"metrics at 100k captions x 20k clips (D=1024): {m['seconds']:.2f} s, peak RSS {m['peak_mb']:.0f} MB "
          "of the whole process, the 490 MB of embeddings included (target < 2048 MB)")
    print(f"ratio: {s2 / s1:.3f}")


if __name__ == "__main__":
    main()
