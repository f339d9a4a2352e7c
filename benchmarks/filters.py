"""Filtered search benchmark: ``search_vectors(..., where=...)`` against the unfiltered search of the
same index, measured in the same run (exact scan).

    python benchmarks/filters.py                  # 100,000 rows x 521 (the zero-shot width)
    python benchmarks/filters.py --n 1000000

Rows: random unit vectors with paths in 100 folders (``folderNN/NNNNNNN.wav``, or ``.flac`` for every
third) and durations uniform in 0-60 s. Filters of about 50%, 10%, 1% and 0.1% of the rows. For each:
the time to evaluate the filter the first time (it is then cached with the index version), and the
p50 of single queries, files ranked by whole-file score (k=10). Checks that every result matches.
Last line ``ratio: X``: p50 with the 10% filter over p50 without (the cost of filtering; < 1: faster).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soundsift.search.index import IndexEntry  # noqa: E402
from soundsift.search.sound_index import memory_index  # noqa: E402
from soundsift.search.where import parse_where  # noqa: E402

FILTERS = [
    ("duration < 30", lambda e: e.duration < 30),
    ("path ~ 'folder0' and ext = wav", lambda e: e.path.startswith("folder0") and e.path.endswith(".wav")),
    ("folder ~ folder07 or folder ~ folder42", lambda e: e.path.split("/")[0] in ("folder07", "folder42")),
    ("folder ~ folder13 and duration < 6", lambda e: e.path.startswith("folder13/") and e.duration < 6),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="rows")
    parser.add_argument("--dim", type=int, default=521, help="vector width")
    parser.add_argument("--queries", type=int, default=30, help="single queries timed per filter")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    durations = np.round(rng.uniform(0, 60, args.n), 3)
    entries = [IndexEntry(i, f"folder{i % 100:02d}/{i:07d}.{'flac' if i % 3 == 0 else 'wav'}", 1, 0, "",
                          float(durations[i])) for i in range(args.n)]
    index = memory_index(entries, vectors, backend="exact")
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def p50(where: str | None) -> float:
        index.search_vectors(queries[:1], 10, rank="files", where=where)  # warm-up (and the filter's mask)
        times = []
        for q in queries:
            t = time.perf_counter()
            index.search_vectors(q, 10, rank="files", where=where)
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    base = p50(None)
    print(f"{args.n:,} rows x {args.dim}, exact scan, k=10, {args.queries} single queries each")
    print(f"  {'no filter (baseline)':<42} p50 {base * 1000:8.2f} ms")
    ratio = None
    for text, keep in FILTERS:
        t = time.perf_counter()
        mask = parse_where(text).mask(index)
        first = time.perf_counter() - t
        share = float(mask.mean())
        took = p50(text)
        hits = index.search_vectors(queries[0], 10, rank="files", where=text)[0]
        assert all(keep(index.get(h.id)) for h in hits) and len(hits) == min(10, int(mask.sum()))
        print(f"  {text:<42} {share:7.2%} of rows  filter evaluated in {first * 1000:8.1f} ms (once)  "
              f"p50 {took * 1000:8.2f} ms")
        if "folder0'" in text:
            ratio = took / base
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
