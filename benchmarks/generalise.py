"""Generalisation benchmark of the zero-shot model: 9 sources of real recordings, variants chosen by
leave-one-source-out.

The sources (``generalise_data``): Debian's tuxpaint-stamps-default (stamps: animals, household, vehicles,
with the package's own descriptions), lmms-common (drum, instrument and effect samples), sonic-pi-samples
(music samples), scratch (Scratch 1.4's sound library: animals, people, effects, instruments),
lincity-ng-data (a city: traffic, trains, machines, farms, fire, water), four desktop sound themes
(sound-theme-freedesktop, yaru-theme-sound, deepin-sound-theme, oxygen-sounds), four games' effects
(freedink-data, heroes-sound-effects, pingus-data, extremetuxracer-data), Tux Paint's tool sounds
(tuxpaint-data, tuxpaint-plugins-default: rain, lightning, waves, chalk...) and npm's ion-sound
(household foley). Each source is its own library: its queries rank its sounds only, as a user's
queries rank their own library. Metric: DCASE 2025 multi-relevance mAP@10 (AP divided by the number of
relevant sounds, the task's baseline code), in percent; every figure has a random ranking beside it.

Every variant of the zero-shot model is scored on every source from cached per-patch class scores (the
published model's own functions: ``pool_patches``, ``sharpen``, ``class_query``, ``library_weights``).
Leave-one-source-out: for each source, the variant with the best mean per-source mAP@10 on the OTHER
eight sources is scored on it; the LOSO figure pools those held-out scores over all queries. A paired
bootstrap over queries compares it with the published default (``--baseline``). ``--index`` also builds
a real index of each source with the published model and scores the searcher's rankings.

    python benchmarks/generalise.py [--cache DIR] [--index]

Ends with ``ratio: X`` (published default's mAP@10, through the index with ``--index``, over random).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generalise_data as gd  # noqa: E402
from generalise_variants import VARIANTS, Scorer  # noqa: E402


def random_ap(rel: torch.Tensor, repeats: int = 200, seed: int = 0) -> np.ndarray:
    """Per query, the mean AP@10 of ``repeats`` random rankings."""
    from soundsift.metrics.multi import average_precision_at_k

    gen = torch.Generator().manual_seed(seed)
    return np.mean([average_precision_at_k(torch.rand(rel.shape, generator=gen), rel, 10, normalise="relevant").numpy()
                    for _ in range(repeats)], axis=0)


def loso(per_query: dict[str, np.ndarray], sources: np.ndarray, names: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    """Held-out AP per query: each source scored with the variant best on the others (macro mean)."""
    means = {v: {s: float(ap[sources == s].mean()) for s in names} for v, ap in per_query.items()}
    out, chosen = np.zeros(len(sources)), {}
    for s in names:
        best = max(per_query, key=lambda v: np.mean([means[v][o] for o in names if o != s]))
        chosen[s] = best
        out[sources == s] = per_query[best][sources == s]
    return out, chosen


def index_ap(sounds, queries, ids_kept: set[str], cache: Path, ranks=("moments",)) -> dict[str, np.ndarray]:
    """AP@10 per query from rankings of a real index per source (``build_index`` at the defaults +
    ``load_searcher``), for each of ``ranks`` (files ranked by their best moment, or whole)."""
    import shutil
    import tempfile

    from soundsift.checkpoints import load_model
    from soundsift.metrics.multi import average_precision_at_k
    from soundsift.search.build import build_index
    from soundsift.search.index import load_searcher

    model = load_model("zero-shot", device="cpu")
    out = {rank: np.zeros(len(queries)) for rank in ranks}
    with tempfile.TemporaryDirectory() as tmp:
        for src in dict.fromkeys(q.source for q in queries):
            folder = Path(tmp) / "audio"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            mine = [s for s in sounds if s.source == src and s.id in ids_kept]
            for i, s in enumerate(mine):
                (folder / f"{i:04d}{s.file.suffix}").symlink_to(s.file.resolve())
            build_index(folder, Path(tmp) / src, model, model_path=None, progress=False)
            searcher = load_searcher(Path(tmp) / src, model_path="zero-shot")
            qi = [i for i, q in enumerate(queries) if q.source == src]
            pos = {f"{i:04d}{s.file.suffix}": i for i, s in enumerate(mine)}
            rel = torch.tensor([[s.id in queries[i].relevant for i in qi] for s in mine])
            for rank in ranks:
                hits = searcher.search_many([queries[i].text for i in qi], k=len(mine), rank=rank)
                sim = torch.full((len(mine), len(qi)), -1e9)
                for col, row in enumerate(hits):
                    for h in row:
                        sim[pos[Path(h.path).name], col] = -float(h.rank)
                out[rank][qi] = average_precision_at_k(sim, rel, 10, normalise="relevant").numpy()
    return out


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=gd.default_cache(), help="downloads and features")
    parser.add_argument("--index", action="store_true", help="also score the published model through real indexes")
    parser.add_argument("--rank", nargs="+", choices=["moments", "files"], default=["moments"],
                        help="with --index: how search ranks files (best moment, the default, or whole file)")
    parser.add_argument("--baseline", default="published default", help="variant the LOSO choice is compared with")
    args = parser.parse_args(argv)
    from soundsift.metrics.intervals import jackknife_ci, paired_bootstrap_ci

    gd.fetch(args.cache)
    sounds, queries = gd.read_sounds(args.cache), gd.read_queries()
    feats = gd.features(sounds, args.cache)
    kept = set(feats.ids)
    names = list(dict.fromkeys(q.source for q in queries))
    queries = [q for q in queries if any(r in kept for r in q.relevant)]
    print(f"{len(kept)} sounds ({feats.seconds / 60:.1f} min) from {len(names)} sources, {len(queries)} queries; "
          f"skipped {len(feats.skipped)}: " + "; ".join(f"{k} ({'does not decode' if 'decode' in v else v})"
                                                         for k, v in feats.skipped.items()))
    sources = np.array([q.source for q in queries])
    scorer = Scorer(feats, [s for s in sounds if s.id in kept], queries)
    per_query = {label: scorer.ap(v) for label, v in VARIANTS.items()}
    rand = np.concatenate([random_ap(scorer.relevance(s)) for s in names])  # queries are grouped by source
    order = np.concatenate([np.flatnonzero(sources == s) for s in names])
    rand = rand[np.argsort(order)]

    head = f"{'variant':<72}" + "".join(f"{s[:9]:>10}" for s in names) + f"{'mean':>8}{'pooled':>8}"
    n = {s: int((sources == s).sum()) for s in names}
    print("\nmAP@10 (%) per source (queries / sounds below); mean = of the sources, pooled = over all queries")
    print(f"{'queries / sounds':<72}" + "".join(f"{f'{n[s]}/{scorer.n_sounds[s]}':>10}" for s in names))

    def row(label: str, ap: np.ndarray) -> str:
        per = [100 * ap[sources == s].mean() for s in names]
        return f"{label:<72}" + "".join(f"{x:10.1f}" for x in per) + f"{np.mean(per):8.1f}{100 * ap.mean():8.1f}"

    print(head)
    print(row("random ranking (mean of 200)", rand))
    for label, ap in per_query.items():
        print(row(label, ap))
    held, chosen = loso(per_query, sources, names)
    print(row("LEAVE-ONE-SOURCE-OUT (variant chosen on the others)", held))
    print("chosen per held-out source: " + "; ".join(f"{s}: {v}" for s, v in chosen.items()))
    base = per_query[args.baseline]
    m, lo, hi = jackknife_ci(base)
    print(f"{args.baseline}: mAP@10 {100 * m:.1f} over all {len(base)} queries, 95% jackknife [{100 * lo:.1f}, "
          f"{100 * hi:.1f}] (random ranking {100 * rand.mean():.1f}); sources {100 * min(base[sources == s].mean() for s in names):.1f}"
          f" to {100 * max(base[sources == s].mean() for s in names):.1f}")
    d, lo, hi = paired_bootstrap_ci(held, base)
    per_src = [100 * (held - base)[sources == s].mean() for s in names]
    print(f"LOSO minus {args.baseline}: {100 * d:+.2f} points, 95% paired bootstrap over queries "
          f"[{100 * lo:+.2f}, {100 * hi:+.2f}]; per source {min(per_src):+.1f} to {max(per_src):+.1f}")
    best_all = max(per_query, key=lambda v: np.mean([per_query[v][sources == s].mean() for s in names]))
    print(f"variant best on all nine sources (the candidate default): {best_all}")
    for label in dict.fromkeys([best_all] + list(chosen.values())):
        d, lo, hi = paired_bootstrap_ci(per_query[label], base)
        print(f"  {label} minus {args.baseline}: {100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
    ref = base
    if args.index:
        by_rank = index_ap(sounds, queries, kept, args.cache, args.rank)
        for rank, ap in by_rank.items():
            print(row(f"published model through real indexes (search_many, rank={rank})", ap))
        ref = by_rank[args.rank[0]]
        if len(by_rank) == 2:
            d, lo, hi = paired_bootstrap_ci(by_rank["moments"], by_rank["files"])
            print(f"rank=moments minus rank=files: {100 * d:+.2f} points, 95% paired bootstrap [{100 * lo:+.2f}, "
                  f"{100 * hi:+.2f}]")
    ratio = float(ref.mean() / rand.mean())
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    sys.exit(0 if main() > 0 else 1)
