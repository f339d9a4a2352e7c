"""Text-to-audio metrics at ClothoV2-evaluation size: soundsift vs the per-audio loop baseline.

The baseline fills the similarity matrix one audio at a time in Python and ranks each query by
sorting (the reference implementation's way). Both run in this process on the same random unit
vectors; the script prints medians of several repeats and the speed ratio.

    .venv/bin/python benchmarks/metrics.py [--audios 1045] [--captions-per-audio 5] [--dim 1024]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from soundsift.metrics import text_to_audio_metrics, text_to_audio_metrics_from_embeddings


def baseline(audio: torch.Tensor, captions: torch.Tensor, audio_of_caption: torch.Tensor) -> dict[str, float]:
    similarity = torch.empty(len(audio), len(captions))
    for i in range(len(audio)):  # one row per audio, as the reference code does
        similarity[i] = captions @ audio[i]
    order = torch.argsort(similarity, dim=0, descending=True)  # (n_audio, n_caption)
    ranks = (order == audio_of_caption[None, :]).float().argmax(0) + 1
    return {"mAP@10": float(torch.where(ranks <= 10, 1.0 / ranks, torch.zeros(1)).mean()),
            **{f"R@{k}": float((ranks <= k).float().mean()) for k in (1, 5, 10)}}


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--audios", type=int, default=1045)
    p.add_argument("--captions-per-audio", type=int, default=5)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    audio = torch.nn.functional.normalize(torch.randn(args.audios, args.dim, generator=g), dim=1)
    audio_of_caption = torch.arange(args.audios).repeat_interleave(args.captions_per_audio)
    noise = torch.randn(len(audio_of_caption), args.dim, generator=g)
    captions = torch.nn.functional.normalize(audio[audio_of_caption] + 25.0 * noise / args.dim**0.5, dim=1)

    t_base, m_base = timed(lambda: baseline(audio, captions, audio_of_caption), args.repeats)
    t_emb, m_emb = timed(lambda: text_to_audio_metrics_from_embeddings(audio, captions, audio_of_caption),
                         args.repeats)
    t_matmul, sim = timed(lambda: audio @ captions.T, args.repeats)
    t_rank, m_sim = timed(lambda: text_to_audio_metrics(sim, audio_of_caption), args.repeats)
    tol = 2.0 / len(captions)  # a float-rounding tie may flip one query between two matrix products
    for key in m_base:
        assert abs(m_base[key] - m_emb[key]) <= tol and abs(m_emb[key] - m_sim[key]) <= tol, key
    print(f"{len(captions)} captions x {args.audios} audios, D={args.dim}, torch threads {torch.get_num_threads()}")
    print(f"  baseline (per-audio loop + sort)          {1000 * t_base:8.1f} ms")
    print(f"  soundsift from embeddings (chunked)       {1000 * t_emb:8.1f} ms   {t_base / t_emb:5.1f}x faster")
    print(f"    of which: the matrix product alone      {1000 * t_matmul:8.1f} ms")
    print(f"    ranks + metrics from a given matrix     {1000 * t_rank:8.1f} ms")
    print(f"  metrics agree: {', '.join(f'{k} {v:.4f}' for k, v in m_emb.items())}")


if __name__ == "__main__":
    main()
