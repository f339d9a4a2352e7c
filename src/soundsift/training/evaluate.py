"""Evaluate a model, or an ensemble of models, on a dataset split: DCASE text-to-audio metrics,
audio-to-text, the DCASE 2025 multi-relevance metrics (``relevance=``) and a submission file.

An ensemble (several ``model_path``) scores every (audio, caption) pair by the mean of its members'
cosine similarities; each member embeds the split itself (members may differ in sample rate).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from soundsift.checkpoints.runtime import load_for_runtime
from soundsift.errors import ConfigError, DatasetError
from soundsift.names import TEST_SPLIT
from soundsift.training.embed import embed_dataset


def _model_list(model_path: str | Path | Sequence[str | Path]) -> list[str | Path]:
    models = [model_path] if isinstance(model_path, (str, Path)) else list(model_path)
    if not models:
        raise ConfigError("evaluate: give at least one --model")
    return models


def evaluate(
    model_path: str | Path | Sequence[str | Path],
    data_root: str | Path,
    data_format: str = "clotho",
    split: str = TEST_SPLIT,
    max_seconds: float | None = None,
    batch_size: int = 32,
    submission: str | Path | None = None,
    progress: bool = True,
    *,
    relevance: str | Path | None = None,
    any_query: bool = False,
    runtime: str = "torch",
) -> dict[str, Any]:
    """Text-to-audio mAP@10/R@k (DCASE), audio-to-text R@k, jackknife 95% interval of mAP@10.

    ``model_path``: one model or several (an ensemble: mean cosine similarity; the result then has
    ``members`` with each one's mAP@10 and ``ensemble_gain_mAP@10`` = ensemble minus best member).
    ``relevance``: a relevance file (:mod:`soundsift.data.relevance`) whose query texts are embedded by
    the text tower(s) and scored against the split's clips; the result gets ``multi_relevance`` (see
    :func:`soundsift.metrics.multi_relevance_metrics`; ``mAP@16`` is the DCASE 2025 ranking metric).
    Queries with a file outside the split are left out and counted, and so are queries that are not
    captions of the split unless ``any_query``. ``runtime``: ``"torch"`` or ``"onnx"`` (``checkpoints.runtime``).
    """
    from soundsift import metrics as m
    from soundsift.data.relevance import match_relevance, read_relevance

    models = _model_list(model_path)
    annotations = read_relevance(relevance) if relevance is not None else None  # fail before embedding
    similarities: list[torch.Tensor] = []
    query_similarities: list[torch.Tensor] = []
    matched = None
    ref = data = None
    for path in models:
        model = load_for_runtime(path, runtime)
        emb, split_data = embed_dataset(model, data_format, data_root, split, max_seconds, batch_size, progress)
        if ref is None:
            ref, data = emb, split_data
            if annotations is not None:
                matched = match_relevance(annotations, emb.clip_ids, None if any_query else emb.caption_texts)
                if not matched.texts:
                    shown = "; ".join(matched.examples)
                    raise DatasetError(f"{annotations.path}: none of its {matched.n_read} queries fits split "
                                      f"{split!r} of {data_root} ({shown})")
        elif emb.clip_ids != ref.clip_ids or emb.caption_texts != ref.caption_texts:
            raise ConfigError(f"evaluate: model {path} read other clips or captions of {data_root} than "
                              f"{models[0]} ({len(emb.clip_ids)} vs {len(ref.clip_ids)} clips)")
        similarities.append(emb.audio @ emb.captions.T)  # unit vectors: cosine similarity
        if matched is not None:
            queries = torch.from_numpy(model.embed_texts(matched.texts))
            query_similarities.append(emb.audio @ queries.T)
        del model
    similarity = torch.stack(similarities).mean(dim=0) if len(similarities) > 1 else similarities[0]

    ranks = m.text_to_audio_ranks(similarity, ref.caption_clip)
    mean, low, high = m.jackknife_ci(m.ap_at_k_from_ranks(ranks, 10))
    result: dict[str, Any] = {
        "split": split,
        "n_audio": len(ref.clip_ids),
        "n_captions": len(ref.caption_texts),
        "skipped": [str(p) for p in data.problems],
        "text_to_audio": m.metrics_from_ranks(ranks),
        "text_to_audio_mAP@10_ci95": [low, high],
        "audio_to_text": m.audio_to_text_metrics(similarity, ref.caption_clip),
    }
    rel = None
    if matched is not None:
        rel = torch.from_numpy(matched.relevance)
        query_sim = torch.stack(query_similarities).mean(dim=0) if len(models) > 1 else query_similarities[0]
        multi = m.multi_relevance_metrics(query_sim, rel)
        multi["left_out"] = matched.n_left_out
        multi["left_out_reasons"] = dict(matched.left_out)
        multi["left_out_examples"] = list(matched.examples)
        multi["relevance_file"] = str(annotations.path) if annotations is not None else None
        result["multi_relevance"] = multi
    if len(models) > 1:
        members = []
        for i, (path, sim) in enumerate(zip(models, similarities)):
            own = m.metrics_from_ranks(m.text_to_audio_ranks(sim, ref.caption_clip))
            member: dict[str, Any] = {"model": str(path), "mAP@10": own["mAP@10"]}
            if rel is not None:
                member["mAP@16"] = m.map_at_k(query_similarities[i], rel, 16, normalise="relevant")
            members.append(member)
        result["members"] = members
        result["ensemble_gain_mAP@10"] = result["text_to_audio"]["mAP@10"] - max(x["mAP@10"] for x in members)
        if rel is not None:
            best = max(x["mAP@16"] for x in members)
            result["ensemble_gain_mAP@16"] = result["multi_relevance"]["mAP@16"] - best
    if submission is not None:
        top = m.topk_audios(similarity, k=min(10, len(ref.clip_ids)))
        m.write_dcase_submission(submission, ref.caption_texts, ref.clip_ids, top)
        result["submission"] = str(submission)
    return result
