"""Torch datasets over a SplitData: (clip, caption) pairs for training, clips for embedding.

Captions of a split are numbered in clip order, then caption order within the clip; teacher
embeddings (soundsift.correspondences) use the same numbering, so a batch's global clip and caption
indices address them directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from soundsift.audio import audio_info, load_audio, load_audio_window
from soundsift.data.records import Clip, Problem, ReplacedItem, SplitData
from soundsift.errors import AudioError

log = logging.getLogger(__name__)
PRELOAD_LIMIT_BYTES = 4 << 30
#: PairDataset raises after this many clips in a row fail to decode (a lost disk, not one bad file).
MAX_REPLACEMENTS = 100


def flatten_captions(split: SplitData) -> tuple[list[str], list[int]]:
    """All captions of a split in canonical order, and the clip index of each."""
    texts, clip_of = [], []
    for i, clip in enumerate(split.clips):
        texts.extend(clip.captions)
        clip_of.extend([i] * len(clip.captions))
    return texts, clip_of


class AudioStore:
    """Waveforms of a split's clips at one sample rate, read from the files or held in memory.

    ``readable`` checks every clip's header (frames, rate, channels; no samples are decoded) and
    returns a SplitData of the clips whose header is readable and non-empty; the others become
    Problems, so a long run skips them instead of dying later. A clip with a valid header may still
    fail to decode later: ``get`` then raises AudioError, which PairDataset turns into a replacement.

    Preloading (``preload=True``, or ``"auto"`` while the store holds at most PRELOAD_LIMIT_BYTES,
    judged from the headers before anything is decoded) decodes the split once inside ``readable``:
    that decode is the preload, not an extra pass, and clips that fail to decode become Problems there.
    Preloaded audio lives in one contiguous float32 array per split plus integer offsets, never one
    array per clip: DataLoader workers forked from the main process (Linux's default) share its pages,
    since no per-clip Python object sits on them whose reference count a worker would write. A store
    that is pickled (workers started with ``spawn``/``forkserver``) leaves the preload behind and its
    copy reads from the files, so memory stays bounded whatever the start method.
    """

    def __init__(self, sample_rate: int, preload: bool | str = "auto") -> None:
        self.sample_rate = sample_rate
        self.preload = preload
        self._clear()

    def _clear(self) -> None:
        self._buffers: list[np.ndarray] = []  # one contiguous float32 array per preloaded split
        self._row: dict[str, int] = {}  # path -> row of _buffer_of/_start/_stop
        self._buffer_of = np.zeros(0, dtype=np.int32)
        self._start = np.zeros(0, dtype=np.int64)
        self._stop = np.zeros(0, dtype=np.int64)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_buffers", "_row", "_buffer_of", "_start", "_stop"):
            del state[key]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._clear()

    @property
    def preloaded_bytes(self) -> int:
        """Bytes of audio held in memory."""
        return sum(b.nbytes for b in self._buffers)

    def readable(self, split: SplitData, progress: bool = True) -> SplitData:
        """``split`` without the clips whose header is unreadable or empty (they become Problems)."""
        from tqdm.auto import tqdm

        keep, lengths, problems = [], [], list(split.problems)
        for clip in tqdm(split.clips, desc=f"checking {split.name} audio", disable=not progress, unit="clip"):
            try:
                lengths.append(audio_info(clip.path).length_at(self.sample_rate))
            except AudioError as exc:
                problems.append(Problem(str(clip.path), None, f"skipped: {exc}"))
                continue
            keep.append(clip)
        if self._should_preload(split.name, 4 * sum(lengths)):
            keep = self._preload(split.name, keep, lengths, problems, progress)
        for p in problems[len(split.problems) :]:
            log.warning("%s", p)
        return SplitData(split.name, keep, problems)

    def _should_preload(self, name: str, nbytes: int) -> bool:
        if self.preload is True:
            return True
        if self.preload != "auto":
            return False
        if self.preloaded_bytes + nbytes > PRELOAD_LIMIT_BYTES:
            log.info("not preloading %s audio: %.1f GB would exceed the %.1f GB limit",
                     name, (self.preloaded_bytes + nbytes) / 1e9, PRELOAD_LIMIT_BYTES / 1e9)
            return False
        return True

    def _preload(self, name: str, clips: list[Clip], lengths: list[int], problems: list[Problem],
                 progress: bool) -> list[Clip]:
        """Decode ``clips`` into one buffer; returns those that decoded (the others become Problems)."""
        from tqdm.auto import tqdm

        todo = [(c, n) for c, n in zip(clips, lengths) if str(c.path) not in self._row]
        offsets = np.cumsum([0] + [n for _, n in todo])
        buffer = np.empty(int(offsets[-1]), dtype=np.float32)
        rows, failed = [], set()
        for k, (clip, _) in enumerate(tqdm(todo, desc=f"reading {name} audio", disable=not progress, unit="clip")):
            try:
                wav = load_audio(clip.path, self.sample_rate)
            except AudioError as exc:
                problems.append(Problem(str(clip.path), None, f"skipped: {exc}"))
                failed.add(str(clip.path))
                continue
            stop = int(offsets[k]) + min(len(wav), int(offsets[k + 1] - offsets[k]))  # a header may overstate
            buffer[offsets[k] : stop] = wav[: stop - offsets[k]]
            rows.append((str(clip.path), int(offsets[k]), stop))
        keep = [c for c in clips if str(c.path) not in failed]
        if not rows:
            return keep
        index = len(self._buffers)
        self._buffers.append(buffer)
        first = len(self._start)
        for r, (key, _, _) in enumerate(rows):
            self._row[key] = first + r
        self._buffer_of = np.concatenate([self._buffer_of, np.full(len(rows), index, dtype=np.int32)])
        self._start = np.concatenate([self._start, np.array([r[1] for r in rows], dtype=np.int64)])
        self._stop = np.concatenate([self._stop, np.array([r[2] for r in rows], dtype=np.int64)])
        return keep

    def _held_audio(self, clip: Clip) -> np.ndarray | None:
        row = self._row.get(str(clip.path))
        if row is None:
            return None
        return self._buffers[self._buffer_of[row]][self._start[row] : self._stop[row]]

    def length(self, clip: Clip) -> int:
        """Samples of ``clip`` at the store's rate (from memory or the file's header)."""
        wav = self._held_audio(clip)
        return len(wav) if wav is not None else audio_info(clip.path).length_at(self.sample_rate)

    def window(self, clip: Clip, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)`` of the clip; from a file only those frames are read."""
        wav = self._held_audio(clip)
        if wav is not None:
            return wav[start : start + length]
        return load_audio_window(clip.path, self.sample_rate, start, length)

    def get(self, clip: Clip, max_samples: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
        """The clip's waveform, cut to ``max_samples`` as ``crop`` cuts it (random window when ``rng``
        is given, else the start; the same offset for the same ``rng`` state) but reading only the
        window from the file. Raises AudioError naming the file when it fails to decode."""
        wav = self._held_audio(clip)
        if wav is not None:
            return crop(wav, max_samples, rng)
        if max_samples is None:
            return load_audio(clip.path, self.sample_rate)
        n = audio_info(clip.path).length_at(self.sample_rate)
        if n <= max_samples:
            return load_audio(clip.path, self.sample_rate)
        return load_audio_window(clip.path, self.sample_rate, crop_start(n, max_samples, rng), max_samples)


def crop_start(n: int, max_samples: int, rng: np.random.Generator | None) -> int:
    """Where ``crop`` cuts a waveform of ``n > max_samples`` samples: random with ``rng``, else 0."""
    return int(rng.integers(0, n - max_samples + 1)) if rng is not None else 0


def crop(wav: np.ndarray, max_samples: int | None, rng: np.random.Generator | None) -> np.ndarray:
    """Cut to ``max_samples``: a random window when ``rng`` is given, else the start."""
    if max_samples is None or len(wav) <= max_samples:
        return wav
    start = crop_start(len(wav), max_samples, rng)
    return wav[start : start + max_samples]


@dataclass
class PairBatch:
    waveform: torch.Tensor  # (B, T) zero-padded
    lengths: torch.Tensor  # (B,)
    texts: list[str]
    clip_index: torch.Tensor  # (B,) index of the clip in the split
    caption_index: torch.Tensor  # (B,) global caption index in the split
    # One record per clip that failed to decode while this batch was made (its item was replaced):
    # workers are separate processes, so the batch carries the report.
    problems: list[ReplacedItem] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PairBatch:
        """The batch with its tensors on ``device``. Lightning moves a batch through this method rather
        than rebuilding its fields one by one, which the frozen problem records would refuse."""
        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device, non_blocking=non_blocking)

        return replace(self, waveform=move(self.waveform), lengths=move(self.lengths),
                       clip_index=move(self.clip_index), caption_index=move(self.caption_index))


