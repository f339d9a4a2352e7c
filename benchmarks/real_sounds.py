"""Real-recordings retrieval benchmark: real sounds from Debian packages, queried by their plain descriptions.

Sources (downloaded with ``apt-get download`` into the cache, extracted with ``dpkg-deb -x``, never
committed):
- ``tuxpaint-stamps-default``: each stamp's sound effect (``NAME.ogg``/``.wav``) with its English
  description (first line of ``NAME.txt``, e.g. "An electric kettle."); spoken descriptions
  (``*_desc*``), translations and the symbols (letters, digits, faces and coins, which are speech) are dropped;
- ``lmms-common``: LMMS's drum, instrument, effect and misc samples, described from their file names;
- ``sonic-pi-samples``: Sonic Pi's samples whose names say what they are, described from the names.
Files that are digital silence are dropped. Sounds that share a description keep only the first (each query has one relevant sound: its own).

Every query's relevant item is its own sound; DCASE mAP@10, R@1, R@10 are computed from the ranks that
``soundsift.search`` returns (indexes built with ``build_index``, queried with ``load_searcher``), for the
zero-shot model, a model trained on the generated demo benchmark (``--model PATH``, or one trained here
with ``--train-demo``), and a random ranking. Items are split by a hash of their name into a development
half (``dev``: choose the zero-shot variant there, ``--sweep``) and a test half (``test``: report it).

    python benchmarks/real_sounds.py [--cache DIR] [--model demo.pt | --train-demo] [--sweep] [--speed] [--runtimes]

``--runtimes`` adds the zero-shot model run by ONNX Runtime (``--runtime onnx``), float and int8.

Ends with ``ratio: X`` (zero-shot mAP@10 over random, on all items).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ZERO = "zero-shot (YAMNet classes + MiniLM)"
PACKAGES = ("tuxpaint-stamps-default", "lmms-common", "sonic-pi-samples")

# lmms-common: file stem (digits dropped) -> description, from the file names
LMMS = {
    "drums/bassdrum": "a bass drum hit", "drums/bassdrum_acoustic": "an acoustic bass drum hit",
    "drums/clap": "a hand clap", "drums/crash": "a crash cymbal", "drums/hihat_closed": "a closed hi-hat",
    "drums/hihat_opened": "an open hi-hat", "drums/hihat_foot_pedal": "a hi-hat foot pedal",
    "drums/kick": "a kick drum", "drums/kick_hiphop": "a hip hop kick drum", "drums/ride": "a ride cymbal",
    "drums/rim": "a rimshot", "drums/shaker": "a shaker", "drums/sidestick": "a drum side stick",
    "drums/snare": "a snare drum", "drums/snare_acoustic": "an acoustic snare drum", "drums/tom": "a tom drum",
    "drums/tom_low": "a low tom drum", "drums/tom_hi": "a high tom drum", "drums/wood": "a wood block",
    "drums/snare_electro": "an electronic snare drum",
    "instruments/cello": "a cello", "instruments/church_organ": "a church organ",
    "instruments/bassslap": "a slap bass guitar", "instruments/steel_guitar": "a steel string guitar",
    "instruments/steel_guitar_heavy_distorted": "a heavily distorted electric guitar",
    "instruments/trumpet": "a trumpet", "instruments/flute": "a flute",
    "instruments/violin_fingered": "a violin", "instruments/violin_pizzicato": "a violin played pizzicato",
    "instruments/piano": "a piano", "instruments/e_organ": "an electric organ",
    "instruments/e_piano_accord": "an electric piano chord", "instruments/harpsichord": "a harpsichord",
    "misc/applause": "applause", "misc/breath": "breathing", "misc/raving_crowd": "a cheering crowd",
    "misc/metronome": "a metronome ticking", "misc/snaph": "finger snapping",
    "effects/explode": "an explosion", "effects/scratch": "a record scratch", "effects/wind_chimes": "wind chimes",
    "latin/latin_guitar": "a latin acoustic guitar", "latin/latin_brass": "a latin brass section",
    "stringsnpads/strings": "a string section", "stringsnpads/chorus": "a choir singing",
    "beats/jungle": "a jungle drum beat", "beats/house_loop": "a house music drum loop",
}
# sonic-pi-samples: file stem -> description, from the file names
SONIC_PI = {
    "ambi_choir": "a choir", "ambi_piano": "a piano", "ambi_glass_rub": "a rubbed wine glass",
    "ambi_soft_buzz": "a soft buzzing", "bd_808": "an 808 bass drum", "drum_cowbell": "a cowbell",
    "drum_cymbal_open": "an open cymbal", "drum_cymbal_pedal": "a pedal hi-hat", "drum_roll": "a drum roll",
    "drum_snare_hard": "a hard snare drum hit", "drum_splash_hard": "a splash cymbal",
    "drum_tom_lo_hard": "a low tom drum hit", "drum_heavy_kick": "a heavy kick drum",
    "elec_triangle": "an electronic triangle", "elec_beep": "a beep", "guit_e_slide": "an electric guitar slide",
    "guit_harmonics": "guitar harmonics", "loop_amen": "the amen drum break", "loop_tabla": "a tabla loop",
    "loop_industrial": "an industrial loop", "loop_3d_printer": "a 3d printer running",
    "misc_burp": "a burp", "misc_crow": "a crow cawing", "perc_bell": "a bell", "perc_door": "a door slam",
    "perc_snap": "a finger snap", "perc_swoosh": "a swoosh", "perc_till": "a cash register",
    "tabla_na": "a tabla hit", "vinyl_hiss": "vinyl record hiss", "vinyl_scratch": "a vinyl scratch",
    "vinyl_rewind": "a tape rewind", "mehackit_phone1": "a phone ringing", "mehackit_robot1": "a robot voice",
}
AUDIO_EXT = (".ogg", ".wav", ".flac")


def default_cache() -> Path:
    root = os.environ.get("SOUNDSIFT_CACHE") or Path.home() / ".cache" / "soundsift"
    return Path(root) / "real_sounds"


def fetch(cache: Path, packages=PACKAGES) -> dict[str, Path]:
    """Download and extract the Debian ``packages`` (once); returns package -> extracted root."""
    debs, out = cache / "debs", {}
    debs.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        root = cache / "x" / pkg
        if not (root / ".done").is_file():
            found = sorted(debs.glob(f"{pkg}_*.deb"))
            if not found:
                subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                found = sorted(debs.glob(f"{pkg}_*.deb"))
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
            (root / ".done").touch()
        out[pkg] = root
    return out


def _only_speech(text: str) -> bool:
    words = re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()
    return len(words) == 0 or (len(words) == 1 and len(words[0]) == 1)  # a digit or a letter


def collect(roots: dict[str, Path]) -> list[tuple[Path, str, str]]:
    """(audio file, description, item name) of every usable sound, one per description."""
    items: list[tuple[Path, str, str]] = []
    stamps = roots["tuxpaint-stamps-default"] / "usr/share/tuxpaint/stamps"
    for path in sorted(stamps.rglob("*")):
        if path.suffix not in AUDIO_EXT or "_desc" in path.stem or re.search(r"_[a-z]{2}(_[A-Z]{2})?$", path.stem):
            continue
        rel = path.relative_to(stamps)
        txt = path.with_suffix(".txt")
        if rel.parts[0] == "symbols" or "dreydl" in rel.stem or not txt.is_file():
            continue  # letters, digits, faces, coins, the dreidel's letters: speech
        first = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
        if "=" in first or _only_speech(first):
            continue
        items.append((path, first.rstrip("."), "tuxpaint/" + "-".join(rel.with_suffix("").parts)))
    lmms = roots["lmms-common"] / "usr/share/lmms/samples"
    for path in sorted(lmms.rglob("*")):
        key = re.sub(r"\d+$", "", str(path.relative_to(lmms).with_suffix("")))
        if path.suffix in AUDIO_EXT and key in LMMS:
            items.append((path, LMMS[key], "lmms/" + str(path.relative_to(lmms).with_suffix("")).replace("/", "-")))
    spi = roots["sonic-pi-samples"] / "usr/share/sonic-pi/samples"
    for stem, text in SONIC_PI.items():
        path = spi / f"{stem}.flac"
        if path.is_file():
            items.append((path, text, f"sonic-pi/{stem}"))
    import soundfile

    seen, unique = set(), []
    for path, text, name in items:
        try:
            wave, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
        except Exception:  # a few packaged files do not decode (e.g. an .ogg that is a broken WAV)
            continue
        if not np.abs(wave).max() > 1e-4:  # a few stamps' sounds are digital silence: nothing to find
            continue
        key = re.sub(r"[^a-z0-9 ]", "", text.lower()).removeprefix("a ").removeprefix("an ").strip()
        if key not in seen:
            seen.add(key)
            unique.append((path, text, name))
    return unique


def split_of(name: str) -> str:
    return "dev" if int(hashlib.sha1(name.encode()).hexdigest(), 16) % 2 == 0 else "test"


def lay_out(cache: Path, items) -> Path:
    """A flat folder of the sounds (symlinks) for ``build_index``; file name = item name."""
    folder = cache / "audio"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path, _, name in items:
        (folder / (name.replace("/", "__") + path.suffix)).symlink_to(path.resolve())
    return folder


def open_built(folder: Path, model, model_path, work: Path):
    """An index of ``folder`` built with ``build_index`` (default windows), opened with ``load_searcher``."""
    from soundsift.search.build import build_index
    from soundsift.search.index import load_searcher

    out = work / "index"
    shutil.rmtree(out, ignore_errors=True)
    build_index(folder, out, model, model_path=None, progress=False)
    return load_searcher(out, model_path=model_path)


def runtime_rows(folder: Path, items, work: Path, torch_model) -> tuple[dict, list[str]]:
    """The zero-shot model run by ONNX Runtime, float and int8: retrieval scores (indexes built with
    ``--runtime onnx``) and the model's embedding speed on these files beside torch's (same run)."""
    import time

    from soundsift.audio import load_audio
    from soundsift.checkpoints.runtime import onnx_model
    from soundsift.search.build import build_index
    from soundsift.search.index import load_searcher

    rows, models = {}, {"torch": torch_model}
    for label, quantize in (("onnx", None), ("onnx int8", "int8")):
        out = work / f"index-{label.replace(' ', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        build_index(folder, out, "zero-shot", progress=False, runtime="onnx", quantize=quantize)
        searcher = load_searcher(out)
        rows[f"{ZERO}, {label}"] = by_split(ranks_via_index(searcher, items), items)
        models[label] = onnx_model("zero-shot", quantize)
    waves = [load_audio(path, 16000) for path, _, _ in items]
    seconds = sum(len(w) for w in waves) / 16000
    lines = [f"zero-shot model alone on {len(waves)} files ({seconds / 60:.1f} min), batch 16, median of 3 "
             f"(same run, {os.cpu_count()} cores):"]
    base = None
    for label, model in models.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            model.embed_waveforms(waves, 16)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        base = base or t
        lines.append(f"  {label:<10} {t:7.2f} s  {seconds / t:6.0f}x real time  ({base / t:.2f}x torch)")
    return rows, lines


def ranks_via_index(searcher, items, rank: str = "moments") -> np.ndarray:
    """1-based rank of each item's own sound for its description; files ranked by their best moment
    (the default) or by their whole-file embedding (``rank="files"``)."""
    n = len(items)
    hits = searcher.search_many([text for _, text, _ in items], k=n, rank=rank)
    ranks = np.full(n, n + 1, dtype=np.int64)
    for i, ((path, _, name), row) in enumerate(zip(items, hits)):
        want = name.replace("/", "__") + path.suffix
        for h in row:
            if Path(h.path).name == want:
                ranks[i] = h.rank
                break
    return ranks


def build_speed(folder: Path, items, work: Path, repeats: int = 3) -> list[str]:
    """Index build speed of the zero-shot model on these files: decoding in threads and in processes
    (model loaded once beforehand, as ``soundsift index build`` does before its bar starts)."""
    import time

    import soundfile

    from soundsift.checkpoints import load_model
    from soundsift.search.build import build_index

    audio_seconds = sum(soundfile.info(str(path)).duration for path, _, _ in items)
    model = load_model("zero-shot", device="cpu")
    lines = [f"index build, zero-shot model, {len(items)} files, {audio_seconds / 60:.1f} min of audio "
             f"(median of {repeats}):"]
    for label, processes in (("threads", False), ("processes", True)):
        times = []
        for _ in range(repeats):
            shutil.rmtree(work / "speed", ignore_errors=True)
            t0 = time.perf_counter()
            build_index(folder, work / "speed", model, model_path="zero-shot", progress=False, workers=2,
                        processes=processes)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        lines.append(f"  decoding in {label:<9}: {t:6.1f} s, {len(items) / t:6.1f} files/s, "
                     f"real-time factor {t / audio_seconds:.4f} ({audio_seconds / t:.0f}x faster than real time)")
    return lines


def scores(ranks: np.ndarray) -> dict[str, float]:
    from soundsift.metrics import metrics_from_ranks

    m = metrics_from_ranks(torch.as_tensor(ranks), ks=(1, 10))
    return {"mAP@10": m["mAP@10"], "R@1": m["R@1"], "R@10": m["R@10"]}


def random_ranks(n: int, seed: int = 0, repeats: int = 200) -> list[np.ndarray]:
    gen = np.random.default_rng(seed)
    return [gen.permutation(n)[:n] + 1 for _ in range(repeats)]


def table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [f"{'model':<34} {'split':<5} {'mAP@10':>7} {'R@1':>6} {'R@10':>6}"]
    for name, by_split in rows.items():
        for split, m in by_split.items():
            lines.append(f"{name:<34} {split:<5} {100 * m['mAP@10']:7.2f} {100 * m['R@1']:6.2f} {100 * m['R@10']:6.2f}")
    return "\n".join(lines)


def by_split(ranks: np.ndarray, items) -> dict[str, dict[str, float]]:
    out = {}
    for split in ("dev", "test", "all"):
        sel = np.array([split == "all" or split_of(name) == split for _, _, name in items])
        out[split] = scores(ranks[sel])
    return out


def sweep(items, variants: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Zero-shot variants scored from embeddings directly (same ranking as the index's exact scan).
    Each variant is ``(base config, audio encoder options, text encoder options)``."""
    from soundsift.audio import load_audio
    from soundsift.metrics import text_to_audio_ranks_from_embeddings
    from soundsift.model import DualEncoder

    wavs = [load_audio(path, 16000) for path, _, _ in items]
    wavs = [w if w.ndim == 1 else w.mean(0) for w in wavs]
    out = {}
    for label, (base, audio_kw, text_kw) in variants.items():
        cfg = {**base, "audio_encoder": {**base["audio_encoder"], **audio_kw},
               "text_encoder": {**base["text_encoder"], **text_kw}}
        model = DualEncoder.from_config(cfg).eval()
        a = torch.from_numpy(model.embed_waveforms(wavs))
        t = torch.from_numpy(model.embed_texts([text for _, text, _ in items]))
        ranks = text_to_audio_ranks_from_embeddings(a, t, torch.arange(len(items))).numpy()  # 1-based
        out[label] = by_split(ranks, items)
        print(f"  {label:<52} dev mAP@10 {100 * out[label]['dev']['mAP@10']:6.2f}"
              f"  test {100 * out[label]['test']['mAP@10']:6.2f}", flush=True)
    return out


