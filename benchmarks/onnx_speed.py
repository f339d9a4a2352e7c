"""Audio tower speed under ONNX Runtime against torch on the CPU, same run: PaSST-S and LAION-CLAP's HTS-AT
audio tower at full size (random weights: the speed does not depend on them), the zero-shot model's
YAMNet and EfficientAT's MobileNetV3 at a released width (``mn40``: the paper's ``mn40_as_ext``, ``mn10``:
``mn10_as``; random weights, 10-s snippets as the paper's configs run it), float32 and int8; and what int8 does to the embeddings (cosine to the float32 export's) on real
recordings.

Each model embeds the same clips (``--clips`` of ``--seconds`` s of noise) ``--repeats`` times per runtime,
alternating; medians are printed as real-time factors. torch uses all cores (``torch.set_num_threads``),
ONNX Runtime its default (all cores). torch's time for the transformers towers includes their feature
extractor (numpy, outside torch); ONNX Runtime's includes the same features computed inside the graph.

LAION-CLAP's tower is built offline from transformers' ``ClapAudioConfig`` defaults with
``projection_dim=512``, which is the audio configuration laion/clap-htsat-unfused publishes (its
config.json sets only ``projection_dim`` 512 and fields transformers no longer reads), and the extractor of
its preprocessor_config.json (48 kHz, 64 mel bins 50-14000 Hz, hop 480, 1024-point FFT, 10-s windows,
``repeatpad``, ``rand_trunc``); its projection is the identity, as in the published model. ``--models ast``
(not in the default list) times AST at full size: transformers' ``ASTConfig`` and ``ASTFeatureExtractor``
defaults, the configuration of MIT/ast-finetuned-audioset-10-10-0.4593 (768-d, 12 layers, strides 10,
1024 frames of 128 mel bins, 16 kHz).

The int8 cosines use ``--real-files`` recordings spread evenly over the files of ``--real`` (sorted by name) (default: the
folder ``benchmarks/real_sounds.py`` lays out in its cache), at most ``--seconds`` s each; noise when
the folder is missing (said so).

    python benchmarks/onnx_speed.py [--models passt,zero-shot,laion-clap,mn40] [--mixed] [--clips 4] [--seconds 10] [--repeats 3]

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

#: laion/clap-htsat-unfused's preprocessor_config.json
CLAP_FEATURES = dict(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10, fft_window_size=1024,
                     frequency_min=50, frequency_max=14000, padding="repeatpad", truncation="rand_trunc")
MN = {"mn40": "mn40_as_ext", "mn10": "mn10_as"}


def clap_folder(root: Path) -> Path:
    """A CLAP folder (config and extractor, no weights) in laion/clap-htsat-unfused's configuration."""
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor

    folder = root / "clap-htsat-unfused-random"
    ClapConfig(audio_config=ClapAudioConfig().to_dict(), projection_dim=512).save_pretrained(folder)
    ClapFeatureExtractor(**CLAP_FEATURES).save_pretrained(folder)
    return folder


def build(name: str, root: Path):
    from soundsift.checkpoints import load_model
    from soundsift.model import DualEncoder

    if name == "zero-shot":
        return load_model("zero-shot", device="cpu")
    torch.manual_seed(0)
    if name == "laion-clap":
        audio = {"name": name, "model": str(clap_folder(root)), "pretrained": False}
        model = DualEncoder(audio, "tiny-bert", embed_dim=512, audio_projection="identity").eval()
    elif name in MN:
        audio = {"name": "mn", "variant": MN[name], "segment_seconds": 10.0, "pretrained": False}
        model = DualEncoder(audio, "tiny-bert", embed_dim=1024).eval()
    else:  # ast: config {} is ASTConfig's defaults (MIT/ast-finetuned-audioset-10-10-0.4593), not the tiny one
        audio = {"name": name, "pretrained": False, **({"config": {}} if name == "ast" else {})}
        model = DualEncoder(audio, "tiny-bert", embed_dim=1024).eval()
    model.identity = f"benchmark-{name}-random"
    return model


