"""Estimated audio-caption correspondences (the paper's contribution, section 3).

Stage-1 models ("teachers") embed every clip and caption of the training split once; the embeddings
are stored as :class:`TeacherEmbeddings` files. In stage 2, :class:`TeacherEnsemble` turns them into the
estimated correspondences ``C_hat = mean_m C^m`` for each batch, which :func:`soundsift.losses.
distillation_loss` uses as targets. Matrices are laid out ``(n_audio, n_caption)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from soundsift.atomic import atomic_write
from soundsift.errors import AlignmentError, TeacherFileError

__all__ = [
    "AlignmentError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "TeacherEmbeddings",
    "TeacherEnsemble",
    "TeacherFileError",
    "correspondence_auc",
    "ensemble_similarity",
]

FORMAT_NAME = "soundsift.teacher_embeddings"
FORMAT_VERSION = 1


def ensemble_similarity(audio_embs: Sequence[Tensor], caption_embs: Sequence[Tensor]) -> Tensor:
    """``C_hat = 1/M sum_m normalise(audio_m) @ normalise(caption_m).T``, float32 ``(n_audio, n_caption)``.

    Teachers may have different embedding sizes; each pair ``(audio_m, caption_m)`` shares one.
    """
    if len(audio_embs) != len(caption_embs) or len(audio_embs) == 0:
        raise ValueError(
            f"need one caption matrix per audio matrix and at least one teacher, got {len(audio_embs)} "
            f"audio and {len(caption_embs)} caption matrices"
        )
    shape = (audio_embs[0].shape[0], caption_embs[0].shape[0])
    total: Tensor | None = None
    for m, (a, c) in enumerate(zip(audio_embs, caption_embs)):
        if a.dim() != 2 or c.dim() != 2 or a.shape[1] != c.shape[1]:
            raise ValueError(
                f"teacher {m}: audio {tuple(a.shape)} and captions {tuple(c.shape)} must be (n, D)"
            )
        if (a.shape[0], c.shape[0]) != shape:
            raise ValueError(
                f"teacher {m} gives a {(a.shape[0], c.shape[0])} matrix, teacher 0 gives {shape}"
            )
        dtype = torch.promote_types(a.dtype, torch.float32)
        sim = F.normalize(a.to(dtype), dim=1) @ F.normalize(c.to(device=a.device, dtype=dtype), dim=1).T
        total = sim if total is None else total + sim.to(total.device)
    assert total is not None
    return total / len(audio_embs)


def _encode_strings(strings: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Strings -> (uint8 UTF-8 bytes, int64 end offsets); keeps large string lists out of the header."""
    blobs = [s.encode("utf-8") for s in strings]
    ends = torch.tensor([len(b) for b in blobs], dtype=torch.long).cumsum(0)
    data = torch.frombuffer(bytearray(b"".join(blobs)) or bytearray(1), dtype=torch.uint8)
    return data.clone(), ends


