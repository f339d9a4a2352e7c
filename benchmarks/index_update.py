"""Index update benchmark: adding a few real files to a large index, segments (format 2) against the
full rewrite of every version (format 1, soundsift before segments), measured in the same run.

    python benchmarks/index_update.py                    # 100,000 items (synthetic vectors) + 10 real files
    python benchmarks/index_update.py --items 1000000    # the 1M-item case (about 6 GB of temporary files)

The index holds ``--items`` synthetic rows (unit vectors of the zero-shot model's width, 521; blank
thumbnails; paths ``synthetic/NNNNNNN.wav``) as one segment, written once by the set-up (not timed, no
FAISS index: ``--faiss`` adds the stored IVF-SQ8 one). The ``--files`` real files (default: the first
10 of ``~/.cache/soundsift/real_sounds/audio``, else generated tones) are copied into its audio folder
and added:
- new: ``update_index(INDEX, files)`` with the zero-shot model already loaded: decode, embed, write one
  segment of the new rows and a small version manifest, switch ``CURRENT``;
- baseline: what every update did before: read the previous format-1 version (manifest.json with every
  entry, embeddings.npy, thumbnails.npy), embed the new files, write a complete new version.
Both count the embedding of the same files (timed alone too). Bytes written: the sizes of the files
each one created. The store's own cost: copies of the same files added again under new names (hashed,
embeddings reused by content, nothing decoded or embedded). Then: time to open the index (format 2: arrays mapped; format 1: JSON parsed) and the
resident memory of a fresh process after opening it and after one query (``--no-open`` skips).
Last line ``ratio: X``: baseline update time / new update time (> 1: the new store is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soundsift.checkpoints import load_model  # noqa: E402
from soundsift.search.build import update_index  # noqa: E402
from soundsift.search.index import IndexEntry  # noqa: E402
from soundsift.search.segments import Rows, write_segment  # noqa: E402
from soundsift.search.store import write_pointer  # noqa: E402
from soundsift.search.thumbnails import THUMB_HEIGHT, THUMB_WIDTH  # noqa: E402
from soundsift.search.version import BuildReport, VersionPlan, write_version  # noqa: E402

REAL = Path.home() / ".cache/soundsift/real_sounds/audio"  # benchmarks/real_sounds.py's three packages
CHUNK = 65536


def real_files(n: int, dest: Path) -> list[Path]:
    """``n`` real recordings copied into ``dest`` (or generated tones when none are here)."""
    dest.mkdir(parents=True)
    found = sorted(p for p in REAL.glob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3")) \
        if REAL.is_dir() else []
    out = []
    for i in range(n):
        if i < len(found):
            out.append(Path(shutil.copy(found[i], dest / found[i].name)))
        else:
            import soundfile as sf

            t = np.arange(16000 * 2) / 16000
            sf.write(str(dest / f"tone{i}.wav"), (0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t)).astype(np.float32), 16000)
            out.append(dest / f"tone{i}.wav")
    return out


def synthetic(n: int, dim: int, seed: int = 0) -> tuple[list[IndexEntry], np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = np.empty((n, dim), np.float32)
    for s in range(0, n, CHUNK):
        x = rng.standard_normal((min(CHUNK, n - s), dim), dtype=np.float32)
        emb[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    entries = [IndexEntry(i, f"synthetic/{i:07d}.wav", 100_000, 1, f"{i:064x}", 3.0) for i in range(n)]
    return entries, emb


def make_index(out: Path, root: Path, model, entries, emb, faiss: str) -> None:
    """A format-2 index of one segment holding the synthetic rows."""
    out.mkdir(parents=True)
    thumbs = np.zeros((len(entries), THUMB_HEIGHT, THUMB_WIDTH), np.uint8)
    rows = Rows(entries, [(16000, 1)] * len(entries), emb, thumbs, [(np.zeros((0, 2)), emb[:0])] * len(entries))
    seg, _ = write_segment(out, "s000001-00000000", rows, faiss)
    plan = VersionPlan(model, "zero-shot", root, [(str(seg.name), len(seg), np.zeros(0, np.int64))], len(entries), 1,
                       items=len(entries))
    (out / "v000001-00000000").mkdir()
    write_version(out / "v000001-00000000", plan, BuildReport(str(out), "v000001-00000000", str(root)), time.perf_counter())
    write_pointer(out, "v000001-00000000")


def legacy_write(vdir: Path, model, root: Path, entries: list[IndexEntry], emb: np.ndarray, thumbs: np.ndarray) -> None:
    """A format-1 version as soundsift wrote one before segments: every entry in manifest.json."""
    vdir.mkdir(parents=True)
    for name, array in (("embeddings.npy", emb), ("thumbnails.npy", thumbs)):
        with open(vdir / name, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
    manifest = {"format": "soundsift-index", "version": 1, "build": 1, "model": {"identity": model.identity,
                "path": "zero-shot", "embed_dim": model.embed_dim, "sample_rate": model.sample_rate},
                "audio_root": str(root), "embed_dim": model.embed_dim, "next_id": len(entries), "faiss": None,
                "windows": {"window": 0.0, "hop": 0.0, "count": 0},
                "thumbnails": {"file": "thumbnails.npy", "height": THUMB_HEIGHT, "width": THUMB_WIDTH},
                "entries": [asdict(e) for e in entries]}
    with open(vdir / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def legacy_update(prev: Path, new: Path, model, root: Path, files: list[Path]) -> None:
    """The update before segments: read the whole previous version, embed the files, rewrite it all."""
    from soundsift.audio import load_audio
    from soundsift.downloader import file_digest
    from soundsift.search.thumbnails import make_thumbnail

    manifest = json.loads((prev / "manifest.json").read_text(encoding="utf-8"))
    entries = [IndexEntry(**e) for e in manifest["entries"]]
    emb = np.load(prev / "embeddings.npy")
    thumbs = np.load(prev / "thumbnails.npy")
    waves = [load_audio(f, model.sample_rate) for f in files]
    vecs = model.embed_waveforms(waves, 16)
    new_thumbs = np.stack([make_thumbnail(w, model.sample_rate) for w in waves])
    nid = manifest["next_id"]
    entries += [IndexEntry(nid + i, f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns,
                           file_digest(f), len(w) / model.sample_rate) for i, (f, w) in enumerate(zip(files, waves))]
    legacy_write(new, model, root, entries, np.concatenate([emb, vecs]), np.concatenate([thumbs, new_thumbs]))


def new_bytes(path: Path, before: set[str]) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and str(p) not in before)


def listing(path: Path) -> set[str]:
    return {str(p) for p in path.rglob("*")}


_OPEN = """
import sys, time, numpy as np
sys.path.insert(0, {src!r})
import soundsift.search.index as si
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
r0 = rss(); t = time.perf_counter()
q = np.random.default_rng(1).standard_normal({dim}).astype(np.float32); q /= np.linalg.norm(q)
if {legacy}:  # what open_index did before segments: parse every entry, a dict of ids, read the vectors
    import json
    vdir = si.version_dir({index!r})
    manifest = json.loads((vdir / "manifest.json").read_text(encoding="utf-8"))
    entries = [si.IndexEntry(**e) for e in manifest["entries"]]
    by_id = {{e.id: i for i, e in enumerate(entries)}}
    emb = np.load(vdir / "embeddings.npy")
    t1 = time.perf_counter() - t; r1 = rss(); t = time.perf_counter()
    order = np.argsort(-(emb @ q))[:10]
    hits = [entries[i].path for i in order]
    n = len(entries)