class PairItem(tuple):
    """``(waveform, caption, clip index, caption index)``; ``problems`` names clips replaced to get it."""

    problems: list[ReplacedItem]

    def __new__(cls, wav: np.ndarray, text: str, clip_i: int, cap_i: int, problems=()) -> PairItem:
        item = super().__new__(cls, (wav, text, clip_i, cap_i))
        item.problems = list(problems)
        return item

    def __reduce__(self):
        return PairItem, (*self, self.problems)


class PairDataset(Dataset):
    """(clip, caption) pairs. ``captions_per_epoch="one"`` yields one random caption per clip.

    Item ``i`` of an epoch is a deterministic function of ``(seed, epoch, i)``: the caption drawn and
    the ``max_seconds`` window (only that window is read from the file). A clip that fails to decode
    is replaced by the next item (in index order, wrapping) whose clip differs, and the failure is
    carried in the item's ``problems``; after MAX_REPLACEMENTS failing clips in a row it raises.
    """

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

    def _clip_of_item(self, i: int) -> int:
        return i if self.one else self.clip_of[i]

    def _item(self, i: int) -> tuple[np.ndarray, str, int, int]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.one:
            clip_i = i
            n = len(self.split.clips[i].captions)
            cap_i = int(self.first_caption[i] + rng.integers(0, n))
        else:
            cap_i, clip_i = i, self.clip_of[i]
        wav = self.store.get(self.split.clips[clip_i], self.max_samples, rng)
        return wav, self.texts[cap_i], clip_i, cap_i

    def __getitem__(self, i: int) -> PairItem:
        problems: list[ReplacedItem] = []
        failed: set[int] = set()
        j, n = i, len(self)
        while True:
            try:
                return PairItem(*self._item(j), problems)
            except AudioError as exc:
                path = str(self.split.clips[self._clip_of_item(j)].path)
                failed.add(self._clip_of_item(j))
                if len(failed) >= min(MAX_REPLACEMENTS, len(self.split.clips)):
                    raise AudioError(f"{exc}; {len(failed)} clips in a row failed to decode") from exc
                while self._clip_of_item(j) in failed:
                    j = (j + 1) % n
                why = str(exc).removeprefix(f"{path}: ")  # the message names the file: the record holds it
                problems.append(ReplacedItem(Problem(path, None, why), i, j))