def _decode_strings(data: Tensor, ends: Tensor) -> list[str]:
    raw = data.numpy().tobytes()
    out, start = [], 0
    for end in ends.tolist():
        out.append(raw[start:end].decode("utf-8"))
        start = end
    return out


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass(eq=False)
class TeacherEmbeddings:
    """One stage-1 model's embeddings of one training split.

    ``audio`` ``(n_clips, D)`` and ``captions`` ``(n_captions, D)`` are L2-normalised on construction
    (kept in their dtype, e.g. float16 to halve memory); ``caption_clip[j]`` is the index in
    ``clip_ids`` of caption ``j``'s clip. ``meta`` records the model identity, checkpoint path,
    creation time and soundsift version. ``source`` is the file it was loaded from, if any.
    """

    clip_ids: list[str]
    audio: Tensor
    caption_texts: list[str]
    caption_clip: Tensor
    captions: Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self.source or "teacher embeddings"
        self.clip_ids = [str(c) for c in self.clip_ids]
        self.caption_texts = [str(t) for t in self.caption_texts]
        self.caption_clip = torch.as_tensor(self.caption_clip).long().reshape(-1)
        n_clips, n_captions = len(self.clip_ids), len(self.caption_texts)
        for name, t, n in (("audio", self.audio, n_clips), ("captions", self.captions, n_captions)):
            if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[0] != n or not t.is_floating_point():
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise TeacherFileError(f"{where}: {name} must be a float ({n}, D) tensor, got {shape}")
        if self.audio.shape[1] != self.captions.shape[1]:
            raise TeacherFileError(
                f"{where}: audio dim {self.audio.shape[1]} != caption dim {self.captions.shape[1]}"
            )
        if self.caption_clip.numel() != n_captions:
            raise TeacherFileError(
                f"{where}: caption_clip has {self.caption_clip.numel()} entries for {n_captions} captions"
            )
        if n_captions and (int(self.caption_clip.min()) < 0 or int(self.caption_clip.max()) >= n_clips):
            bad = int(((self.caption_clip < 0) | (self.caption_clip >= n_clips)).nonzero()[0])
            raise TeacherFileError(
                f"{where}: caption_clip[{bad}] = {int(self.caption_clip[bad])} is not a clip index in [0, {n_clips})"
            )
        for name, t in (("audio", self.audio), ("captions", self.captions)):
            finite = torch.isfinite(t).all(dim=1)
            if not bool(finite.all()):
                row = int((~finite).nonzero()[0])
                raise TeacherFileError(f"{where}: {name} row {row} contains NaN or inf (a diverged model?)")
        self.audio = _normalised(self.audio)
        self.captions = _normalised(self.captions)

    @property
    def dim(self) -> int:
        return int(self.audio.shape[1])

    def similarity(self) -> Tensor:
        """This teacher's full ``(n_clips, n_captions)`` cosine similarity matrix, float32."""
        return ensemble_similarity([self.audio], [self.captions])

    def check_alignment(
        self, clip_ids: Sequence[str], caption_texts: Sequence[str], caption_clip: Sequence[int] | None = None
    ) -> None:
        """Raise :class:`AlignmentError` unless these embeddings were computed for exactly this split."""
        where = self.source or "teacher embeddings"
        for name, mine, theirs in (
            ("clip_ids", self.clip_ids, [str(c) for c in clip_ids]),
            ("caption_texts", self.caption_texts, [str(t) for t in caption_texts]),
            (
                "caption_clip",
                self.caption_clip.tolist(),
                None if caption_clip is None else torch.as_tensor(caption_clip).reshape(-1).tolist(),
            ),
        ):
            if theirs is None:
                continue
            i = _first_difference(mine, theirs)
            if i is None:
                continue
            if len(mine) != len(theirs) and i == min(len(mine), len(theirs)):
                detail = f"the teacher has {len(mine)} entries, the split has {len(theirs)}"
            else:
                detail = f"index {i} differs: teacher {mine[i]!r} vs split {theirs[i]!r}"
            raise AlignmentError(
                f"{where} was computed for a different dataset or order ({name}: {detail}); "
                "recompute the teacher embeddings for this split"
            )

    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write one ``.safetensors`` file atomically (temp file + ``os.replace``).

        ``dtype`` (e.g. ``torch.float16``) sets the stored precision of the embeddings. Strings are
        stored as UTF-8 byte tensors; ``meta`` (plus format, version and creation time) as JSON in
        the safetensors metadata.
        """
        from safetensors.torch import save_file

        from soundsift.version import __version__

        path = Path(path)
        meta = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **self.meta}
        meta.setdefault("soundsift_version", __version__)
        clip_data, clip_ends = _encode_strings(self.clip_ids)
        text_data, text_ends = _encode_strings(self.caption_texts)
        store = dtype or self.audio.dtype
        if not store.is_floating_point:
            raise TeacherFileError(f"{path}: embeddings must be stored as a float dtype, got {store}")
        tensors = {
            "audio": self.audio.detach().to("cpu", store).contiguous(),
            "captions": self.captions.detach().to("cpu", store).contiguous(),
            "caption_clip": self.caption_clip.cpu().contiguous(),
            "clip_ids_utf8": clip_data,
            "clip_ids_ends": clip_ends,
            "caption_texts_utf8": text_data,
            "caption_texts_ends": text_ends,
        }
        header = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "meta": json.dumps(meta, default=str),
        }
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TeacherEmbeddings:
        """Read a file written by :meth:`save`; format, version and shapes are checked."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise TeacherFileError(f"{path}: no such teacher-embedding file")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except Exception as err:  # safetensors raises its own error types
            raise TeacherFileError(f"{path}: not a readable safetensors file ({err})") from err
        if header.get("format") != FORMAT_NAME:
            raise TeacherFileError(
                f"{path}: not a soundsift teacher-embedding file (format={header.get('format')!r})"
            )
        try:
            version = int(header.get("format_version", ""))
        except ValueError:
            raise TeacherFileError(f"{path}: bad format_version {header.get('format_version')!r}") from None
        if version > FORMAT_VERSION:
            raise TeacherFileError(
                f"{path}: format version {version} is newer than this soundsift reads ({FORMAT_VERSION}); upgrade"
            )
        needed = (
            "audio",
            "captions",
            "caption_clip",
            "clip_ids_utf8",
            "clip_ids_ends",
            "caption_texts_utf8",
            "caption_texts_ends",
        )
        missing = [n for n in needed if n not in tensors]
        if missing:
            raise TeacherFileError(f"{path}: missing tensors {missing}")
        try:
            meta = json.loads(header.get("meta", "{}"))
            clip_ids = _decode_strings(tensors["clip_ids_utf8"], tensors["clip_ids_ends"])
            texts = _decode_strings(tensors["caption_texts_utf8"], tensors["caption_texts_ends"])
        except (ValueError, UnicodeDecodeError) as err:
            raise TeacherFileError(f"{path}: corrupt string or metadata block ({err})") from err
        return cls(
            clip_ids,
            tensors["audio"],
            texts,
            tensors["caption_clip"],
            tensors["captions"],
            meta,
            source=str(path),
        )


