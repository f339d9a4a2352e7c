"""What a retrieval benchmark looks like to a model: the statistics ``soundsift data info`` prints.

Captions per clip, caption length in words, how much the words of captions of different clips overlap,
and, from a relevance file (DCASE 2025 layout), how many clips each query truly describes. Words are the
text as the paper's code sees it: lower-cased, ``string.punctuation`` removed, split on white space.

:data:`CLOTHO_REFERENCE` holds the same statistics of ClothoV2 as measured on the one public source
readable here, the DCASE 2025 task 6 annotation file (github CPJKU/dcase2025_task6_baseline,
``resources/metadata_eval.csv`` at commit c78422f: 1037 queries, each a caption of the ClothoV2
evaluation split, with its relevant clips). Its caption figures are those of these 1037 captions;
captions per clip (5) is ClothoV2's published layout.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "CLOTHO_REFERENCE",
    "CaptionStats",
    "RelevanceStats",
    "caption_stats",
    "format_stats",
    "relevance_stats",
    "words",
]

MAX_OVERLAP_CAPTIONS = 6000  # above this, the overlap is measured on a seeded sample of this many captions
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def words(text: str) -> list[str]:
    """``text`` lower-cased, without ``string.punctuation``, split on white space."""
    return text.lower().translate(_PUNCTUATION).split()


@dataclass(frozen=True)
class CaptionStats:
    """Captions of one split. ``word_overlap``: mean Jaccard similarity of the word sets of two captions
    of different clips, over all such pairs (of ``overlap_captions`` captions: all, or a seeded sample)."""

    n_clips: int
    n_captions: int
    captions_per_clip_mean: float
    captions_per_clip_min: int
    captions_per_clip_max: int
    words_mean: float
    words_median: float
    words_min: int
    words_max: int
    word_overlap: float
    overlap_captions: int


@dataclass(frozen=True)
class RelevanceStats:
    """Relevant clips per query of a relevance file; ``per_1000_clips``: the mean per 1000 clips of the
    split it annotates (the count grows with the split)."""

    n_queries: int
    n_clips: int
    relevant_mean: float
    relevant_median: float
    relevant_p90: float
    relevant_max: int
    share_one: float
    per_1000_clips: float


def _jaccard_mean(sets: list[frozenset[str]], group: np.ndarray, block: int = 512) -> float:
    """Mean Jaccard similarity over pairs (i < j) of different groups; NaN when there is no such pair."""
    vocab = {w: i for i, w in enumerate(sorted(set().union(*sets)))}
    x = np.zeros((len(sets), len(vocab)), dtype=np.float32)
    for i, s in enumerate(sets):
        x[i, [vocab[w] for w in s]] = 1.0
    size = x.sum(axis=1)
    total, count = 0.0, 0
    for a in range(0, len(sets), block):
        inter = x[a : a + block] @ x.T  # (b, n) shared words
        union = size[a : a + block, None] + size[None, :] - inter
        rows = np.arange(a, min(a + block, len(sets)))[:, None]
        keep = (np.arange(len(sets))[None, :] > rows) & (group[a : a + block, None] != group[None, :])
        keep &= union > 0
        total += float((inter[keep] / union[keep]).sum())
        count += int(keep.sum())
    return total / count if count else float("nan")


def caption_stats(clips: Sequence[Sequence[str]], seed: int = 0) -> CaptionStats:
    """Statistics of a split given as the captions of each clip (clips without captions count as clips)."""
    per_clip = np.array([len(c) for c in clips], dtype=np.int64)
    texts = [t for caps in clips for t in caps]
    group = np.repeat(np.arange(len(clips)), per_clip)
    n_words = np.array([len(words(t)) for t in texts], dtype=np.int64)
    sample = np.arange(len(texts))
    if len(texts) > MAX_OVERLAP_CAPTIONS:
        sample = np.sort(np.random.default_rng(seed).choice(len(texts), MAX_OVERLAP_CAPTIONS, replace=False))
    overlap = _jaccard_mean([frozenset(words(texts[i])) for i in sample], group[sample]) if texts else float("nan")
    some = n_words.size > 0
    return CaptionStats(
        n_clips=len(clips), n_captions=len(texts),
        captions_per_clip_mean=float(per_clip.mean()) if len(clips) else 0.0,
        captions_per_clip_min=int(per_clip.min()) if len(clips) else 0,
        captions_per_clip_max=int(per_clip.max()) if len(clips) else 0,
        words_mean=float(n_words.mean()) if some else float("nan"),
        words_median=float(np.median(n_words)) if some else float("nan"),
        words_min=int(n_words.min()) if some else 0, words_max=int(n_words.max()) if some else 0,
        word_overlap=overlap, overlap_captions=int(sample.size),
    )


def relevance_stats(relevant_per_query: Sequence[int], n_clips: int) -> RelevanceStats:
    """Statistics of the number of relevant clips of each query; ``n_clips``: clips in the split."""
    n = np.asarray(relevant_per_query, dtype=np.int64)
    if n.size == 0:
        raise ValueError("relevance_stats: no queries")
    mean = float(n.mean())
    return RelevanceStats(
        n_queries=int(n.size), n_clips=int(n_clips), relevant_mean=mean, relevant_median=float(np.median(n)),
        relevant_p90=float(np.percentile(n, 90)), relevant_max=int(n.max()), share_one=float((n == 1).mean()),
        per_1000_clips=1000 * mean / n_clips if n_clips else float("nan"),
    )


# Measured with caption_stats/relevance_stats on resources/metadata_eval.csv of CPJKU/dcase2025_task6_baseline
# (commit c78422f; 1037 queries over the 1045 clips of ClothoV2's evaluation split); see docs/benchmark.md.
CLOTHO_REFERENCE: dict[str, Any] = {
    "source": "DCASE 2025 task 6 annotations of ClothoV2 evaluation (CPJKU/dcase2025_task6_baseline "
              "resources/metadata_eval.csv, 1037 queries)",
    "captions_per_clip_mean": 5.0,  # ClothoV2's layout (Zenodo 4783391)
    "words_mean": 11.49, "words_median": 11.0, "words_min": 8, "words_max": 20,
    "word_overlap": 0.085,  # over the 537,166 pairs of distinct queries
    "relevant_mean": 3.00, "relevant_median": 3.0, "relevant_p90": 6.0, "relevant_max": 12,
    "share_one": 0.241, "per_1000_clips": 2.88,
}

_ROWS = (  # (label, field, format)
    ("captions per clip", "captions_per_clip_mean", "{:.2f}"),
    ("words per caption (mean)", "words_mean", "{:.2f}"),
    ("words per caption (median)", "words_median", "{:.0f}"),
    ("words per caption (min-max)", ("words_min", "words_max"), "{}-{}"),
    ("word overlap of captions of different clips (Jaccard)", "word_overlap", "{:.3f}"),
    ("relevant clips per query (mean)", "relevant_mean", "{:.2f}"),
    ("relevant clips per query (median)", "relevant_median", "{:.0f}"),
    ("relevant clips per query (90th percentile)", "relevant_p90", "{:.0f}"),
    ("relevant clips per query (max)", "relevant_max", "{}"),
    ("queries with one relevant clip", "share_one", "{:.1%}"),
    ("relevant clips per query per 1000 clips", "per_1000_clips", "{:.2f}"),
)


def _cell(values: dict[str, Any], key: str | tuple[str, str], fmt: str) -> str:
    keys = key if isinstance(key, tuple) else (key,)
    if any(values.get(k) is None for k in keys):
        return "-"
    return fmt.format(*(values[k] for k in keys))


def format_stats(name: str, captions: CaptionStats | None, relevance: RelevanceStats | None) -> list[str]:
    """Lines of a two-column comparison: this split beside ClothoV2 (CLOTHO_REFERENCE)."""
    values = {**(asdict(captions) if captions else {}), **(asdict(relevance) if relevance else {})}
    shown = _ROWS if relevance is not None else [r for r in _ROWS if not r[0].startswith(("relevant", "queries"))]
    rows = [(label, _cell(values, key, fmt), _cell(CLOTHO_REFERENCE, key, fmt)) for label, key, fmt in shown]
    width = max(len(r[0]) for r in rows)
    head = f"  {'statistic':<{width}}  {name:>12}  {'ClothoV2':>10}"
    return [head, *(f"  {label:<{width}}  {mine:>12}  {ref:>10}" for label, mine, ref in rows)]
