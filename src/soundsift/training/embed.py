"""Embed every clip and caption of a split with a model (evaluation, validation, teacher data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from soundsift.data.dataset import AudioStore, flatten_captions
from soundsift.data.records import SplitData


@dataclass
class SplitEmbeddings:
    clip_ids: list[str]
    audio: torch.Tensor  # (n_clips, D) unit vectors
    caption_texts: list[str]
    caption_clip: torch.Tensor  # (n_captions,) clip index of each caption
    captions: torch.Tensor  # (n_captions, D) unit vectors


def embed_split(
    model,
    split: SplitData,
    store: AudioStore,
    max_seconds: float | None = None,
    batch_size: int = 32,
    progress: bool = True,
    chunk_clips: int = 512,
) -> SplitEmbeddings:
    """Audio and caption embeddings of ``split``; audio read in chunks so memory stays bounded."""
    from tqdm.auto import tqdm

    max_samples = None if max_seconds is None else int(max_seconds * store.sample_rate)
    audio = np.zeros((len(split.clips), model.embed_dim), dtype=np.float32)
    with tqdm(total=len(split.clips), desc=f"embedding {split.name} audio", disable=not progress) as bar:
        for start in range(0, len(split.clips), chunk_clips):
            clips = split.clips[start : start + chunk_clips]
            waves = [store.get(c, max_samples) for c in clips]  # reads only the start crop
            audio[start : start + len(clips)] = model.embed_waveforms(waves, batch_size, progress=bar.update)
    texts, clip_of = flatten_captions(split)
    captions = model.embed_texts(texts)
    return SplitEmbeddings(
        clip_ids=[c.clip_id for c in split.clips],
        audio=torch.from_numpy(audio),
        caption_texts=texts,
        caption_clip=torch.tensor(clip_of, dtype=torch.long),
        captions=torch.from_numpy(captions),
    )


def read_readable_split(
    format: str, root, split: str, sample_rate: int, preload: bool | str = "auto", progress: bool = True
) -> tuple[SplitData, AudioStore]:
    """Read a dataset split and drop clips whose audio cannot be read (they become Problems)."""
    from soundsift.data.readers import read_split

    store = AudioStore(sample_rate, preload)
    return store.readable(read_split(format, root, split), progress=progress), store


def embed_dataset(
    model, format: str, root, split: str, max_seconds: float | None = None, batch_size: int = 32,
    progress: bool = True,
) -> tuple[SplitEmbeddings, SplitData]:
    """Read, filter and embed one split of a dataset with ``model``."""
    data, store = read_readable_split(format, root, split, model.sample_rate, progress=progress)
    return embed_split(model, data, store, max_seconds, batch_size, progress), data


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every process's rows, concatenated in rank order (the processes may hold different numbers).

    Uses the default ``torch.distributed`` group (Lightning's DDP, or torchrun); returns CPU tensors."""
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    rows = rows.to(device)
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([rows.shape[0]], device=device))
    width = int(max(c.item() for c in counts))
    padded = rows.new_zeros((width, *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    parts = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(parts, counts)]).cpu()
