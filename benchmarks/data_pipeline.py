"""Data pipeline benchmark: start-up (readability scan) and training-crop throughput, old vs new, in one run.

    python benchmarks/data_pipeline.py                 # ClothoV2 size: 3839 clips of 15-30 s (~7.5 GB)
    python benchmarks/data_pipeline.py --clips 200     # smaller

Generates a ClothoV2-size development split in a temporary directory (mono 44.1 kHz, 16-bit, half WAV
and half FLAC, 15-30 s each) and measures, for the old code path (re-implemented here as the baseline:
the scan fully decodes and resamples every clip; an item fully decodes and resamples its clip, then
crops) and for soundsift's (the scan reads headers only; an item reads and resamples only its crop):
- start-up: the readability scan before the first batch can be made;
- clips/s delivered by a DataLoader (batch 16, 10-s crops at 32 kHz, one random caption per clip) with
  num_workers 0 and 2, and that figure per worker process.
Files are read from the page cache (they were just written), as on a machine whose data fits in RAM;
from a cold disk the gap grows further, since the old path reads every byte and the new one a window.
Medians over ``--repeats`` runs. The last line, ``ratio: X``, is the time to the end of the first epoch
(scan + one epoch with num_workers 0), old / new: X > 1 means the new code is faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soundsift.data.dataset import AudioStore, PairDataset, collate_pairs, crop, flatten_captions  # noqa: E402
from soundsift.data.records import Clip, SplitData  # noqa: E402

RATE_IN, RATE_OUT, MAX_SECONDS, BATCH = 44100, 32000, 10.0, 16


def generate(root: Path, n: int, seed: int) -> SplitData:
    """``n`` clips of 15-30 s: band-limited noise plus a few tones (FLAC compresses it like real audio)."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        length = int(rng.uniform(15, 30) * RATE_IN)
        t = np.arange(length) / RATE_IN
        x = np.convolve(rng.standard_normal(length), np.ones(8) / 8, mode="same") * 0.1
        for f in rng.uniform(100, 4000, 3):
            x += 0.1 * np.sin(2 * np.pi * f * t)
        path = root / f"clip_{i:05d}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, x.astype(np.float32), RATE_IN, subtype="PCM_16")
        clips.append(Clip(path.name, path, (f"caption {i} a", f"caption {i} b")))
    return SplitData("development", clips)


# ---- the old code path (soundsift before this change), kept here as the baseline ------------------

def old_load_audio(path: Path, sample_rate: int) -> np.ndarray:
    import soxr

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise ValueError(path)
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate).astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)


def old_readable(split: SplitData) -> SplitData:
    keep = []
    for clip in split.clips:
        try:
            old_load_audio(clip.path, RATE_OUT)
        except Exception:
            continue
        keep.append(clip)
    return SplitData(split.name, keep)


class OldPairDataset(torch.utils.data.Dataset):
    """One random caption per clip; full decode + resample, then the random crop (same rng as today)."""

    def __init__(self, split: SplitData, seed: int = 0) -> None:
        self.split, self.seed, self.epoch = split, seed, 0
        self.texts, _ = flatten_captions(split)
        self.first_caption = np.cumsum([0] + [len(c.captions) for c in split.clips])
        self.max_samples = int(MAX_SECONDS * RATE_OUT)

    def __len__(self) -> int:
        return len(self.split.clips)

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, self.epoch, i))
        cap_i = int(self.first_caption[i] + rng.integers(0, len(self.split.clips[i].captions)))
        wav = crop(old_load_audio(self.split.clips[i].path, RATE_OUT), self.max_samples, rng)
        return wav, self.texts[cap_i], i, cap_i


# ---- measurement ---------------------------------------------------------------------------------

def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def epoch_seconds(dataset, workers: int, repeats: int) -> float:
    def one_epoch():
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False, collate_fn=collate_pairs,
                                             num_workers=workers)
        assert sum(len(b.texts) for b in loader) == len(dataset)

    return median_time(one_epoch, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=3839, help="clips to generate (ClothoV2 development: 3839)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="0,2", help="DataLoader num_workers settings to measure")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="soundsift-bench-") as tmp:
        t0 = time.perf_counter()
        split = generate(Path(tmp), args.clips, args.seed)
        size = sum(c.path.stat().st_size for c in split.clips)
        print(f"{args.clips} clips, {size / 1e9:.2f} GB (half WAV, half FLAC, 44.1 kHz) written in "
              f"{time.perf_counter() - t0:.1f} s; 10-s crops at 32 kHz, batch {BATCH}, medians of {args.repeats}")

        store = AudioStore(RATE_OUT, preload=False)
        t_old_scan = median_time(lambda: old_readable(split), args.repeats)
        t_new_scan = median_time(lambda: store.readable(split, progress=False), args.repeats)
        assert len(store.readable(split, progress=False).clips) == len(old_readable(split).clips) == args.clips
        print(f"  start-up (readability scan)  old {t_old_scan:8.2f} s   new {t_new_scan:8.3f} s   "
              f"{t_old_scan / t_new_scan:7.1f}x faster")

        old_ds, new_ds = OldPairDataset(split, args.seed), PairDataset(split, store, "one", MAX_SECONDS, args.seed)
        for i in range(min(8, args.clips)):  # the same items: same caption, same crop
            (w_old, t_old, *_), (w_new, t_new, *_) = old_ds[i], new_ds[i]
            assert t_old == t_new and len(w_old) == len(w_new)
            assert float(np.abs(w_old - w_new).max()) < 1e-4

        epochs = {}
        for w in workers:
            e_old, e_new = epoch_seconds(old_ds, w, args.repeats), epoch_seconds(new_ds, w, args.repeats)
            epochs[w] = e_old, e_new
            per = max(1, w)
            print(f"  DataLoader num_workers={w}     old {args.clips / e_old:8.1f} clips/s "
                  f"({args.clips / e_old / per:6.1f} per process)   new {args.clips / e_new:8.1f} clips/s "
                  f"({args.clips / e_new / per:6.1f} per process)   {e_old / e_new:5.1f}x faster")

    e_old, e_new = epochs[0] if 0 in epochs else next(iter(epochs.values()))
    first_old, first_new = t_old_scan + e_old, t_new_scan + e_new
    print(f"  first epoch done (scan + epoch, num_workers={0 if 0 in epochs else workers[0]})  "
          f"old {first_old:.2f} s   new {first_new:.2f} s")
    # ratio: time from start to the end of the first epoch (scan + one epoch), old / new; > 1: new is faster
    print(f"ratio: {first_old / first_new:.2f}")


if __name__ == "__main__":
    main()
