"""Retrieval metrics as pure functions (DESIGN.md section 2). Values are fractions, not percent.

A similarity matrix is laid out ``(n_audio, n_caption)``; ``audio_of_caption[j]`` is the row index of
caption ``j``'s own audio. Text-to-audio: every caption is a query over the rows.

Ties. ``ties="pessimistic"`` (the default) ranks a relevant item *after* every other candidate with the
same score: its rank is the number of candidates scoring at least as high (itself included). Thus a
collapsed model that gives every audio the same score gets the worst rank, never R@1 = 1, and the
metrics do not depend on the order of the candidates. ``ties="optimistic"`` ranks it first among
equals (rank = 1 + number of candidates with a strictly higher score). With continuous scores ties
are rare and both agree. NaN scores raise ``ValueError``.

All metrics are one matrix product (for the embedding paths) plus vectorised counting: no Python loop
over queries. The ``*_from_embeddings`` functions work in chunks of captions, so the full
``(n_audio, n_caption)`` matrix never exists in memory. Several relevant audios per query (DCASE 2025):
:func:`multi_relevance_metrics`; the comment in :mod:`~soundsift.metrics.multi` names the two AP@k normalisations.

The package: :mod:`~soundsift.metrics.single` (DCASE mAP@10, R@k, top-k), :mod:`~soundsift.metrics.multi`
(several relevant audios, audio to text), :mod:`~soundsift.metrics.intervals` (jackknife, paired
bootstrap), :mod:`~soundsift.metrics.submission` (the DCASE CSV). Every public name is re-exported here.
"""

from __future__ import annotations

from soundsift.metrics.intervals import jackknife_ci, paired_bootstrap_ci
from soundsift.metrics.moments import moment_retrieval_metrics
from soundsift.metrics.multi import (
    audio_to_text_metrics,
    average_precision_at_k,
    first_relevant_ranks,
    map_at_k,
    multi_relevance_metrics,
    recall_at_k_multi,
)
from soundsift.metrics.single import (
    ap_at_k_from_ranks,
    metrics_from_ranks,
    text_to_audio_metrics,
    text_to_audio_metrics_from_embeddings,
    text_to_audio_ranks,
    text_to_audio_ranks_from_embeddings,
    topk_audios,
    topk_audios_from_embeddings,
)
from soundsift.metrics.submission import write_dcase_submission

__all__ = [
    "ap_at_k_from_ranks",
    "audio_to_text_metrics",
    "average_precision_at_k",
    "first_relevant_ranks",
    "jackknife_ci",
    "map_at_k",
    "metrics_from_ranks",
    "moment_retrieval_metrics",
    "paired_bootstrap_ci",
    "multi_relevance_metrics",
    "recall_at_k_multi",
    "text_to_audio_metrics",
    "text_to_audio_metrics_from_embeddings",
    "text_to_audio_ranks",
    "text_to_audio_ranks_from_embeddings",
    "topk_audios",
    "topk_audios_from_embeddings",
    "write_dcase_submission",
]