def _normalised(x: Tensor) -> Tensor:
    """L2-normalise rows in (at least) float32, keeping the stored dtype; rows already of unit norm
    (within 1e-4) are left untouched, so a save/load round trip is exact."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    if x.numel() == 0 or float((wide.norm(dim=1) - 1).abs().max()) <= 1e-4:
        return x
    return F.normalize(wide, dim=1).to(x.dtype)


class TeacherEnsemble:
    """M aligned teachers; gives ``C_hat`` for any set of clips and captions of the split."""

    def __init__(self, teachers: Sequence[TeacherEmbeddings]) -> None:
        if len(teachers) == 0:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        self.teachers = list(teachers)
        first = self.teachers[0]
        for t in self.teachers[1:]:
            try:
                t.check_alignment(first.clip_ids, first.caption_texts, first.caption_clip)
            except AlignmentError as err:
                raise AlignmentError(f"{err} (compared with {first.source or 'teacher 0'})") from None

    @property
    def clip_ids(self) -> list[str]:
        return self.teachers[0].clip_ids

    @property
    def caption_texts(self) -> list[str]:
        return self.teachers[0].caption_texts

    @property
    def caption_clip(self) -> Tensor:
        return self.teachers[0].caption_clip

    def __len__(self) -> int:
        return len(self.teachers)

    def batch_similarity(
        self, clip_index: Tensor, caption_index: Tensor, device: torch.device | str | None = None
    ) -> Tensor:
        """``C_hat`` for a batch, float32 ``(len(clip_index), len(caption_index))`` on ``device``.

        For a batch of B pairs pass each pair's clip index and caption index (global indices in the
        split): row i is the audio of pair i, column j the caption of pair j.
        """
        clips = _index(clip_index, len(self.clip_ids), "clip_index")
        caps = _index(caption_index, len(self.caption_texts), "caption_index")
        audio = [t.audio[clips.to(t.audio.device)].to(device) for t in self.teachers]
        captions = [t.captions[caps.to(t.captions.device)].to(device) for t in self.teachers]
        return ensemble_similarity(audio, captions)

    def full_similarity(self, device: torch.device | str | None = None) -> Tensor:
        """``C_hat`` over the whole split, ``(n_clips, n_captions)`` float32 (for small splits)."""
        return ensemble_similarity(
            [t.audio.to(device) for t in self.teachers], [t.captions.to(device) for t in self.teachers]
        )


def _index(index: Tensor | Sequence[int], n: int, name: str) -> Tensor:
    idx = torch.as_tensor(index)
    if idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {idx.dtype} {tuple(idx.shape)}")
    idx = idx.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"{name} has values outside [0, {n})")
    return idx


def correspondence_auc(similarity: Tensor, holds: Tensor) -> float:
    """ROC AUC of ``similarity`` as a score for the bool ground truth ``holds`` (same shape).

    Pooled over all entries, rank based: the probability that a random true pair scores higher than a
    random false pair, ties counting one half.
    """
    scores = torch.as_tensor(similarity).detach().reshape(-1).cpu().double()
    truth = torch.as_tensor(holds).reshape(-1).cpu().bool()
    if scores.numel() != truth.numel():
        raise ValueError(f"similarity has {scores.numel()} entries, holds has {truth.numel()}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("similarity contains NaN")
    n_pos = int(truth.sum())
    n_neg = truth.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs true and false pairs, got {n_pos} true and {n_neg} false")
    _, group, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    pos = torch.bincount(group, weights=truth.double(), minlength=counts.numel())
    neg = counts.double() - pos
    neg_below = torch.cumsum(neg, 0) - neg  # false pairs with a strictly lower score
    wins = (pos * neg_below).sum() + 0.5 * (pos * neg).sum()
    return float(wins / (float(n_pos) * float(n_neg)))