def pad(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded float32 ``(B, longest)`` batch and the lengths. Filled in numpy and only the
    padding zeroed: row by row copies into a torch tensor took 10-30x longer (one batch of 64 4-s
    clips: about 75-250 ms against 8-10 ms on the 2-core machine), a tenth of the demo's training."""
    sizes = [len(w) for w in waves]
    out = np.empty((len(waves), max(sizes, default=0)), dtype=np.float32)
    for row, (w, n) in enumerate(zip(waves, sizes)):
        out[row, :n] = w
        out[row, n:] = 0.0
    return torch.from_numpy(out), torch.tensor(sizes, dtype=torch.long)


def collate_pairs(items: list[tuple[np.ndarray, str, int, int]]) -> PairBatch:
    waves, texts, clips, caps = zip(*items)
    waveform, lengths = pad(list(waves))
    problems = [p for item in items for p in getattr(item, "problems", ())]
    return PairBatch(waveform, lengths, list(texts), torch.tensor(clips), torch.tensor(caps), problems)


class ClipDataset(Dataset):
    """One item per clip (waveform cut to ``max_seconds`` from the start, only that much read)."""

    def __init__(self, split: SplitData, store: AudioStore, max_seconds: float | None = None) -> None:
        self.split, self.store = split, store
        self.max_samples = None if max_seconds is None else int(max_seconds * store.sample_rate)

    def __len__(self) -> int:
        return len(self.split.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.store.get(self.split.clips[i], self.max_samples), i


def length_grouped_batches(
    lengths: list[int], batch_size: int, max_padding: float | None = None
) -> list[list[int]]:
    """Batches of indices of items of equal or similar length.

    ``max_padding=None``: every batch holds items of exactly one length (no padding is ever needed).
    A number in [0, 1): items sorted by length, longest first (ties in index order), cut into
    consecutive batches of up to ``batch_size``; a batch also ends before an item that would be padded
    by more than ``max_padding`` of the batch's longest length (buckets that bound the padding waste).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_padding is None:
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            groups.setdefault(n, []).append(i)
        return [idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]
    if not 0.0 <= max_padding < 1.0:
        raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        batch = batches[-1] if batches else None
        if batch and len(batch) < batch_size and lengths[i] >= (1.0 - max_padding) * lengths[batch[0]]:
            batch.append(i)
        else:
            batches.append([i])
    return batches
