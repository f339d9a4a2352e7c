"""The model stage of an index build alone, with the zero-shot model under ONNX Runtime: windows embedded
each on its own (before issue 19) against windows pooled from the file's own patches, and the audio
graphs' threads (count, spinning) and patches per graph run.

Real sounds: the library of ``index_speed.py`` (``--minutes`` of the same packages, same order), decoded
to 16 kHz once, untimed; then ``search.embedding.embed_with_windows`` (2 s / 1 s windows, batches of 16
files, as ``index build``) for each variant, alternating, ``--repeats`` times; medians. Each variant has
its own ``OnnxModel`` (its own sessions), warmed up on 5 files first.

    python benchmarks/patch_windows.py [--minutes 10] [--repeats 3]

Last line ``ratio: X``: the windows-alone time over the pooled windows' time, both at the default threads
and spinning.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generalise_data import default_cache, fetch  # noqa: E402
from index_speed import lay_out  # noqa: E402

#: name -> (threads (None: ONNX Runtime's default), spinning, patches per run, window rule)
VARIANTS = {
    "windows alone, default threads, spinning, 64 patches per run (before)": (None, True, 64, "alone"),
    "pooled, default threads, spinning, 16 per run": (None, True, 16, "inside"),
    "pooled, default threads, no spinning, 16 per run (default)": (None, False, 16, "inside"),
    "pooled, 1 thread, no spinning, 16 per run": (1, False, 16, "inside"),
    "pooled, default threads, no spinning, 64 per run": (None, False, 64, "inside"),
    "pooled, default threads, no spinning, 256 per run": (None, False, 256, "inside"),
}


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of audio (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (default 3)")
    args = parser.parse_args(argv)
    from soundsift.audio import load_audio
    from soundsift.checkpoints.runtime import load_for_runtime
    from soundsift.export.runtime import OnnxModel
    from soundsift.search.embedding import embed_with_windows

    cache = default_cache()
    fetch(cache)
    with tempfile.TemporaryDirectory() as tmp:
        files, seconds = lay_out(cache, args.minutes, Path(tmp) / "lib")
        waves = [load_audio(p, 16000) for p in sorted((Path(tmp) / "lib").rglob("*")) if p.is_symlink()]
    waves = [w if w.ndim == 1 else w.mean(0) for w in waves]
    folder = load_for_runtime("zero-shot", "onnx").folder
    print(f"{files} files, {seconds / 60:.1f} min of audio; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    models, times = {}, {name: [] for name in VARIANTS}
    for name, (threads, spinning, batch, rule) in VARIANTS.items():
        model = OnnxModel(folder, threads=threads)
        model.AUDIO_SPINNING, model.PATCH_BATCH = spinning, batch  # this instance's sessions and runs
        embed_with_windows(model, waves[:5], 16, 2.0, 1.0, rule=rule)
        models[name] = model
    for _ in range(max(1, args.repeats)):
        for name, (_, _, _, rule) in VARIANTS.items():
            t0 = time.perf_counter()
            embed_with_windows(models[name], waves, 16, 2.0, 1.0, rule=rule)
            times[name].append(time.perf_counter() - t0)
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:<70} median {median:6.2f} s ({', '.join(f'{t:.2f}' for t in runs)}), "
              f"{seconds / median:5.0f}x real time")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    ratio = statistics.median(times[list(VARIANTS)[0]]) / statistics.median(times[list(VARIANTS)[2]])
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
