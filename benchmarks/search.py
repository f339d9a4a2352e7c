"""Search benchmark: exact (matrix product) vs FAISS query latency and FAISS recall@k, in one run.

    python benchmarks/search.py                       # 1M x 1024 and 1M x 521 (zero-shot): exact, IVF, IVF-SQ8
    python benchmarks/search.py --n 100000 --dim 1024 --faiss ivf,ivfsq,hnsw
    python benchmarks/search.py --n 0 --files 10000 --seconds 60 --window 5 --hop 2.5   # windows only

Two data sets, reported separately:
- "random":     uniformly random unit vectors. The exact-scan latency does not depend on the data, so
                these give the exact figures; for approximate search they are the worst case (all
                neighbours nearly equidistant in high dimension), so their recall is a lower bound.
- "structured": a Gaussian mixture of low intrinsic dimension mapped into the full dimension, like
                real embeddings (clusters on a low-dimensional manifold); queries come from the same
                mixture. This is the recall to expect on a real sound library.
Vectors are generated in chunks (1M x 1024 float32 is 4 GB; peak memory is about twice that while
FAISS copies them). Prints, for each index: build time, memory (bytes beyond the float32 vectors the
sound index already holds; for "exact" the vectors themselves), p50/p95 latency for single queries
(and batches), recall@k against the exact result and the exact/FAISS speed ratio (> 1: FAISS is
faster); the last line is ``ratio: X``, exact p50 / ivfsq p50 on structured vectors at the largest
dimension run (1024 by default).

Windows (``--files N``): a library of N files of ``--seconds`` each, indexed as the index builds long
files (one whole-file row per file plus its windows of ``--window`` / ``--hop`` seconds, spans from
``soundsift.spans.window_spans``), so rows = N + N x windows per file. Each window is a structured
vector; a file's vector is the normalised mean of its windows. A real ``SoundIndex`` with these rows is
searched with ``search_vectors`` (``rank_hits``: files ranked by their best moment), once with the exact
scan and once with FAISS IVF-SQ8 over both files and windows; the baseline measured in the same run is
the whole-file search (``--rank files`` on an index without windows, exact scan over N rows). Prints
rows, memory, p50/p95 per query, and the recall@k of the ranked files against the exact ranking; with
``--files`` the last line is ``ratio: X``, exact p50 / ivfsq p50 of the moment ranking (``--n 0``
skips the flat benchmark above).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soundsift.search.backends import ExactIndex, FaissIndex  # noqa: E402
from soundsift.search.index import IndexEntry, SoundIndex  # noqa: E402
from soundsift.search.sound_index import memory_index  # noqa: E402
from soundsift.spans import window_spans  # noqa: E402

CHUNK = 65536


def random_unit(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, CHUNK):
        x = rng.standard_normal((min(CHUNK, n - s), dim), dtype=np.float32)
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


class Mixture:
    """Clusters in an ``intrinsic``-dimensional latent space, mapped linearly into ``dim``."""

    def __init__(self, dim: int, clusters: int, intrinsic: int, spread: float, rng: np.random.Generator):
        self.rng = rng
        self.centres = rng.standard_normal((clusters, intrinsic)).astype(np.float32)
        self.spread = spread
        self.map = (rng.standard_normal((intrinsic, dim)) / np.sqrt(intrinsic)).astype(np.float32)

    def sample(self, n: int) -> np.ndarray:
        out = np.empty((n, self.map.shape[1]), np.float32)
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            z = self.centres[self.rng.integers(0, len(self.centres), m)]
            z = z + self.spread * self.rng.standard_normal(z.shape, dtype=np.float32)
            x = z @ self.map
            out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def latencies(backend, queries: np.ndarray, k: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per single query, and seconds per batch of ``batch`` queries."""
    backend.search(queries[:1], k)  # warm-up
    single = []
    for q in queries[: args.single]:
        t = time.perf_counter()
        backend.search(q[None], k)
        single.append(time.perf_counter() - t)
    batched = []
    for s in range(0, len(queries) - batch + 1, batch):
        t = time.perf_counter()
        backend.search(queries[s : s + batch], k)
        batched.append(time.perf_counter() - t)
    return np.array(single), np.array(batched)


def ms(x: np.ndarray, p: float) -> str:
    return f"{1000 * float(np.percentile(x, p)):9.2f}"