def sweep_variants() -> dict[str, tuple[dict, dict, dict]]:
    """The variants tried; the first is the published default (chosen on dev). Class space: a clip is
    its class scores, a query its softmax over class-name similarities; text space: a clip is the
    score-weighted class-name embeddings, a query its MiniLM embedding."""
    from soundsift.encoders.zeroshot import TEXT_SPACE_CONFIG as TXT
    from soundsift.encoders.zeroshot import ZERO_SHOT_CONFIG as CLS

    return {
        "default: classes, mean, sqrt(prob), '{}', T=0.01": (CLS, {}, {}),
        "classes, prob (power 1)": (CLS, {"power": 1.0}, {}),
        "classes, prob^0.3": (CLS, {"power": 0.3}, {}),
        "classes, prob^0.75": (CLS, {"power": 0.75}, {}),
        "classes, T=0.005": (CLS, {}, {"temperature": 0.005}),
        "classes, T=0.02": (CLS, {}, {"temperature": 0.02}),
        "classes, T=0.05": (CLS, {}, {"temperature": 0.05}),
        "classes, 3 prompts averaged": (CLS, {}, {"templates": ["{}", "the sound of {}", "a recording of {}"]}),
        "classes, prompt 'the sound of {}'": (CLS, {}, {"templates": ["the sound of {}"]}),
        "classes, max over patches": (CLS, {"pooling": "max"}, {}),
        "classes, mean of the 3 best patches": (CLS, {"pooling": "topk", "pool_k": 3}, {}),
        "classes, log-odds (clipped at 0)": (CLS, {"score": "logodds", "power": 1.0}, {}),
        "classes, top 10 classes of the clip": (CLS, {"top_k": 10}, {}),
        "text space: '{}', mean, prob, centred (before)": (TXT, {}, {}),
        "text space: prompt 'the sound of {}'": (TXT, {"templates": ["the sound of {}"]}, {}),
        "text space: 3 prompts averaged": (TXT, {"templates": ["the sound of {}", "a recording of {}", "{}"]}, {}),
        "text space: top 10 classes": (TXT, {"top_k": 10}, {}),
        "text space: max over patches": (TXT, {"pooling": "max"}, {}),
        "text space: not centred": (TXT, {"center": False}, {}),
    }


