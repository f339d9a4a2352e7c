"""Estimating correspondences: store a trained model's embeddings of a training split as teacher data.

Stage 2 reads M such files and forms C_hat = mean_m C^m per batch (soundsift.correspondences). The
output path chooses the format: ``X.safetensors`` is one file read whole into memory (fine up to
ClothoV2/AudioCaps size); any other path (e.g. ``X.teachers``) is a teacher store directory, float16 and
memory-mapped, opened in milliseconds at WavCaps size.
"""

from __future__ import annotations

from pathlib import Path

from soundsift.checkpoints import load_model
from soundsift.correspondences import TeacherEmbeddings
from soundsift.training.embed import SplitEmbeddings, embed_dataset


def make_teacher(
    model_path: str | Path,
    data_root: str | Path,
    out: str | Path,
    data_format: str = "clotho",
    split: str = "development",
    max_seconds: float | None = None,
    batch_size: int = 32,
    half: bool = False,
    progress: bool = True,
) -> Path:
    """Embed ``split`` with the model at ``model_path`` and save it as a teacher file at ``out``."""
    model = load_model(model_path)
    emb, _ = embed_dataset(model, data_format, data_root, split, max_seconds, batch_size, progress)
    meta = {"model_path": str(model_path), "data_format": data_format, "data_root": str(data_root), "split": split}
    return save_teacher(emb, model.identity, out, meta, half)


def save_teacher(
    emb: SplitEmbeddings, model_identity: str, out: str | Path, meta: dict | None = None, half: bool = False
) -> Path:
    """Save a split's embeddings as teacher data at ``out``: a ``.safetensors`` file (float16 with
    ``half``, else the embeddings' dtype) or, for any other path, a teacher store (always float16)."""
    import torch

    teacher = TeacherEmbeddings(
        clip_ids=emb.clip_ids,
        audio=emb.audio,
        caption_texts=emb.caption_texts,
        caption_clip=emb.caption_clip,
        captions=emb.captions,
        meta={"model_identity": model_identity, **(meta or {})},
    )
    return teacher.save(out, dtype=torch.float16 if half else None)