def row(name: str, single: np.ndarray, batched: np.ndarray, batch: int) -> None:
    per_query = batched / batch
    print(f"  {name:<22} single p50 {ms(single, 50)} ms  p95 {ms(single, 95)} ms | batch of {batch}: "
          f"p50 {ms(batched, 50)} ms  p95 {ms(batched, 95)} ms  ({1000 * per_query.mean():.3f} ms/query)")


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a[:k]) & set(e)) / k for a, e in zip(approx, exact)]))


def faiss_kwargs(kind: str) -> dict:
    """Only the parameters given on the command line; the rest are the index's own defaults."""
    if kind == "hnsw":
        given = {"m": args.m, "ef_construction": args.ef_construction, "ef_search": args.ef_search}
    elif kind == "ivf":
        given = {"nlist": args.nlist, "nprobe": args.nprobe}
    else:
        given = {"nlist": args.sq_nlist, "nprobe": args.sq_nprobe, "rerank": args.rerank}
    return {key: v for key, v in given.items() if v is not None}


def run(label: str, data: np.ndarray, queries: np.ndarray) -> list[dict]:
    n, dim = data.shape
    print(f"\n[{label}] {n:,} x {dim} unit vectors, {len(queries)} queries, k={args.k}")
    exact = ExactIndex(data)
    e_single, e_batch = latencies(exact, queries, args.k, args.batch)
    row("exact", e_single, e_batch, args.batch)
    t = time.perf_counter()
    truth = np.concatenate([exact.search(queries[s : s + 100], args.k)[1] for s in range(0, len(queries), 100)])
    print(f"  exact ground truth for {len(queries)} queries: {time.perf_counter() - t:.1f} s; "
          f"memory {data.nbytes:,} bytes (the float32 vectors)")
    results = [{"data": label, "dim": dim, "kind": "exact", "index": "exact", "build_s": 0.0, "recall": 1.0,
                "memory": data.nbytes, "p50": float(np.median(e_single)),
                "p95": float(np.percentile(e_single, 95)), "speedup_single": 1.0, "speedup_batch": 1.0}]
    for kind in args.faiss:
        t = time.perf_counter()
        index = FaissIndex(data, kind, **faiss_kwargs(kind))
        build = time.perf_counter() - t
        f_single, f_batch = latencies(index, queries, args.k, args.batch)
        found = np.concatenate([index.search(queries[s : s + 100], args.k)[1] for s in range(0, len(queries), 100)])
        r = recall(found, truth)
        name = f"{kind} " + ",".join(f"{key}={v}" for key, v in index.params.items() if key != "kind")
        row(f"faiss {kind}", f_single, f_batch, args.batch)
        ratio_single = float(np.median(e_single) / np.median(f_single))
        ratio_batch = float(np.median(e_batch) / np.median(f_batch))
        memory = index.memory_bytes()
        print(f"  {name}: built in {build:.1f} s; memory {memory:,} bytes; recall@{args.k} vs exact = {r:.4f}; "
              f"speed exact/FAISS = {ratio_single:.1f}x (single), {ratio_batch:.1f}x (batch of {args.batch})")
        results.append({"data": label, "dim": dim, "kind": kind, "index": name, "build_s": build, "recall": r,
                        "memory": memory, "p50": float(np.median(f_single)),
                        "p95": float(np.percentile(f_single, 95)), "speedup_single": ratio_single,
                        "speedup_batch": ratio_batch})
        del index
        gc.collect()
    return results


def window_library(mix: Mixture, files: int, seconds: float, window: float, hop: float):
    """(file vectors, window vectors, window spans (W, 3): owner row, start, end seconds)."""
    rate = 1000  # spans in milliseconds, as the build computes them in samples
    one = window_spans(int(round(seconds * rate)), int(round(window * rate)), int(round(hop * rate))) / rate
    per = len(one)
    wins = mix.sample(files * per)
    if per:
        vecs = wins.reshape(files, per, -1).mean(axis=1)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    else:
        vecs = mix.sample(files)
    spans = np.empty((files * per, 3), np.float64)
    spans[:, 0] = np.repeat(np.arange(files), per)
    spans[:, 1:] = np.tile(one, (files, 1))
    return vecs, wins, spans


