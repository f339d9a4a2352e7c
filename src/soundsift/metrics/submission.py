"""The DCASE retrieval submission file: ``caption,file_name_1,...,file_name_k``, written atomically."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from soundsift.atomic import atomic_write


def write_dcase_submission(
    path: str | os.PathLike,
    captions: Sequence[str],
    audio_names: Sequence[str],
    topk_indices: Tensor | Sequence[Sequence[int]],
) -> Path:
    """Write a DCASE retrieval submission CSV (``caption,file_name_1,...,file_name_k``), atomically.

    Row q holds ``captions[q]`` and the names of the audios ``topk_indices[q]``, best first. The file
    is written to a temporary file next to ``path`` and moved into place, so a crash never leaves a
    half-written submission.
    """
    path = Path(path)
    idx = torch.as_tensor(topk_indices, dtype=torch.long).cpu()
    if idx.dim() != 2 or idx.shape[0] != len(captions):
        raise ValueError(
            f"{path}: topk_indices must be (n_captions={len(captions)}, k), got {tuple(idx.shape)}"
        )
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(audio_names)):
        row = int(((idx < 0) | (idx >= len(audio_names))).any(dim=1).nonzero()[0])
        raise ValueError(f"{path}: row {row} of topk_indices has an index outside [0, {len(audio_names)})")
    header = ["caption"] + [f"file_name_{i + 1}" for i in range(idx.shape[1])]
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for caption, row in zip(captions, idx.tolist()):
                writer.writerow([caption] + [audio_names[i] for i in row])

    return atomic_write(path, write)
