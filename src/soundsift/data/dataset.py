"""Torch datasets over a SplitData: (clip, caption) pairs for training, clips for embedding.

Captions of a split are numbered in clip order, then caption order within the clip; teacher
embeddings (soundsift.correspondences) use the same numbering, so a batch's global clip and caption
indices address them directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from soundsift.audio import load_audio
from soundsift.data.records import Clip, Problem, SplitData
from soundsift.errors import AudioError

log = logging.getLogger(__name__)
PRELOAD_LIMIT_BYTES = 4 << 30


def flatten_captions(split: SplitData) -> tuple[list[str], list[int]]:
    """All captions of a split in canonical order, and the clip index of each."""
    texts, clip_of = [], []
    for i, clip in enumerate(split.clips):
        texts.extend(clip.captions)
        clip_of.extend([i] * len(clip.captions))
    return texts, clip_of


class AudioStore:
    """Waveforms of a split's clips at one sample rate; held in memory when ``preload``.

    ``load_all`` reads every clip once (with a progress bar) and returns a SplitData holding only the
    readable clips; unreadable ones become Problems, so a long run skips them instead of dying later.
    """

    def __init__(self, sample_rate: int, preload: bool | str = "auto") -> None:
        self.sample_rate = sample_rate
        self.preload = preload
        self._cache: dict[str, np.ndarray] = {}

    def readable(self, split: SplitData, progress: bool = True) -> SplitData:
        from tqdm.auto import tqdm

        keep, problems, total = [], list(split.problems), 0
        hold = self.preload is True or self.preload == "auto"
        for clip in tqdm(split.clips, desc=f"reading {split.name} audio", disable=not progress, unit="clip"):
            try:
                wav = load_audio(clip.path, self.sample_rate)
            except AudioError as exc:
                problems.append(Problem(str(clip.path), None, f"skipped: {exc}"))
                continue
            keep.append(clip)
            total += wav.nbytes
            if hold:
                self._cache[str(clip.path)] = wav
                if self.preload == "auto" and total > PRELOAD_LIMIT_BYTES:
                    hold = False
                    self._cache.clear()
        for p in problems[len(split.problems) :]:
            log.warning("%s", p)
        return SplitData(split.name, keep, problems)

    def get(self, clip: Clip) -> np.ndarray:
        wav = self._cache.get(str(clip.path))
        return wav if wav is not None else load_audio(clip.path, self.sample_rate)


def crop(wav: np.ndarray, max_samples: int | None, rng: np.random.Generator | None) -> np.ndarray:
    """Cut to ``max_samples``: a random window when ``rng`` is given, else the start."""
    if max_samples is None or len(wav) <= max_samples:
        return wav
    start = int(rng.integers(0, len(wav) - max_samples + 1)) if rng is not None else 0
    return wav[start : start + max_samples]


@dataclass
class PairBatch:
    waveform: torch.Tensor  # (B, T) zero-padded
    lengths: torch.Tensor  # (B,)
    texts: list[str]
    clip_index: torch.Tensor  # (B,) index of the clip in the split
    caption_index: torch.Tensor  # (B,) global caption index in the split


class PairDataset(Dataset):
    """(clip, caption) pairs. ``captions_per_epoch="one"`` yields one random caption per clip."""

    def __init__(
        self,
        split: SplitData,
        store: AudioStore,
        captions_per_epoch: str = "all",
        max_seconds: float | None = None,
        seed: int = 0,
    ) -> None:
        self.split, self.store = split, store
        self.texts, self.clip_of = flatten_captions(split)
        self.first_caption = np.cumsum([0] + [len(c.captions) for c in split.clips])
        self.one = captions_per_epoch == "one"
        self.max_samples = None if max_seconds is None else int(max_seconds * store.sample_rate)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split.clips) if self.one else len(self.texts)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str, int, int]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.one:
            clip_i = i
            n = len(self.split.clips[i].captions)
            cap_i = int(self.first_caption[i] + rng.integers(0, n))
        else:
            cap_i, clip_i = i, self.clip_of[i]
        wav = crop(self.store.get(self.split.clips[clip_i]), self.max_samples, rng)
        return wav, self.texts[cap_i], clip_i, cap_i


def pad(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for row, w in enumerate(waves):
        out[row, : len(w)] = torch.from_numpy(w)
    return out, lengths


def collate_pairs(items: list[tuple[np.ndarray, str, int, int]]) -> PairBatch:
    waves, texts, clips, caps = zip(*items)
    waveform, lengths = pad(list(waves))
    return PairBatch(waveform, lengths, list(texts), torch.tensor(clips), torch.tensor(caps))


class ClipDataset(Dataset):
    """One item per clip (waveform cut to ``max_seconds`` from the start), for embedding a split."""

    def __init__(self, split: SplitData, store: AudioStore, max_seconds: float | None = None) -> None:
        self.split, self.store = split, store
        self.max_samples = None if max_seconds is None else int(max_seconds * store.sample_rate)

    def __len__(self) -> int:
        return len(self.split.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return crop(self.store.get(self.split.clips[i]), self.max_samples, None), i


def length_grouped_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Batches of indices whose items all have the same length (so no padding is ever needed)."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n, []).append(i)
    return [idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]