def window_index(vecs: np.ndarray, wins: np.ndarray, spans: np.ndarray, backend: str) -> SoundIndex:
    """A ``SoundIndex`` held in memory over these rows (no files on disk)."""
    n, dim = vecs.shape
    entries = [IndexEntry(i + 1, f"f{i}.wav", 0, 0, "", args.seconds) for i in range(n)]
    return memory_index(entries, vecs, spans if len(wins) else None, wins if len(wins) else None, backend)


def search_latency(index: SoundIndex, queries: np.ndarray, rank: str) -> tuple[np.ndarray, list[list[int]]]:
    """Seconds per single-query ``search_vectors`` call, and the ranked ids of every query."""
    index.search_vectors(queries[:1], args.k, rank=rank)  # warm-up
    times, ids = [], []
    for q in queries:
        t = time.perf_counter()
        hits = index.search_vectors(q[None], args.k, rank=rank)[0]
        times.append(time.perf_counter() - t)
        ids.append([h.id for h in hits])
    return np.array(times), ids


def windows_report() -> float | None:
    """The windows benchmark (see the module docstring); returns exact p50 / ivfsq p50."""
    rng = np.random.default_rng(args.seed + 1)
    dim = args.windows_dim
    mix = Mixture(dim, args.clusters, args.intrinsic, args.spread, rng)
    t = time.perf_counter()
    vecs, wins, spans = window_library(mix, args.files, args.seconds, args.window, args.hop)
    queries = mix.sample(args.single)
    rows = len(vecs) + len(wins)
    print(f"\n[windows] {args.files:,} files x {args.seconds:g} s ({args.files * args.seconds / 3600:,.1f} h), "
          f"window {args.window:g} s / hop {args.hop:g} s: {len(wins) // max(args.files, 1)} windows per file, "
          f"{rows:,} rows ({args.files:,} files + {len(wins):,} windows) x {dim}; "
          f"{rows / (args.files * args.seconds):.3f} rows per second of audio; generated in "
          f"{time.perf_counter() - t:.1f} s; {len(queries)} single queries, k={args.k}")
    out = {}
    base = window_index(vecs, wins[:0], spans[:0], "exact")
    b_times, _ = search_latency(base, queries, "files")
    print(f"  {'baseline: files only, exact':<34} rows {len(vecs):>9,}  memory {vecs.nbytes:>13,} B  "
          f"p50 {ms(b_times, 50)} ms  p95 {ms(b_times, 95)} ms")
    del base
    truth = None
    for backend in ("exact", "ivfsq"):
        t = time.perf_counter()
        index = window_index(vecs, wins, spans, backend)
        build = time.perf_counter() - t
        memory = vecs.nbytes + wins.nbytes
        if backend != "exact":
            memory += index.backend.memory_bytes() + index.windows.backend.memory_bytes()
        times, ids = search_latency(index, queries, "moments")
        truth = ids if truth is None else truth
        r = float(np.mean([len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(ids, truth)]))
        out[backend] = float(np.median(times))
        print(f"  {'moments, ' + backend:<34} rows {rows:>9,}  memory {memory:>13,} B  p50 {ms(times, 50)} ms  "
              f"p95 {ms(times, 95)} ms  files recall@{args.k} vs exact {r:.4f}  built in {build:.1f} s")
        del index
        gc.collect()
    ratio = out["exact"] / out["ivfsq"]
    print(f"  windows: moment ranking over {rows:,} rows: exact p50 {1000 * out['exact']:.2f} ms, ivfsq p50 "
          f"{1000 * out['ivfsq']:.2f} ms (speed {ratio:.1f}x); whole-file baseline p50 "
          f"{1000 * float(np.median(b_times)):.2f} ms")
    return ratio