else:
    index = si.open_index({index!r}, backend="exact", mmap={mmap})
    t1 = time.perf_counter() - t; r1 = rss(); t = time.perf_counter()
    index.search_vectors(q, 10)
    n = len(index)
t2 = time.perf_counter() - t
print(n, t1, r1 - r0, rss() - r0, t2)
"""


def open_cost(index: Path, dim: int, mmap: bool, legacy: bool) -> tuple[int, float, int, int, float]:
    """(items, open seconds, RSS growth after open, after one query, query seconds) in a fresh process."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    script = _OPEN.format(src=src, index=str(index), mmap=mmap, dim=dim, legacy=legacy)
    out = subprocess.run([sys.executable, "-c", script],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]), int(out[3]), float(out[4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="synthetic rows already indexed")
    parser.add_argument("--files", type=int, default=10, help="real files added")
    parser.add_argument("--faiss", default="none", help="FAISS index stored with the synthetic segment")
    parser.add_argument("--tmp", default=None, help="folder for the temporary indexes (default: the system's)")
    parser.add_argument("--no-open", action="store_true", help="skip the open-time and memory measurements")
    args = parser.parse_args()

    t = time.perf_counter()
    model = load_model("zero-shot")
    print(f"zero-shot model loaded in {time.perf_counter() - t:.1f} s (not counted below); width {model.embed_dim}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        root = tmp / "library"
        files = real_files(args.files, root / "new")
        seconds = sum(soundfile.info(str(f)).duration for f in files)
        t = time.perf_counter()
        entries, emb = synthetic(args.items, model.embed_dim)
        make_index(tmp / "idx", root, model, entries, emb, args.faiss)
        legacy_write(tmp / "legacy" / "v1", model, root, entries, emb,
                     np.zeros((args.items, THUMB_HEIGHT, THUMB_WIDTH), np.uint8))
        del emb
        print(f"set-up: {args.items:,} synthetic items written in both formats in {time.perf_counter() - t:.1f} s; "
              f"adding {len(files)} real files ({seconds:.1f} s of audio)")

        from soundsift.audio import load_audio

        t = time.perf_counter()
        model.embed_waveforms([load_audio(f, model.sample_rate) for f in files], 16)
        embed_s = time.perf_counter() - t

        before = listing(tmp / "legacy")
        t = time.perf_counter()
        legacy_update(tmp / "legacy" / "v1", tmp / "legacy" / "v2", model, root, files)
        old_s = time.perf_counter() - t
        old_bytes = new_bytes(tmp / "legacy", before)

        before = listing(tmp / "idx")
        t = time.perf_counter()
        report = update_index(tmp / "idx", files, model, model_path="zero-shot")
        new_s = time.perf_counter() - t
        written = new_bytes(tmp / "idx", before)
        assert report.added == len(files) and report.files == args.items + len(files), report

        (root / "copies").mkdir()
        copies = [Path(shutil.copy(f, root / "copies" / f.name)) for f in files]
        before = listing(tmp / "idx")
        t = time.perf_counter()
        again = update_index(tmp / "idx", copies, model, model_path="zero-shot")
        store_s = time.perf_counter() - t
        store_bytes = new_bytes(tmp / "idx", before)
        assert again.reused == len(files) and again.embedded == 0, again

        print(f"decode + embed the {len(files)} files alone: {embed_s:.2f} s (in both figures below)")
        print(f"baseline, full rewrite (format 1):  {old_s:8.2f} s  {old_bytes / 1e6:10.1f} MB written")
        print(f"new, one segment (format 2):        {new_s:8.2f} s  {written / 1e6:10.3f} MB written "
              f"(report: {report.bytes_written / 1e6:.3f} MB; {report.segments} segments)")
        print(f"the store alone: {len(copies)} copies of those files added again (hashed, embeddings reused by "
              f"content, nothing decoded): {store_s:.2f} s, {store_bytes / 1e6:.3f} MB written, "
              f"{again.segments} segments ({again.merged} merged)")
        if not args.no_open:
            for label, path, mmap in (("format 2, mapped", tmp / "idx", True), ("format 2, read", tmp / "idx", False),
                                      ("format 1, read (baseline)", tmp / "legacy", False)):
                if path.name == "legacy":
                    (path / "CURRENT").write_text("v2\n")
                n, open_s, rss_open, rss_query, q_s = open_cost(path, model.embed_dim, mmap, path.name == "legacy")
                print(f"open {label:<26} {n:>9,} items: {open_s:7.2f} s, resident +{rss_open / 1e6:8.1f} MB after "
                      f"open, +{rss_query / 1e6:8.1f} MB after one exact query ({q_s * 1000:.0f} ms)")
    print(f"ratio: {old_s / new_s:.1f}")


if __name__ == "__main__":
    main()
