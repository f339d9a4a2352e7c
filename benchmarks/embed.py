"""Embedding benchmark: batches of clips of different lengths vs one batch per distinct length, in one run.

    python benchmarks/embed.py                        # 200 clips of 15-30 s, cnn and crnn (tiny), 3 repeats
    python benchmarks/embed.py --encoders crnn --clips 100 --repeats 5 --batch-size 16

On real data every clip has a different length. The baseline is the previous ``embed_waveforms``:
clips batched only with clips of exactly the same length, i.e. batch size 1 here (reimplemented below).
The new path is ``DualEncoder.embed_waveforms``: clips sorted by length and padded into shared batches
(for encoders that are ``batch_invariant``). Both see the same random clips (lengths uniform in
``--min-s``..``--max-s`` seconds at the model's rate); the two results are checked to agree within 1e-5.
Prints the median of ``--repeats`` timings per encoder and path; the last line is
``ratio: X``, the baseline's median time over the new path's, summed over the encoders (> 1: faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soundsift.data.dataset import length_grouped_batches  # noqa: E402
from soundsift.model import DualEncoder  # noqa: E402


@torch.no_grad()
def embed_one_length_at_a_time(model: DualEncoder, waveforms: list[np.ndarray], batch_size: int) -> np.ndarray:
    """The previous ``embed_waveforms``: batches only of clips of exactly the same length."""
    model.eval()
    out = np.zeros((len(waveforms), model.embed_dim), dtype=np.float32)
    for chunk in length_grouped_batches([len(w) for w in waveforms], batch_size):
        wav = torch.from_numpy(np.stack([waveforms[i] for i in chunk]))
        lengths = torch.full((len(chunk),), wav.shape[1], dtype=torch.long)
        out[chunk] = model.encode_audio(wav, lengths).float().numpy()
    return out


def timed(fn, repeats: int, *args) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="cnn,crnn", help="comma-separated audio encoders (tiny variants)")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--min-s", type=float, default=15.0)
    ap.add_argument("--max-s", type=float, default=30.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.clips} clips of {args.min_s:g}-{args.max_s:g} s, batch size {args.batch_size}, "
          f"median of {args.repeats}, {torch.get_num_threads()} torch threads")
    total_old = total_new = 0.0
    for name in args.encoders.split(","):
        torch.manual_seed(0)
        model = DualEncoder({"name": name, "size": "tiny"}, "tiny-bert", embed_dim=64).eval()
        rate = model.sample_rate
        rng = np.random.default_rng(0)
        sizes = rng.integers(int(args.min_s * rate), int(args.max_s * rate) + 1, args.clips)
        waves = [(0.1 * rng.standard_normal(int(n))).astype(np.float32) for n in sizes]
        model.embed_waveforms(waves[:2], 2)  # warm-up (allocator, oneDNN kernels)
        t_old, old = timed(embed_one_length_at_a_time, args.repeats, model, waves, args.batch_size)
        t_new, new = timed(model.embed_waveforms, args.repeats, waves, args.batch_size)
        diff = float(np.abs(old - new).max())
        if diff > 1e-5:
            raise SystemExit(f"{name}: batched embeddings differ from one-length-at-a-time by {diff:.3g}")
        audio_s = float(sizes.sum()) / rate
        print(f"{name:6s} one length at a time {t_old:7.2f} s ({audio_s / t_old:6.0f}x real time)   "
              f"batched {t_new:7.2f} s ({audio_s / t_new:6.0f}x real time)   speed-up {t_old / t_new:5.2f}   "
              f"max |diff| {diff:.1e}", flush=True)
        total_old += t_old
        total_new += t_new
    print(f"ratio: {total_old / total_new:.2f}")


if __name__ == "__main__":
    main()
