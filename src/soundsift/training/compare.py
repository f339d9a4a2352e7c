"""Per-query results and the paired comparison of two models (``soundsift compare``).

A training run saves ``test_queries.json`` beside its metrics: for every query caption of its test
split, the clip it belongs to, the caption, the 1-based rank of that clip and AP@10. Two such files of
the same queries give the difference in mAP@10 with a 95% interval from a paired bootstrap over the
clips (each with all its captions; fixed seed) and from the jackknife over the queries, so "stage 2 beats stage 1" comes with an interval.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.atomic import atomic_write
from soundsift.errors import ComparisonError
from soundsift.names import TEST_SPLIT

FILE = "test_queries.json"  # in a run folder
FORMAT, VERSION = "soundsift-per-query", 1
N_RESAMPLES = 10_000


@dataclass
class PerQuery:
    """One model's per-query results on one split (query q: caption ``captions[q]`` of clip ``clips[q]``)."""

    source: str
    split: str
    clips: list[str]
    captions: list[str]
    ranks: np.ndarray  # (n_queries,) 1-based rank of the query's own clip
    ap: np.ndarray  # (n_queries,) AP@10
    candidates: str  # digest of the clips ranked (the same queries over other clips are not comparable)
    ap16: np.ndarray | None = None  # (n_queries,) multi-relevance AP@16 (DCASE 2025), NaN: not a query

    def keys(self) -> list[tuple[str, str, int]]:
        """(clip, caption, occurrence): one key per query, even where a clip repeats a caption."""
        seen: Counter = Counter()
        out = []
        for clip, caption in zip(self.clips, self.captions):
            out.append((clip, caption, seen[clip, caption]))
            seen[clip, caption] += 1
        return out


def candidates_digest(clip_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(clip_ids)).encode("utf-8")).hexdigest()[:16]


def per_query_doc(split: str, clip_ids: list[str], caption_texts: list[str], caption_clip, ranks,
                  ap16: list[float | None] | None = None) -> dict[str, Any]:
    """The ``test_queries.json`` document of one split's text-to-audio ranks (and, with ``ap16``, each
    caption's multi-relevance AP@16: None where the caption is not a query of the relevance file)."""
    from soundsift.metrics import ap_at_k_from_ranks

    ranks = [int(r) for r in ranks]
    ap = ap_at_k_from_ranks(np.asarray(ranks), 10).tolist()
    queries = [{"clip": clip_ids[int(c)], "caption": t, "rank": r, "AP@10": a}
               for c, t, r, a in zip(caption_clip.tolist(), caption_texts, ranks, ap)]
    if ap16 is not None:
        for q, a16 in zip(queries, ap16):
            q["AP@16"] = a16
    return {
        "format": FORMAT, "version": VERSION, "split": split, "n_audio": len(clip_ids),
        "candidates": candidates_digest(list(clip_ids)), "queries": queries,
    }


def write_per_query(path: str | Path, doc: dict[str, Any]) -> Path:
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_per_query(path: str | Path) -> PerQuery:
    from soundsift.errors import check_format

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ComparisonError(f"{path}: not JSON ({exc})") from None
    check_format(doc, path, FORMAT, VERSION, ComparisonError, "per-query result file")
    queries = doc.get("queries") or []
    if not queries:
        raise ComparisonError(f"{path}: holds no queries")
    ap16 = None
    if all("AP@16" in q for q in queries):
        ap16 = np.array([np.nan if q["AP@16"] is None else float(q["AP@16"]) for q in queries])
    return PerQuery(
        str(path), str(doc.get("split", "")), [str(q["clip"]) for q in queries], [str(q["caption"]) for q in queries],
        np.array([int(q["rank"]) for q in queries]), np.array([float(q["AP@10"]) for q in queries]),
        str(doc.get("candidates", "")), ap16,
    )