def train_demo(work: Path) -> Path:
    """A quick demo model: ``soundsift synth --preset tiny`` + ``soundsift train --config demo/stage1.yaml``."""
    from soundsift.cli.main import main

    data, run = work / "demo-data", work / "demo-run"
    if not (data / ".done").is_file():
        main(["synth", "--preset", "tiny", "--out", str(data)])
        (data / ".done").touch()
    if not (run / "model.pt").is_file():
        main(["train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={run}",
              "optim.epochs=5", "trainer.progress_bar=false"])
    return run / "model.pt"


def run(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--model", type=Path, help="a model trained on the generated benchmark (demo)")
    parser.add_argument("--train-demo", action="store_true", help="train a quick demo model for the comparison")
    parser.add_argument("--sweep", action="store_true", help="score zero-shot variants (choose on dev)")
    parser.add_argument("--speed", action="store_true", help="also time index builds (threads vs processes)")
    parser.add_argument("--runtimes", action="store_true",
                        help="also score and time the zero-shot model under ONNX Runtime (float and int8)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from soundsift.checkpoints import load_model

    items = collect(fetch(args.cache))
    n_dev = sum(split_of(name) == "dev" for _, _, name in items)
    print(f"{len(items)} real sounds ({n_dev} dev, {len(items) - n_dev} test) from {', '.join(PACKAGES)}")
    folder = lay_out(args.cache, items)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    if args.sweep:
        print("zero-shot variants (pick on dev):")
        sweep(items, sweep_variants())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        zero = load_model("zero-shot", device="cpu")
        searcher = open_built(folder, zero, "zero-shot", work)
        rows[ZERO] = by_split(ranks_via_index(searcher, items), items)
        rows[f"{ZERO}, files ranked whole"] = by_split(ranks_via_index(searcher, items, "files"), items)
        speed = build_speed(folder, items, work) if args.speed else []
        if args.runtimes:
            onnx_rows, onnx_speed = runtime_rows(folder, items, work, zero)
            rows.update(onnx_rows)
            speed += onnx_speed
        demo_path = args.model or (train_demo(args.cache / "demo") if args.train_demo else None)
        if demo_path is not None:
            demo = load_model(demo_path, device="cpu")
            rows[f"demo model ({Path(demo_path).name})"] = by_split(
                ranks_via_index(open_built(folder, demo, demo_path, work), items), items)
    rand = [by_split(r, items) for r in random_ranks(len(items))]
    rows["random ranking (mean of 200)"] = {
        s: {k: float(np.mean([r[s][k] for r in rand])) for k in ("mAP@10", "R@1", "R@10")} for s in rand[0]}
    print(table(rows))
    print("\n".join(speed))
    ratio = rows[ZERO]["all"]["mAP@10"] / rows["random ranking (mean of 200)"]["all"]["mAP@10"]
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    sys.exit(0 if run() > 0 else 1)
