"""The test split's multi-relevance metrics inside a training run (``data.relevance``).

The queries of a DCASE 2025 style relevance file are captions of the split (its protocol), so their
embeddings are the split's caption embeddings: nothing is embedded twice. The result is the DCASE 2025
metrics (``mAP@16`` divided by the number of relevant clips, as the challenge ranked) over the matched
queries, and each caption's AP@16 (its query's; None for a caption that is not a query), which
``test_queries.json`` keeps so that two runs' mAP@16 can be compared query by query.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from soundsift.errors import DatasetError

K = 16


def relevance_path(relevance: str, data_root: str | None) -> Path:
    """``data.relevance`` as a path: relative ones are relative to ``data.root``."""
    path = Path(relevance)
    return path if path.is_absolute() or data_root is None else Path(data_root) / path


def multi_relevance_of_split(path: str | Path, clip_ids: Sequence[str], caption_texts: Sequence[str],
                             similarity: torch.Tensor) -> tuple[dict[str, Any], list[float | None]]:
    """(metrics, per-caption AP@16) of a split's ``similarity`` (n_audio, n_caption) against ``path``."""
    from soundsift import metrics as m
    from soundsift.data.relevance import match_relevance, read_relevance, text_key

    annotations = read_relevance(path)
    matched = match_relevance(annotations, clip_ids, caption_texts)
    if not matched.texts:
        raise DatasetError(f"{path}: none of its {matched.n_read} queries is a caption of the test split "
                           f"({'; '.join(matched.examples)})")
    first = {}
    for j, text in enumerate(caption_texts):
        first.setdefault(text_key(text), j)
    columns = [first[text_key(t)] for t in matched.texts]
    rel = torch.from_numpy(matched.relevance)
    query_sim = similarity[:, columns]
    metrics = m.multi_relevance_metrics(query_sim, rel)
    metrics["left_out"] = matched.n_left_out
    metrics["relevance_file"] = str(path)
    ap = m.average_precision_at_k(query_sim, rel, K, normalise="relevant").tolist()
    of_query = {text_key(t): a for t, a in zip(matched.texts, ap)}
    return metrics, [of_query.get(text_key(t)) for t in caption_texts]
