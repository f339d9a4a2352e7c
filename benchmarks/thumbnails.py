"""Thumbnail drawing time per file (``search.thumbnails.make_thumbnail``) against the implementation it
replaced (every sample of the 384 frames gathered through an index array, masked with ``np.where`` and
cleaned with ``nan_to_num``), on generated noise of several durations, alternating, in the same run. The
two draw the same thumbnails (``tests/test_thumbnails.py``; checked here too).

    python benchmarks/thumbnails.py [--repeats 30] [--warmup 50]

The first calls of a process can be dominated by page faults on fresh arrays (the memory allocator has
not settled yet), so each size is timed after ``--warmup`` untimed calls of each.

Last line ``ratio: X``: the earlier implementation's median time over the current one's (5-s clips).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from soundsift.search import thumbnails
from soundsift.search.thumbnails import _THUMB_FFT, _THUMB_FRAMES, make_thumbnail


def earlier_frames(x: np.ndarray, width: int) -> np.ndarray:
    """The frames as the earlier implementation cut them (the rest of the drawing is unchanged)."""
    n_fft, cols = _THUMB_FFT, width * _THUMB_FRAMES
    centres = ((np.arange(cols) + 0.5) * len(x) / cols).astype(np.int64)
    idx = centres[:, None] + np.arange(-(n_fft // 2), n_fft - n_fft // 2)[None, :]
    inside = (idx >= 0) & (idx < len(x))
    return np.nan_to_num(np.where(inside, x[np.clip(idx, 0, len(x) - 1)], 0.0), nan=0.0, posinf=0.0, neginf=0.0)


def earlier_thumbnail(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """``make_thumbnail`` with the earlier frame cutting (and its window computed per call, as it was)."""
    saved_frames, saved_window = thumbnails._frames, thumbnails._window
    thumbnails._frames = lambda x, starts, n_fft: earlier_frames(x, thumbnails.THUMB_WIDTH)
    thumbnails._window = lambda n_fft: np.hanning(n_fft).astype(np.float32)
    try:
        return make_thumbnail(wave, sample_rate)
    finally:
        thumbnails._frames, thumbnails._window = saved_frames, saved_window


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls of each before timing")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"thumbnail per file, median of {args.repeats} (alternating); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    ratio = 0.0
    for seconds in (0.5, 5.0, 60.0):
        x = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        assert np.array_equal(earlier_thumbnail(x, 16000), make_thumbnail(x, 16000))
        for _ in range(args.warmup):  # the allocator settles (fresh arrays' page faults dominate at first)
            earlier_thumbnail(x, 16000)
            make_thumbnail(x, 16000)
        times: dict[str, list[float]] = {"earlier": [], "current": []}
        for _ in range(args.repeats):
            for name, draw in (("earlier", earlier_thumbnail), ("current", make_thumbnail)):
                t0 = time.perf_counter()
                draw(x, 16000)
                times[name].append(time.perf_counter() - t0)
        old, new = (float(np.median(times[k])) * 1000 for k in ("earlier", "current"))
        print(f"  {seconds:5.1f} s of 16 kHz audio: earlier {old:6.2f} ms, current {new:6.2f} ms ({old / new:.1f}x)")
        if seconds == 5.0:
            ratio = old / new
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    sys.exit(0 if main() > 0 else 1)
