"""Teacher store at WavCaps scale: open time, memory and batch lookups, against the .safetensors file.

Writes M synthetic teachers (random unit vectors, float16) of one split as teacher stores (memory-mapped
directories) and as the single-file ``.safetensors`` format, then measures in fresh subprocesses, on the
same data: the time to open (store) or load (file) all M teachers and build the TeacherEnsemble (with the
alignment check), the growth of resident memory after opening, the first C_hat, and batch lookups per
second (C_hat of a batch of 64 pairs from M teachers; one torch thread). The files were just written, so both read from
the page cache (warm); a cold store lookup would add one disk read per row.

    .venv/bin/python benchmarks/teacher_store.py [--clips 100000] [--captions 500000] [--teachers 3]
        [--dim 1024] [--dir DIR] [--full] [--keep]

``--full`` also writes and measures the store at 400k clips x 2M captions (about 15 GB on disk); the
.safetensors baseline is then measured at the default size only (it would need ~15 GB of RAM for the
embeddings alone). The last line is ``ratio: X``: the baseline's time to the first C_hat (load + first
batch) over the store's (open + first batch), at the size both were measured at; X > 1 means the
store is better.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 64


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def split_of(n_clips: int, n_captions: int):
    import torch

    clip_ids = [f"wavcaps/FreeSound/clip_{i:07d}.flac" for i in range(n_clips)]
    texts = [f"caption {j}: a dog barks while cars pass on a wet road, clip {j * n_clips // n_captions}"
             for j in range(n_captions)]
    return clip_ids, texts, torch.arange(n_captions) * n_clips // n_captions


def chunks(seed: int, n: int, dim: int, rows: int = 1 << 15):
    import torch

    for k, start in enumerate(range(0, n, rows)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + k)
        x = torch.randn(min(rows, n - start), dim, generator=g)
        yield torch.nn.functional.normalize(x, dim=1).half()


def write(root: Path, tag: str, n_clips: int, n_captions: int, m: int, dim: int, legacy: bool) -> dict:
    import torch

    from soundsift.correspondences import TeacherEmbeddings, write_teacher_store

    clip_ids, texts, caption_clip = split_of(n_clips, n_captions)
    out = {"store": [], "legacy": []}
    start = time.perf_counter()
    for t in range(m):
        meta = {"model_identity": f"synthetic-{t}"}
        path = root / f"{tag}-teacher{t}.teachers"
        write_teacher_store(path, clip_ids, texts, caption_clip, chunks(2 * t, n_clips, dim),
                            chunks(2 * t + 1, n_captions, dim), meta, dim=dim)
        out["store"].append(str(path))
    out["store_write_s"] = time.perf_counter() - start
    if legacy:
        start = time.perf_counter()
        for t in range(m):
            emb = TeacherEmbeddings(clip_ids, torch.cat(list(chunks(2 * t, n_clips, dim))), texts, caption_clip,
                                    torch.cat(list(chunks(2 * t + 1, n_captions, dim))), {"model_identity": f"synthetic-{t}"})
            out["legacy"].append(str(emb.save(root / f"{tag}-teacher{t}.safetensors", dtype=torch.float16)))
            del emb
        out["legacy_write_s"] = time.perf_counter() - start
    out["bytes"] = sum(f.stat().st_size for p in root.glob(f"{tag}-*")
                       for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return out


def measure(paths: list[str], batches: int, n_clips: int, n_captions: int) -> dict:
    """In a fresh process: open/load, RSS growth, first batch, lookups per second."""
    import numpy as np
    import torch

    from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble

    torch.set_num_threads(1)  # one 64x1024 product per teacher: threads only add noise on a shared machine
    x = torch.nn.functional.normalize(torch.randn(BATCH, 8), dim=1)
    (x @ x.T).sum()  # torch's one-off kernel start-up is not the store's cost
    gen = np.random.default_rng(0)
    caption_index = torch.from_numpy(gen.integers(0, n_captions, size=(batches + 1, BATCH)))
    clip_index = caption_index * n_clips // n_captions
    before = rss_mb()
    start = time.perf_counter()
    ens = TeacherEnsemble([TeacherEmbeddings.load(p) for p in paths])
    open_s = time.perf_counter() - start
    after_open = rss_mb()
    start = time.perf_counter()
    first = ens.batch_similarity(clip_index[0], caption_index[0])
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for b in range(1, batches + 1):
        ens.batch_similarity(clip_index[b], caption_index[b])
    lookup_s = time.perf_counter() - start
    return {"open_s": open_s, "rss_growth_mb": after_open - before, "first_batch_s": first_s,
            "lookups_per_s": batches / lookup_s, "rss_after_lookups_mb": rss_mb() - before,
            "checksum": float(first.double().sum())}


def run_measure(paths: list[str], batches: int, n_clips: int, n_captions: int) -> dict:
    cmd = [sys.executable, __file__, "--measure", json.dumps([paths, batches, n_clips, n_captions])]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def show(name: str, r: dict) -> None:
    print(f"  {name:<34} open {1000 * r['open_s']:9.1f} ms   RSS +{r['rss_growth_mb']:8.1f} MB   "
          f"first C_hat {1000 * r['first_batch_s']:7.2f} ms   {r['lookups_per_s']:8.0f} batches/s   "
          f"(RSS +{r['rss_after_lookups_mb']:.0f} MB after lookups)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=100_000)
    p.add_argument("--captions", type=int, default=500_000)
    p.add_argument("--teachers", type=int, default=3)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--full", action="store_true", help="also 400k clips x 2M captions (store only)")
    p.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the written files")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(*json.loads(args.measure))))
        return
    root = Path(tempfile.mkdtemp(prefix="teacher-store-bench-", dir=args.dir))
    try:
        print(f"{args.teachers} teachers x ({args.clips} clips + {args.captions} captions) x {args.dim} dims, "
              f"float16, batch of {BATCH} pairs; files in {root}")
        w = write(root, "default", args.clips, args.captions, args.teachers, args.dim, legacy=True)
        print(f"  written: {w['bytes'] / 1e9:.2f} GB (store {w['store_write_s']:.1f} s, .safetensors "
              f"{w['legacy_write_s']:.1f} s)")
        store = run_measure(w["store"], args.batches, args.clips, args.captions)
        legacy = run_measure(w["legacy"], args.batches, args.clips, args.captions)
        assert abs(store["checksum"] - legacy["checksum"]) < 1e-3 * BATCH, (store["checksum"], legacy["checksum"])
        show("teacher store (memory-mapped)", store)
        show(".safetensors (read whole)", legacy)
        if args.full:
            n_clips, n_captions = 400_000, 2_000_000
            for path in w["store"] + w["legacy"]:
                shutil.rmtree(path) if Path(path).is_dir() else Path(path).unlink()
            print(f"full size: {args.teachers} teachers x ({n_clips} clips + {n_captions} captions) x {args.dim}")
            f = write(root, "full", n_clips, n_captions, args.teachers, args.dim, legacy=False)
            print(f"  written: {f['bytes'] / 1e9:.2f} GB (store {f['store_write_s']:.1f} s); "
                  ".safetensors not measured at this size (needs the whole data in RAM)")
            show("teacher store (memory-mapped)", run_measure(f["store"], args.batches, n_clips, n_captions))
        base = legacy["open_s"] + legacy["first_batch_s"]
        new = store["open_s"] + store["first_batch_s"]
        print(f"time to first C_hat: .safetensors {base:.3f} s, store {new:.4f} s "
              f"(at {args.clips} x {args.captions}); lookups/s store/.safetensors "
              f"{store['lookups_per_s'] / legacy['lookups_per_s']:.2f}")
        print(f"ratio: {base / new:.1f}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