def main() -> None:
    import faiss

    rng = np.random.default_rng(args.seed)
    print(f"search benchmark: n={args.n:,} dims={args.dim} k={args.k}; faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads; numpy {np.__version__}")
    results = []
    for dim in args.dim if args.n else []:
        if "structured" in args.data:  # first: the figures that matter, before the worst case
            mix = Mixture(dim, args.clusters, args.intrinsic, args.spread, rng)
            t = time.perf_counter()
            data = mix.sample(args.n)
            print(f"\ngenerated structured vectors in {time.perf_counter() - t:.1f} s: {args.clusters} clusters, "
                  f"intrinsic dimension {args.intrinsic}, spread {args.spread}")
            results += run("structured", data, mix.sample(args.queries))
            del data
            gc.collect()
        if "random" in args.data:
            t = time.perf_counter()
            data = random_unit(args.n, dim, rng)
            print(f"\ngenerated random vectors in {time.perf_counter() - t:.1f} s ({data.nbytes / 2**30:.2f} GiB)")
            results += run("random (worst case)", data, random_unit(args.queries, dim, rng))
            del data
            gc.collect()
    window_ratio = windows_report() if args.files else None
    if not args.n:
        if window_ratio is not None:
            print(f"ratio: {window_ratio:.1f}")
        return
    print(f"\nsummary at n={args.n:,} (latency: single queries; speed = exact p50 / index p50; recall@{args.k} "
          "vs exact; memory: bytes beyond the float32 vectors, for exact the vectors)")
    for r in results:
        print(f"  {r['data']:<19} d={r['dim']:<5} {r['index']:<34} p50 {1000 * r['p50']:8.2f} ms  "
              f"p95 {1000 * r['p95']:8.2f} ms  recall@{args.k} {r['recall']:.4f}  speed {r['speedup_single']:6.1f}x  "
              f"build {r['build_s']:6.1f} s  memory {r['memory']:>14,} B")
    top = max(args.dim)
    exact_p50 = [r["p50"] for r in results if r["data"] == "structured" and r["dim"] == top and r["kind"] == "exact"]
    new_p50 = [r["p50"] for r in results if r["data"] == "structured" and r["dim"] == top and r["kind"] == "ivfsq"]
    if window_ratio is not None:
        print(f"ratio: {window_ratio:.1f}")
    elif exact_p50 and new_p50:
        print(f"ratio: {exact_p50[0] / new_p50[0]:.1f}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="number of indexed vectors")
    p.add_argument("--dim", type=lambda s: [int(v) for v in s.split(",")], default=[1024, 521],
                   help="embedding dimensions, comma-separated (soundsift models: 1024; the zero-shot model: 521)")
    p.add_argument("--queries", type=int, default=500, help="queries for recall and batched latency")
    p.add_argument("--single", type=int, default=100, help="how many queries are timed one at a time")
    p.add_argument("--batch", type=int, default=100, help="queries per batch")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--faiss", type=lambda s: s.split(","), default=["ivf", "ivfsq"],
                   help="comma-separated FAISS kinds: ivf, ivfsq, hnsw (HNSW on 1M random 1024-d vectors "
                        "takes about 40 min to build on 2 cores: that is why it is not a default)")
    p.add_argument("--m", type=int, default=None, help="HNSW links per node (default 32)")
    p.add_argument("--ef-construction", type=int, default=None, help="HNSW build beam (default 128)")
    p.add_argument("--ef-search", type=int, default=None, help="HNSW search beam (default 512)")
    p.add_argument("--nlist", type=int, default=None, help="IVF cells (default sqrt(n))")
    p.add_argument("--nprobe", type=int, default=None, help="IVF cells visited (default nlist/16, >= 8)")
    p.add_argument("--sq-nlist", type=int, default=None, help="IVF-SQ8 cells (default 2 sqrt(n))")
    p.add_argument("--sq-nprobe", type=int, default=None, help="IVF-SQ8 cells visited (default nlist/128, >= 16)")
    p.add_argument("--rerank", type=int, default=None, help="IVF-SQ8: k x this many candidates re-scored (10)")
    p.add_argument("--data", type=lambda s: s.split(","), default=["random", "structured"])
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--intrinsic", type=int, default=16, help="intrinsic dimension of the structured data")
    p.add_argument("--spread", type=float, default=0.5, help="cluster spread in latent units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--files", type=int, default=0, help="windows report: number of files (0: no report)")
    p.add_argument("--seconds", type=float, default=60.0, help="windows report: duration of each file")
    p.add_argument("--window", type=float, default=5.0, help="windows report: window seconds")
    p.add_argument("--hop", type=float, default=2.5, help="windows report: hop seconds")
    p.add_argument("--windows-dim", type=int, default=521, help="windows report: embedding dimension")
    a = p.parse_args(argv)
    if (a.n and a.n < a.k) or a.n < 0 or a.queries < a.batch:
        p.error("need n = 0 or n >= k, and queries >= batch")
    if a.files and (a.files < a.k or not 0 < a.hop <= a.window or a.seconds <= 0):
        p.error("windows report: need files >= k, 0 < hop <= window and seconds > 0")
    return a


if __name__ == "__main__":
    args = parse_args()
    main()
