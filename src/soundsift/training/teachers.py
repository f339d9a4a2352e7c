"""Estimating correspondences: store a trained model's embeddings of a training split as teacher data.

Stage 2 reads M such files and forms C_hat = mean_m C^m per batch (soundsift.correspondences). The
output path chooses the format: ``X.safetensors`` is one file read whole into memory (fine up to
ClothoV2/AudioCaps size); any other path (e.g. ``X.teachers``) is a teacher store directory, float16 and
memory-mapped, opened in milliseconds at WavCaps size.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from soundsift.checkpoints import load_model
from soundsift.checkpoints.load import PUBLISHED
from soundsift.correspondences import TeacherEmbeddings
from soundsift.data.dataset import flatten_captions
from soundsift.data.records import SplitData
from soundsift.names import TRAIN_SPLIT
from soundsift.training.embed import SplitEmbeddings, embed_split, gather_rows
from soundsift.training.paths import canonical, canonical_ref


def make_teacher(
    model_path: str | Path,
    data_root: str | Path,
    out: str | Path,
    data_format: str = "clotho",
    split: str = TRAIN_SPLIT,
    max_seconds: float | None = None,
    batch_size: int = 32,
    half: bool = False,
    progress: bool = True,
) -> Path:
    """Embed ``split`` with the model at ``model_path`` and save it as a teacher file at ``out``.

    Started as several processes (``torchrun --nproc-per-node N -m soundsift.cli.main teachers ...``),
    each process embeds its contiguous block of the clips, the blocks are gathered in order, and rank 0
    writes the file: the same file as one process writes, N times faster.
    """
    from soundsift.training.embed import read_readable_split

    rank, world = _distributed()
    local = int(os.environ.get("LOCAL_RANK", rank))  # this process's GPU on its node
    model = load_model(model_path, device=f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    data, store = read_readable_split(data_format, data_root, split, model.sample_rate, progress=progress)
    if world > 1:
        per = -(-len(data.clips) // world)
        part = SplitData(data.name, data.clips[rank * per:(rank + 1) * per], [])
        emb = embed_split(model, part, store, max_seconds, batch_size, progress and rank == 0)
        texts, clip_of = flatten_captions(data)
        emb = SplitEmbeddings(
            clip_ids=[c.clip_id for c in data.clips], audio=gather_rows(emb.audio), caption_texts=texts,
            caption_clip=torch.tensor(clip_of, dtype=torch.long), captions=gather_rows(emb.captions),
        )
    else:
        emb = embed_split(model, data, store, max_seconds, batch_size, progress)
    meta = {"model_path": canonical_ref(model_path, PUBLISHED), "data_format": data_format,
            "data_root": canonical(data_root), "split": split}  # readable from any directory (report)
    path = Path(out)
    if rank == 0:
        path = save_teacher(emb, model.identity, out, meta, half)
    if world > 1:
        dist.barrier()  # the file exists when every process returns
    return path


def _distributed() -> tuple[int, int]:
    """``(rank, world size)``; joins the process group when started by torchrun (``WORLD_SIZE`` > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def save_teacher(
    emb: SplitEmbeddings, model_identity: str, out: str | Path, meta: dict | None = None, half: bool = False
) -> Path:
    """Save a split's embeddings as teacher data at ``out``: a ``.safetensors`` file (float16 with
    ``half``, else the embeddings' dtype) or, for any other path, a teacher store (always float16)."""
    teacher = TeacherEmbeddings(
        clip_ids=emb.clip_ids,
        audio=emb.audio,
        caption_texts=emb.caption_texts,
        caption_clip=emb.caption_clip,
        captions=emb.captions,
        meta={"model_identity": model_identity, **(meta or {})},
    )
    return teacher.save(out, dtype=torch.float16 if half else None)
