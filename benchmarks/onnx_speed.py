"""Audio tower speed under ONNX Runtime against torch on the CPU, same run: PaSST-S at full size (random
weights: the speed does not depend on them), the zero-shot model's YAMNet, and EfficientAT's MobileNetV3 at
a released width (``mn40``: the paper's ``mn40_as_ext``, ``mn10``: ``mn10_as``; random weights, 10-s
snippets as the paper's configs run it), float32 and int8.

Each model embeds the same clips (``--clips`` of ``--seconds`` s of noise) ``--repeats`` times per runtime,
alternating; medians are printed as real-time factors. torch uses all cores (``torch.set_num_threads``),
ONNX Runtime its default (all cores). LAION-CLAP's HTSAT tower is not here: its front end is a transformers
feature extractor outside torch, so it does not export yet (``soundsift export onnx`` says so).

    python benchmarks/onnx_speed.py [--models passt,zero-shot,mn40] [--clips 4] [--seconds 10] [--repeats 3]

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

MN = {"mn40": "mn40_as_ext", "mn10": "mn10_as"}


def build(name: str):
    from soundsift.checkpoints import load_model
    from soundsift.model import DualEncoder

    if name == "zero-shot":
        return load_model("zero-shot", device="cpu")
    torch.manual_seed(0)
    spec = {"name": name, "pretrained": False}
    if name in MN:
        spec = {**spec, "name": "mn", "variant": MN[name], "segment_seconds": 10.0}
    model = DualEncoder(spec, "tiny-bert", embed_dim=1024).eval()
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
    parser.add_argument("--models", default="passt,zero-shot,mn40")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixed", action="store_true",
                        help="clips of different lengths, evenly from 0.3 to 1.7 times --seconds (MN runs "
                             "clips shorter than a snippet one by one under ONNX Runtime)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from soundsift.export.onnx import export_onnx
    from soundsift.export.runtime import OnnxModel

    first = None
    mixed = " (mixed lengths)" if args.mixed else ""
    print(f"audio towers on {args.clips} x {args.seconds:g} s{mixed}, {os.cpu_count()} cores, median of {args.repeats} "
          f"(same run, alternating); load average {os.getloadavg()[0]:.1f} at the start:")
    for name in args.models.split(","):
        model = build(name)
        rng = np.random.default_rng(0)
        scale = np.linspace(0.3, 1.7, args.clips) if args.mixed and args.clips > 1 else np.ones(args.clips)
        waves = [(0.1 * rng.standard_normal(int(s * args.seconds * model.sample_rate))).astype(np.float32)
                 for s in scale]
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
        audio = sum(len(w) for w in waves) / model.sample_rate
        base = float(np.median(times["torch"]))
        for label, t in times.items():
            med = float(np.median(t))
            print(f"  {name:<10} {label:<10} {med:7.2f} s  {audio / med:6.1f}x real time  ({base / med:.2f}x torch)")
        first = first if first is not None else base / float(np.median(times["onnx"]))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"ratio: {first:.2f}")
    return first


if __name__ == "__main__":
    sys.exit(0 if main() > 0 else 1)
