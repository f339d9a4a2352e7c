"""Audio tower speed under ONNX Runtime against torch on the CPU, same run: PaSST-S at full size (random
weights: the speed does not depend on them) and the zero-shot model's YAMNet, float32 and int8.

Each model embeds the same clips (``--clips`` of ``--seconds`` s of noise) ``--repeats`` times per runtime,
alternating; medians are printed as real-time factors. torch uses all cores (``torch.set_num_threads``),
ONNX Runtime its default (all cores). LAION-CLAP's HTSAT tower is not here: its front end is a transformers
feature extractor outside torch, so it does not export yet (``soundsift export onnx`` says so).

    python benchmarks/onnx_speed.py [--models passt,zero-shot] [--clips 4] [--seconds 10] [--repeats 3]

Last line ``ratio: X``: torch's time over ONNX Runtime's (float32) for the first model.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build(name: str):
    from soundsift.checkpoints import load_model
    from soundsift.model import DualEncoder

    if name == "zero-shot":
        return load_model("zero-shot", device="cpu")
    torch.manual_seed(0)
    model = DualEncoder({"name": name, "pretrained": False}, "tiny-bert", embed_dim=1024).eval()
    model.identity = f"benchmark-{name}-random"
    return model


def timed(model, waves, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.embed_waveforms(waves, batch_size=len(waves))
        times.append(time.perf_counter() - t0)
    return times


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="passt,zero-shot")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from soundsift.export.onnx import export_onnx
    from soundsift.export.runtime import OnnxModel

    first = None
    print(f"audio towers on {args.clips} x {args.seconds:g} s, {os.cpu_count()} cores, median of {args.repeats} "
          "(same run, alternating):")
    for name in args.models.split(","):
        model = build(name)
        rng = np.random.default_rng(0)
        waves = [(0.1 * rng.standard_normal(int(args.seconds * model.sample_rate))).astype(np.float32)
                 for _ in range(args.clips)]
        with tempfile.TemporaryDirectory() as tmp:
            runs = {"torch": model}
            for quantize in (None, "int8"):
                folder = Path(tmp) / str(quantize)
                export_onnx(model, folder, quantize=quantize)
                runs["onnx int8" if quantize else "onnx"] = OnnxModel(folder)
            for run in runs.values():  # warm-up
                run.embed_waveforms(waves[:1], 1)
            times: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(args.repeats):
                for label, run in runs.items():
                    times[label] += timed(run, waves, 1)
        audio = args.clips * args.seconds
        base = float(np.median(times["torch"]))
        for label, t in times.items():
            med = float(np.median(t))
            print(f"  {name:<10} {label:<10} {med:7.2f} s  {audio / med:6.1f}x real time  ({base / med:.2f}x torch)")
        first = first if first is not None else base / float(np.median(times["onnx"]))
    print(f"ratio: {first:.2f}")
    return first


if __name__ == "__main__":
    sys.exit(0 if main() > 0 else 1)
