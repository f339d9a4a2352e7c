"""Evaluate a model on a dataset split: DCASE text-to-audio metrics, audio-to-text, submission file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from soundsift.checkpoints import load_model
from soundsift.training.embed import embed_dataset


def evaluate(
    model_path: str | Path,
    data_root: str | Path,
    data_format: str = "clotho",
    split: str = "evaluation",
    max_seconds: float | None = None,
    batch_size: int = 32,
    submission: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Text-to-audio mAP@10/R@k (DCASE), audio-to-text R@k, jackknife 95% interval of mAP@10."""
    from soundsift import metrics as m

    model = load_model(model_path)
    emb, data = embed_dataset(model, data_format, data_root, split, max_seconds, batch_size, progress)
    similarity = emb.audio @ emb.captions.T
    ranks = m.text_to_audio_ranks(similarity, emb.caption_clip)
    mean, low, high = m.jackknife_ci(m.ap_at_k_from_ranks(ranks, 10))
    result: dict[str, Any] = {
        "split": split,
        "n_audio": len(emb.clip_ids),
        "n_captions": len(emb.caption_texts),
        "skipped": [str(p) for p in data.problems],
        "text_to_audio": m.metrics_from_ranks(ranks),
        "text_to_audio_mAP@10_ci95": [low, high],
        "audio_to_text": m.audio_to_text_metrics(similarity, emb.caption_clip),
    }
    if submission is not None:
        top = m.topk_audios(similarity, k=min(10, len(emb.clip_ids)))
        m.write_dcase_submission(submission, emb.caption_texts, emb.clip_ids, top)
        result["submission"] = str(submission)
    return result
