"""Near-duplicate detection (``soundsift index dupes``) on variants of real recordings.

The real sounds of ``benchmarks/real_sounds.py`` (Debian's tuxpaint-stamps-default, lmms-common and
sonic-pi-samples, cached in ~/.cache/soundsift/real_sounds) are split by the same name hash into a
development and a test half. Each sound is written as the original plus its variants (soundfile + soxr):
an MP3 and an Ogg Vorbis re-encoding, a resampling to 22.05 kHz, a trim of 3% at the start and 2% at the
end, a gain change (-9 dB) and a byte-identical copy. Every pair of files of the same sound is a
duplicate (sounds whose decoded samples are equal count as one sound: two packaged names of one
recording); every pair of files of different sounds is not (among them similar sounds: several kick
drums, snares, hi-hats, guitars...; the "similar" row counts the non-duplicate pairs whose descriptions
share a word, e.g. "a bass drum hit" and "a kick drum").

One index per half is built with ``build_index`` and the default zero-shot model; ``find_duplicates``
groups each at a grid of thresholds, with its default duration rule (near-duplicates last within 10% of
each other: fixed beforehand from what a trim of "a few percent" means, not tuned here). A pair is predicted a duplicate when both files land in one
group. The threshold with the best F1 on the development half is reported once on the test half, with
precision and recall, beside the random baseline (a random grouping that predicts as many pairs: its
precision is the share of duplicate pairs among all pairs).

    python benchmarks/dupes.py [--cache DIR] [--work DIR]
    python benchmarks/dupes.py --scale 20000    # speed of the grouping alone, on synthetic vectors

Ends with ``ratio: X``: test precision at the chosen threshold over the random baseline's precision;
with ``--scale``, the all-pairs Python loop's time over ``find_duplicates``'s, on the same 2,000 vectors.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_sounds import collect, default_cache, fetch, split_of  # noqa: E402

GRID = np.round(np.arange(0.80, 0.996, 0.005), 3)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
STOP = {"a", "an", "the", "of", "in", "on", "with", "and", "hit", "sound", "playing", "being"}


def variants(wave: np.ndarray, rate: int) -> dict[str, tuple[np.ndarray, int, str, str | None]]:
    """name -> (samples, rate, format, subtype) of the variants of one sound (float32, frames x channels)."""
    import soxr

    n = len(wave)
    mp3_rate = rate if rate in MP3_RATES else 44100  # MPEG audio knows only these
    out = {
        "orig": (wave, rate, "WAV", "PCM_16"),
        "mp3": (soxr.resample(wave, rate, mp3_rate) if mp3_rate != rate else wave, mp3_rate, "MP3", "MPEG_LAYER_III"),
        "ogg": (wave, rate, "OGG", "VORBIS"),
        "resampled": (soxr.resample(wave, rate, 22050), 22050, "WAV", "PCM_16"),
        "trimmed": (wave[int(0.03 * n): n - int(0.02 * n)], rate, "FLAC", None),
        "quieter": (wave * 10 ** (-9 / 20), rate, "WAV", "PCM_16"),
    }
    return out


def write_half(items, folder: Path) -> dict[str, str]:
    """Write the variants of ``items`` into ``folder``; returns file name -> sound name."""
    import soundfile as sf

    ext = {"WAV": ".wav", "MP3": ".mp3", "OGG": ".ogg", "FLAC": ".flac"}
    owner = {}
    folder.mkdir(parents=True, exist_ok=True)
    for path, _, name in items:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
        if rate > 48000:
            import soxr

            wave, rate = soxr.resample(wave, rate, 48000), 48000
        stem = name.replace("/", "__")
        for kind, (w, r, fmt, subtype) in variants(wave, rate).items():
            file = f"{stem}.{kind}{ext[fmt]}"
            sf.write(str(folder / file), np.clip(w, -1, 1), r, format=fmt, subtype=subtype)
            owner[file] = name
        shutil.copyfile(folder / f"{stem}.orig.wav", folder / f"{stem}.copy.wav")
        owner[f"{stem}.copy.wav"] = name
    return owner


def canonical_names(items) -> dict[str, str]:
    """name -> the first name whose decoded samples are the same: a few packaged sounds are one recording
    under two names (tuxpaint's badger and beaver, mountain goat and ram), duplicates in truth."""
    import hashlib

    import soundfile as sf

    first: dict[str, str] = {}
    out = {}
    for path, _, name in items:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
        key = hashlib.sha256(wave.tobytes() + str(rate).encode()).hexdigest()
        out[name] = first.setdefault(key, name)
    return out


def words(text: str) -> set[str]:
    return {w for w in re.sub(r"[^a-z ]", " ", text.lower()).split() if w not in STOP}


def evaluate(groups, owner: dict[str, str], n_files: int) -> dict[str, float]:
    """Pair precision and recall of a grouping against the files' sounds."""
    predicted = true_positive = 0
    for g in groups:
        paths = [m.path for m in g.members]
        for a, b in itertools.combinations(paths, 2):
            predicted += 1
            true_positive += owner[a] == owner[b]
    per_sound: dict[str, int] = {}
    for sound in owner.values():
        per_sound[sound] = per_sound.get(sound, 0) + 1
    positives = sum(c * (c - 1) // 2 for c in per_sound.values())
    all_pairs = n_files * (n_files - 1) // 2
    precision = true_positive / predicted if predicted else 1.0
    recall = true_positive / positives
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted": predicted,
            "positives": positives, "base_rate": positives / all_pairs,
            "random_recall": predicted / all_pairs}


def recall_by_variant(groups, owner: dict[str, str]) -> dict[str, float]:
    """For each variant kind, the share of sounds whose variant is grouped with their original."""
    group_of = {m.path: i for i, g in enumerate(groups) for m in g.members}
    originals = {owner[f]: f for f in owner if ".orig." in f}
    found: dict[str, list[bool]] = {}
    for f, sound in owner.items():
        kind = f.rsplit(".", 2)[1]
        if kind != "orig":
            orig = originals[sound]
            found.setdefault(kind, []).append(orig in group_of and group_of.get(f) == group_of[orig])
    return {kind: float(np.mean(v)) for kind, v in sorted(found.items())}


def similar_negatives(groups, owner: dict[str, str], text_of: dict[str, str]) -> tuple[int, int]:
    """(predicted, all) non-duplicate pairs of different sounds whose descriptions share a word."""
    sounds = sorted(set(owner.values()))
    per_sound = {s: sum(1 for o in owner.values() if o == s) for s in sounds}
    similar = {(a, b) for a, b in itertools.combinations(sounds, 2) if words(text_of[a]) & words(text_of[b])}
    total = sum(per_sound[a] * per_sound[b] for a, b in similar)
    hit = 0
    for g in groups:
        for x, y in itertools.combinations([m.path for m in g.members], 2):
            pair = tuple(sorted((owner[x], owner[y])))
            hit += pair in similar
    return hit, total


def structured(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors like a library's embeddings: a mixture of 200 directions, 5% of them near-copies."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim))
    v = centres[rng.integers(0, 200, n)] + 1.2 * rng.standard_normal((n, dim))
    copies = rng.choice(n, n // 20, replace=False)
    v[copies] = v[rng.integers(0, n, len(copies))] + 0.05 * rng.standard_normal((len(copies), dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def scale(n: int, dim: int = 521, threshold: float = 0.95) -> float:
    """Seconds of ``find_duplicates`` on ``n`` synthetic vectors (exact backend), and against an all-pairs
    Python loop on 2,000 of them (checked: the same files grouped)."""
    from types import SimpleNamespace

    from soundsift.search.backends import ExactIndex
    from soundsift.search.dupes import find_duplicates
    from soundsift.search.index import IndexEntry

    class Fake(SimpleNamespace):
        def __len__(self) -> int:
            return len(self.entries)

    def fake(v):
        entries = [IndexEntry(i, f"{i}.wav", 1, 0, f"h{i}", 1.0) for i in range(len(v))]
        return Fake(entries=entries, embeddings=v, backend=ExactIndex(v))

    small = structured(2000, dim)
    start = time.perf_counter()
    pairs = [(i, j) for i in range(len(small)) for j in range(i + 1, len(small))
             if float(small[i] @ small[j]) >= threshold]
    loop = time.perf_counter() - start
    start = time.perf_counter()
    groups = find_duplicates(fake(small), threshold)
    ours = time.perf_counter() - start
    in_groups = sum(len(g.members) for g in groups)
    assert {i for p in pairs for i in p} == {m.id for g in groups for m in g.members}  # the same files grouped
    print(f"2000 x {dim}: all-pairs Python loop {loop:.2f} s ({len(pairs)} pairs); find_duplicates {ours:.3f} s "
          f"({len(groups)} groups, {in_groups} files)")
    big = structured(n, dim, seed=1)
    start = time.perf_counter()
    groups = find_duplicates(fake(big), threshold)
    print(f"{n} x {dim}: find_duplicates {time.perf_counter() - start:.2f} s ({len(groups)} groups)")
    return loop / ours


def run(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the variants and indexes here and reuse them when run again (default: a temporary folder)")
    parser.add_argument("--scale", type=int, default=None, metavar="N",
                        help="time the grouping alone on N synthetic vectors instead")
    args = parser.parse_args(argv)
    import torch

    if args.scale:
        ratio = scale(args.scale)
        print(f"ratio: {ratio:.1f}", flush=True)
        return ratio

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from soundsift.checkpoints import load_model
    from soundsift.search.build import build_index
    from soundsift.search.dupes import DEFAULT_MAX_DURATION_CHANGE, DEFAULT_THRESHOLD, find_duplicates
    from soundsift.search.index import open_index

    items = collect(fetch(args.cache))
    text_of = {name: text for _, text, name in items}
    same_audio = canonical_names(items)
    model = load_model("zero-shot", device="cpu")
    halves = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for half in ("dev", "test"):
            chosen = [it for it in items if split_of(it[2]) == half]
            folder = work / half / "sounds"
            if (work / half / "idx" / "CURRENT").is_file():  # --work: reuse the variants and index built before
                stems = {name.replace("/", "__"): name for _, _, name in chosen}
                owner = {f.name: stems[f.name.rsplit(".", 2)[0]] for f in folder.iterdir()}
            else:
                shutil.rmtree(work / half, ignore_errors=True)
                owner = write_half(chosen, folder)
                build_index(folder, work / half / "idx", model, model_path="zero-shot", progress=False)
            halves[half] = (open_index(work / half / "idx"), {f: same_audio[o] for f, o in owner.items()})
            print(f"{half}: {len(chosen)} sounds, {len(owner)} files (original + mp3, ogg, 22.05 kHz, trimmed 5%, "
                  "-9 dB, byte copy)", flush=True)
        index, owner = halves["dev"]
        dev = {float(t): evaluate(find_duplicates(index, float(t)), owner, len(index)) for t in GRID}
        best = max(dev, key=lambda t: (dev[t]["f1"], t))
        print("\ndevelopment half: threshold  precision  recall  F1  (random precision = base rate "
              f"{dev[best]['base_rate']:.4f})")
        for t, m in dev.items():
            mark = "  <- best F1" if t == best else ""
            print(f"  {t:.3f}  {m['precision']:.3f}  {m['recall']:.3f}  {m['f1']:.3f}{mark}")
        loose = {float(t): evaluate(find_duplicates(index, float(t), max_duration_change=1.0), owner, len(index))
                 for t in GRID}
        t_loose = max(loose, key=lambda t: (loose[t]["f1"], t))
        print(f"  without the duration rule (--max-duration-change 1), best F1 on dev: {loose[t_loose]['f1']:.3f} at "
              f"{t_loose:.3f} (precision {loose[t_loose]['precision']:.3f}, recall {loose[t_loose]['recall']:.3f})")
        print(f"the library's defaults: threshold {DEFAULT_THRESHOLD}, durations within {DEFAULT_MAX_DURATION_CHANGE:.0%}")
        index, owner = halves["test"]
        start = time.perf_counter()
        groups = find_duplicates(index, best)
        seconds = time.perf_counter() - start
        m = evaluate(groups, owner, len(index))
        sim_hit, sim_total = similar_negatives(groups, owner, text_of)
    print(f"\ntest half, threshold {best:.3f} (chosen on dev), {len(index)} files, grouped in {seconds * 1000:.0f} ms:")
    print(f"  precision {m['precision']:.3f}  (random grouping with as many pairs: {m['base_rate']:.4f})")
    print(f"  recall    {m['recall']:.3f}  (random grouping with as many pairs: {m['random_recall']:.4f})")
    print(f"  F1        {m['f1']:.3f}   {m['predicted']} pairs predicted, {m['positives']} duplicate pairs")
    print(f"  similar non-duplicates (descriptions share a word) grouped: {sim_hit} of {sim_total} pairs")
    print("  recall by variant (grouped with its original): " + ", ".join(
        f"{kind} {value:.3f}" for kind, value in recall_by_variant(groups, owner).items()))
    ratio = m["precision"] / m["base_rate"]
    print(f"ratio: {ratio:.1f}", flush=True)
    return ratio


if __name__ == "__main__":
    sys.exit(0 if run() > 0 else 1)