def per_query_of_model(
    model_path: str | Path, data_root: str | Path, data_format: str = "clotho", split: str = TEST_SPLIT,
    max_seconds: float | None = None, batch_size: int = 32, progress: bool = True,
) -> PerQuery:
    """Evaluate a model file on a split and return its per-query results (nothing is written)."""
    from soundsift.checkpoints import load_model
    from soundsift.metrics import text_to_audio_ranks_from_embeddings
    from soundsift.training.embed import embed_dataset

    model = load_model(model_path)
    emb, _ = embed_dataset(model, data_format, data_root, split, max_seconds, batch_size, progress)
    ranks = text_to_audio_ranks_from_embeddings(emb.audio, emb.captions, emb.caption_clip)
    doc = per_query_doc(split, emb.clip_ids, emb.caption_texts, emb.caption_clip, ranks)
    q = doc["queries"]
    return PerQuery(str(model_path), split, [x["clip"] for x in q], [x["caption"] for x in q],
                    np.array([x["rank"] for x in q]), np.array([x["AP@10"] for x in q]), doc["candidates"])


def load_results(
    source: str | Path, data_root: str | Path | None = None, data_format: str | None = None,
    split: str | None = None, max_seconds: float | None = None, batch_size: int = 32, progress: bool = True,
) -> PerQuery:
    """Per-query results of ``source``: a run folder (its ``test_queries.json``; a run saved before
    those files existed is evaluated on the test split of its config.yaml), a per-query JSON file, or
    a model file (evaluated on ``data_root``/``split``)."""
    path = Path(source)
    if path.is_dir():
        if (path / FILE).is_file():
            result = read_per_query(path / FILE)
            result.source = str(path)
            return result
        if not (path / "model.pt").is_file():
            raise ComparisonError(f"{path}: neither a run folder ({FILE} or model.pt) nor a model")
        config = _run_config(path)
        data = config.get("data") or {}
        root = data_root or data.get("root")
        if not root:
            raise ComparisonError(f"{path}: no {FILE} and no data.root in its config.yaml: pass --data-root")
        result = per_query_of_model(path / "model.pt", root, data_format or data.get("format", "clotho"),
                                    split or data.get("test_split") or TEST_SPLIT,
                                    max_seconds if max_seconds is not None else data.get("max_seconds"),
                                    batch_size, progress)
        result.source = str(path)
        return result
    if path.suffix == ".json" and path.is_file():
        return read_per_query(path)
    if data_root is None:
        raise ComparisonError(f"{source}: a model file is evaluated first: pass --data-root (and --split)")
    return per_query_of_model(source, data_root, data_format or "clotho", split or TEST_SPLIT, max_seconds,
                              batch_size, progress)


def _run_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def paired(a: PerQuery, b: PerQuery, metric: str = "mAP@10") -> tuple[np.ndarray, np.ndarray]:
    """AP@10 (``metric="mAP@16"``: AP@16, NaN where a caption is no query) of ``a`` and ``b`` on the same
    queries, in ``a``'s order; refuses other queries or clips."""
    keys_a, keys_b = a.keys(), b.keys()
    where_b = {k: i for i, k in enumerate(keys_b)}
    only_a = [k for k in keys_a if k not in where_b]
    if only_a or len(keys_a) != len(keys_b):
        only_b = sorted(set(keys_b) - set(keys_a))
        example = (only_a or only_b)[0]
        raise ComparisonError(
            f"{a.source} and {b.source} were evaluated on different queries ({len(only_a)} only in the first, "
            f"{len(only_b)} only in the second, e.g. {example[1]!r} of {example[0]!r}): compare models tested "
            "on the same split")
    if a.candidates and b.candidates and a.candidates != b.candidates:
        raise ComparisonError(f"{a.source} and {b.source} ranked different sets of clips for the same queries "
                              "(some clips unreadable in one of them?): their AP@10 are not comparable")
    order = np.array([where_b[k] for k in keys_a], dtype=np.int64)
    if metric == "mAP@10":
        return a.ap, b.ap[order]
    if a.ap16 is None or b.ap16 is None:
        raise ComparisonError(f"{a.source if a.ap16 is None else b.source}: no AP@16 per query (train with "
                              "data.relevance set)")
    return a.ap16, b.ap16[order]