def timed(model, waves, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.embed_waveforms(waves, batch_size=len(waves))
        times.append(time.perf_counter() - t0)
    return times


def real_waves(folder: Path, count: int, seconds: float, rate: int) -> tuple[list[np.ndarray], str]:
    from soundsift.audio import load_audio

    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".wav", ".ogg", ".flac"))
    files = files[:: max(1, len(files) // max(1, count))][:count]  # spread over the folder's sources
    if not files:
        rng = np.random.default_rng(1)
        return [(0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32) for _ in range(count)], "noise"
    return [load_audio(p, rate)[: int(seconds * rate)] for p in files], f"{len(files)} recordings of {folder}"


def int8_effect(runs: dict, waves: list[np.ndarray]) -> str:
    """Cosine of each recording's int8 embedding to its float32 one, beside the cosines between different
    recordings (float32: the scale a random-weight tower spreads recordings over), and how often a
    recording's nearest other recording stays the same under int8."""
    a, b = (runs[k].embed_waveforms(waves, 8) for k in ("onnx", "onnx int8"))
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    same = (a * b).sum(1)
    sim_a, sim_b = a @ a.T, b @ b.T
    np.fill_diagonal(sim_a, -np.inf)
    np.fill_diagonal(sim_b, -np.inf)
    others = sim_a[np.isfinite(sim_a)]
    agree = float(np.mean(sim_a.argmax(1) == sim_b.argmax(1)))
    return (f"cosine int8 to float32 median {np.median(same):.4f} (min {same.min():.4f}); between different "
            f"recordings (float32) median {np.median(others):.4f} (max {others.max():.4f}); nearest other "
            f"recording unchanged for {agree:.0%}")


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="passt,zero-shot,laion-clap,mn40")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real", type=Path, help="folder of recordings for the int8 cosines "
                        "(default: benchmarks/real_sounds.py's folder in $SOUNDSIFT_CACHE or ~/.cache/soundsift)")
    parser.add_argument("--real-files", type=int, default=40, help="recordings for the int8 cosines, spread over "
                        "the folder sorted by name")
    parser.add_argument("--mixed", action="store_true",
                        help="clips of different lengths, evenly from 0.3 to 1.7 times --seconds (MN runs "
                             "clips shorter than a snippet one by one under ONNX Runtime)")
    args = parser.parse_args()
    cache = Path(os.environ.get("SOUNDSIFT_CACHE") or Path.home() / ".cache" / "soundsift")
    real = args.real or cache / "real_sounds" / "audio"
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from soundsift.export.onnx import export_onnx
    from soundsift.export.runtime import OnnxModel

    first = None
    mixed = " (mixed lengths)" if args.mixed else ""
    print(f"audio towers on {args.clips} x {args.seconds:g} s{mixed}, {os.cpu_count()} cores, median of {args.repeats} "
          f"(same run, alternating); load average {os.getloadavg()[0]:.1f} at the start:")
    for name in args.models.split(","):
        tmp_root = tempfile.TemporaryDirectory()
        model = build(name, Path(tmp_root.name))
        rng = np.random.default_rng(0)
        scale = np.linspace(0.3, 1.7, args.clips) if args.mixed and args.clips > 1 else np.ones(args.clips)
        waves = [(0.1 * rng.standard_normal(int(s * args.seconds * model.sample_rate))).astype(np.float32)
                 for s in scale]
        with tmp_root as tmp:
            runs = {"torch": model}
            for quantize in (None, "int8"):
                folder = Path(tmp) / str(quantize)
                export_onnx(model, folder, quantize=quantize)
                runs["onnx int8" if quantize else "onnx"] = OnnxModel(folder)
            for run in runs.values():  # warm-up
                run.embed_waveforms(waves[:1], 1)
            times: dict[str, list[float]] = {k: [] for k in (*runs, "features")}
            extract = getattr(model.audio, "features_of", None)  # LAION-CLAP: the extractor alone
            for _ in range(args.repeats):
                for label, run in runs.items():
                    times[label] += timed(run, waves, 1)
                if extract is not None:
                    t0 = time.perf_counter()
                    extract(waves)
                    times["features"].append(time.perf_counter() - t0)
            recordings, what = real_waves(real, args.real_files, args.seconds, model.sample_rate)
            effect = int8_effect(runs, recordings)
        audio = sum(len(w) for w in waves) / model.sample_rate
        base = float(np.median(times["torch"]))
        for label, t in times.items():
            if label == "features":
                continue
            med = float(np.median(t))
            print(f"  {name:<10} {label:<10} {med:7.2f} s  {audio / med:6.1f}x real time  ({base / med:.2f}x torch)")
        if times["features"]:
            med = float(np.median(times["features"]))
            print(f"  {name:<10} of torch's time, the transformers feature extractor (numpy): {med:.2f} s")
        print(f"  {name:<10} int8 on {what}: {effect}")
        first = first if first is not None else base / float(np.median(times["onnx"]))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"ratio: {first:.2f}")
    return first


if __name__ == "__main__":
    sys.exit(0 if main() > 0 else 1)