def compare(a: PerQuery, b: PerQuery, n_resamples: int = N_RESAMPLES, seed: int = 0,
            confidence: float = 0.95) -> dict[str, Any]:
    """mAP@10 of B minus that of A on their common queries, as fractions, with intervals."""
    from soundsift.metrics import jackknife_ci, paired_bootstrap_ci

    if not 0 < confidence < 1:
        raise ComparisonError(f"--confidence must be between 0 and 1, got {confidence}")
    ap_a, ap_b = paired(a, b)
    if ap_a.size < 2:
        raise ComparisonError(f"{a.source}: a paired interval needs at least 2 queries, got {ap_a.size}")
    alpha = 1 - confidence
    # captions of one clip are resampled together (they are not independent queries)
    diff, low, high = paired_bootstrap_ci(ap_b, ap_a, n_resamples, alpha, seed, groups=a.clips)
    _, jack_low, jack_high = jackknife_ci(ap_b - ap_a, alpha)
    return {
        "a": a.source, "b": b.source, "metric": "mAP@10", "n_queries": int(ap_a.size),
        "mAP@10_a": float(ap_a.mean()), "mAP@10_b": float(ap_b.mean()), "difference": diff,
        "confidence": confidence, "bootstrap_ci": [low, high], "jackknife_ci": [jack_low, jack_high],
        "n_resamples": int(n_resamples), "seed": int(seed), "resampled": "clips (all captions of a clip together)",
        "queries_better": int((ap_b > ap_a).sum()), "queries_worse": int((ap_b < ap_a).sum()),
    }


def compare_runs(run_a: str | Path, run_b: str | Path, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict | None:
    """``compare`` of two run folders' saved per-query results; None when either has none."""
    files = [Path(r) / FILE for r in (run_a, run_b)]
    if not all(f.is_file() for f in files):
        return None
    return compare(read_per_query(files[0]), read_per_query(files[1]), n_resamples, seed)


def gain_percent(run_a: str | Path, run_b: str | Path) -> dict[str, Any] | None:
    """Run B's test mAP@10 minus run A's in percentage points with 95% intervals (the form the results
    tables store); None when either run saved no per-query results."""
    found = compare_runs(run_a, run_b)
    if found is None:
        return None
    pp = [round(100 * v, 2) for v in (found["difference"], *found["bootstrap_ci"], *found["jackknife_ci"])]
    return {"mAP@10": pp[0], "bootstrap_ci95": pp[1:3], "jackknife_ci95": pp[3:5], "n_queries": found["n_queries"],
            "n_resamples": found["n_resamples"], "seed": found["seed"]}


def delta_cell(result: dict[str, Any] | None) -> str:
    """``+2.31 [+1.05, +3.60]``: B minus A in percentage points with the bootstrap interval."""
    if not result:
        return ""
    low, high = result["bootstrap_ci"]
    return f"{100 * result['difference']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def format_comparison(result: dict[str, Any]) -> str:
    """A few lines for people: both mAP@10, the difference and both intervals (percentage points)."""
    pct = round(100 * result["confidence"])
    jl, jh = result["jackknife_ci"]
    return "\n".join([
        f"A: {result['a']}: mAP@10 {100 * result['mAP@10_a']:.2f}",
        f"B: {result['b']}: mAP@10 {100 * result['mAP@10_b']:.2f}",
        f"B - A: {delta_cell(result)} pp ({pct}% paired bootstrap, {result['n_resamples']} resamples, seed "
        f"{result['seed']}); jackknife [{100 * jl:+.2f}, {100 * jh:+.2f}]",
        f"{result['n_queries']} queries: B better on {result['queries_better']}, worse on {result['queries_worse']}",
    ])
