"""ATST-Frame audio encoder (the paper's "ATST", checkpoint ``atst_as2M.ckpt``), with its own front end.

Front end (ATST-SED / audiossl ``ATSTTransform`` + ``ATSTNorm``; torchaudio defaults spelled out):
16 kHz; ``MelSpectrogram(n_fft=1024, win_length=1024, hop_length=160, f_min=60, f_max=7800, n_mels=64)``
i.e. periodic Hann window, centred reflect-padded STFT, power spectrum, HTK mel filters without
normalisation; ``AmplitudeToDB(power, top_db=80)``: ``10 log10(max(x, 1e-10))`` floored at 80 dB below
the maximum of each snippet (audiossl computes it per clip; torchaudio on a 3-D batch would use one
maximum for the whole batch, which would make embeddings depend on batch mates); clamp to [-50, 80] dB;
min-max scaling with the published statistics ``(x + 79.6482) / (50.6842 + 79.6482) * 2 - 1``.

As in the paper: non-overlapping 10-s snippets (the positional embedding covers 1001 frames), each
zero-padded to 10 s; embedding = mean of the last block's normalised frame tokens (salsa uses
``get_intermediate_layers(n=1, scene=False)`` and averages tokens), over the tokens that cover real
audio, across all snippets of a clip; training-time frequency warping that drops at most 10% of the
highest mel bins and stretches the rest back to 64 bins (bicubic, as ATST's ``RandomResizeCrop``).

The network: ATST-Frame's transformer (Li et al., 2024) with the state-dict layout of the official ``FrameAST``.

Facts from ``Audio-WestlakeU/audiossl`` (``methods/atstframe/audio_transformer.py``) and its copy in
``Audio-WestlakeU/ATST-SED`` (``desed_task/nnet/atst``): 64-bin log-mel input cut into 64x4 patches
(all bins x 4 frames = 40 ms per token), each flattened frequency-major (``f * 4 + t``) and embedded by
``patch_embed.patch_embed`` (a Linear); positional embedding ``pos_embed`` of shape
``(1, 1001 // 4 + 1, D)`` whose entry 0 is unused ("cut" mode adds entries ``1..W``); 12 pre-norm blocks
with bias-free ``qkv`` (same names as PaSST's); final ``norm_frame`` LayerNorm (eps 1e-6);
``mask_embed`` exists for masked pretraining only (kept here as a buffer so the keys match without
leaving an unused parameter for DDP).

``convert_atst_checkpoint`` maps the released Lightning checkpoints (``atst_as2M.ckpt``: keys under
``encoder.encoder.``; pretraining checkpoints: ``model.teacher.encoder.``) to this layout, following
the key mapping ATST-SED uses before its strict load.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from soundsift.encoders.base import AudioEncoder
from soundsift.encoders.export_plan import AudioExportPlan, Call
from soundsift.encoders.frontends.mel import mel_filterbank
from soundsift.encoders.frontends.spectrum import stft_power
from soundsift.encoders.layers import TransformerBlock, average_by_owner, init_vit_weights, split_snippets
from soundsift.encoders.options import ATST_URL, AtstCfg
from soundsift.encoders.pretrained import (
    PretrainedWeights,
    load_pretrained_weights,
    map_keys,
    resolve_pretrained,
)
from soundsift.errors import ConfigError

ATST_FILENAME = "atst_as2M.ckpt"
DB_MIN, DB_MAX = -79.6482, 50.6842
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


_RULES: list[tuple[str, str | None]] = [
    (r"^encoder\.encoder\.teacher_module\.", None),
    (r"^encoder\.encoder\.frame_encoder\.", ""),
    (r"^encoder\.encoder\.", ""),
    (r"^model\.teacher\.encoder\.cls_token$", None),
    (r"^model\.teacher\.encoder\.norm\.", "norm_frame."),
    (r"^model\.teacher\.encoder\.", ""),
]


def convert_atst_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ATST(-Frame) checkpoint keys -> ``FrameAST`` keys; other entries (heads, student) dropped.

    A state dict already in ``FrameAST`` layout is returned unchanged.
    """
    if any(k.startswith(("encoder.encoder.", "model.teacher.encoder.")) for k in state_dict):
        return map_keys(state_dict, _RULES, drop_unmatched=True)
    return dict(state_dict)


ATST_WEIGHTS = PretrainedWeights(
    "atst_as2M", ATST_URL, filename=ATST_FILENAME, convert=convert_atst_checkpoint,
    safe_globals=(argparse.Namespace,), source="ATST-SED README (Google Drive file atst_as2M.ckpt)",
)


class FrameAST(nn.Module):
    """``(N, n_mels, frames)`` normalised log-mels -> ``(N, frames // patch_w, D)`` frame tokens."""

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        n_mels: int = 64,
        patch_w: int = 4,
        spec_w: int = 1001,
    ) -> None:
        super().__init__()
        self.n_mels, self.patch_w = n_mels, patch_w
        self.max_tokens = spec_w // patch_w
        self.patch_embed = nn.Module()
        self.patch_embed.patch_embed = nn.Linear(n_mels * patch_w, embed_dim)
        self.register_buffer("mask_embed", torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.max_tokens + 1, embed_dim))
        self.blocks = nn.ModuleList(
            [TransformerBlock(embed_dim, num_heads, mlp_ratio, qkv_bias=False) for _ in range(depth)]
        )
        self.norm_frame = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_embed, std=0.02)
        self.apply(init_vit_weights)

    def patchify(self, mel: torch.Tensor) -> torch.Tensor:
        """``(N, F, T)`` -> ``(N, T // patch_w, F * patch_w)``, each patch flattened frequency-major."""
        n, f, t = mel.shape
        if f != self.n_mels:
            raise ValueError(f"FrameAST expects {self.n_mels} mel bins, got {f}")
        w = t // self.patch_w
        if w < 1 or w > self.max_tokens:
            raise ValueError(
                f"FrameAST takes {self.patch_w}..{self.max_tokens * self.patch_w + 3} frames, got {t}"
            )
        x = mel[:, :, : w * self.patch_w].reshape(n, f, w, self.patch_w)
        return x.permute(0, 2, 1, 3).reshape(n, w, f * self.patch_w)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.patch_embed(self.patchify(mel))
        x = x + self.pos_embed[:, 1 : x.shape[1] + 1]
        for block in self.blocks:
            x = block(x)
        return self.norm_frame(x)


def htk_mel_filters(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """torchaudio's ``melscale_fbanks(..., norm=None, mel_scale="htk")`` as an ``(n_mels, n_freqs)`` matrix."""
    return mel_filterbank(n_freqs, n_mels, sample_rate, f_min, f_max, scale="htk").T.contiguous()


class ATSTLogMel(nn.Module):
    """``(B, T)`` 16-kHz waveforms -> ``(B, 64, 1 + T // 160)`` min-max scaled log-mels (no parameters)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 60.0,
        f_max: float = 7800.0,
        top_db: float = 80.0,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.top_db = n_fft, hop_length, top_db
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        filters = htk_mel_filters(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max)
        self.register_buffer("filters", filters, persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform.float()
        if x.shape[1] <= self.n_fft // 2:  # reflect padding needs more samples than n_fft // 2
            x = F.pad(x, (0, self.n_fft // 2 + 1 - x.shape[1]))
        with torch.autocast(device_type=x.device.type, enabled=False):
            mel = torch.matmul(self.filters, stft_power(x, self.n_fft, self.hop_length, self.window))
            db = 10.0 * torch.log10(mel.clamp(min=1e-10))
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.top_db).clamp(-50.0, 80.0)
        return (db - DB_MIN) / (DB_MAX - DB_MIN) * 2.0 - 1.0


def warp_rows(spec: torch.Tensor, keep: int) -> torch.Tensor:
    """Keep the lowest ``keep`` frequency rows of ``(N, F, T)`` and stretch them back to ``F`` rows."""
    n_rows, t = spec.shape[1], spec.shape[2]
    if keep >= n_rows:
        return spec
    crop = spec[:, None, :keep, :]
    return F.interpolate(crop, size=(n_rows, t), mode="bicubic", align_corners=True)[:, 0]


def frequency_warp(spec: torch.Tensor, max_drop: float) -> torch.Tensor:
    """Per example, drop the top ``d`` of ``F`` bins, ``d`` uniform in ``0..floor(max_drop * F)``, and
    stretch the rest back to ``F`` bins (so at most ``max_drop`` of the bins are lost)."""
    n_rows = spec.shape[1]
    most = min(int(max_drop * n_rows), n_rows - 1)
    keep = n_rows - torch.randint(most + 1, (spec.shape[0],))
    out = spec.clone()
    for k in keep.unique().tolist():
        rows = (keep == k).nonzero(as_tuple=True)[0].to(spec.device)
        out[rows] = warp_rows(spec[rows], k)
    return out


class ATSTFrameEncoder(AudioEncoder):
    """ATST-Frame encoder: ``(B, T)`` 16-kHz waveforms (+ lengths) -> ``(B, out_dim)`` (768) embeddings.

    ``pretrained`` (default: True for ``size="full"``) downloads ``atst_as2M.ckpt``; ``checkpoint=PATH``
    loads a local copy (the raw Lightning checkpoint or a converted state dict). ``size="tiny"`` builds a
    2-block, 32-wide model with the same front end and token geometry, for tests.
    """

    Options = AtstCfg

    sample_rate = 16000
    #: every snippet is ``segment`` samples whatever the batch, so a clip embeds as it would alone
    batch_invariant = True

    def __init__(
        self,
        pretrained: bool | None = None,
        checkpoint: str | Path | None = None,
        size: str = "full",
        segment_seconds: float = 10.0,
        min_remainder_seconds: float = 0.0,
        freq_warp_max_drop: float = 0.1,
        url: str = ATST_URL,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        pretrained = resolve_pretrained("ATST", size, pretrained, checkpoint)
        if not 0.0 <= freq_warp_max_drop < 1.0:
            raise ConfigError(f"freq_warp_max_drop must be in [0, 1), got {freq_warp_max_drop}")
        self.url, self.freq_warp_max_drop = url, freq_warp_max_drop
        self.segment = int(round(segment_seconds * self.sample_rate))
        self.min_remainder = int(round(min_remainder_seconds * self.sample_rate))
        self.mel = ATSTLogMel(sample_rate=self.sample_rate)
        self.model = FrameAST(**(TINY if size == "tiny" else {}))
        frames = 1 + self.segment // self.mel.hop_length
        if frames // self.model.patch_w > self.model.max_tokens:
            raise ConfigError(
                f"segment_seconds={segment_seconds} gives {frames} frames; ATST's positional embedding "
                f"covers {self.model.max_tokens * self.model.patch_w + 1} (10 s)"
            )
        self.out_dim = self.model.norm_frame.normalized_shape[0]
        if checkpoint is not None or pretrained:
            self.load_pretrained(checkpoint, cache_dir=cache_dir, progress=progress)

    def load_pretrained(
        self, checkpoint: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
    ) -> None:
        """Load ``atst_as2M.ckpt`` (from ``checkpoint`` or the download cache), checking every key."""
        weights = ATST_WEIGHTS if self.url == ATST_URL else replace(ATST_WEIGHTS, url=self.url)
        load_pretrained_weights(self.model, weights, checkpoint, cache_dir, progress)

    def embed_snippets(
        self, snippets: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, segment)`` waveforms -> per-snippet mean of valid frame tokens ``(N, D)`` and token counts."""
        mel = self.mel(snippets)
        if self.training and self.freq_warp_max_drop > 0:
            mel = frequency_warp(mel, self.freq_warp_max_drop)
        tokens = self.model(mel)  # (N, W, D)
        per_token = self.mel.hop_length * self.model.patch_w
        counts = torch.clamp((valid + per_token - 1) // per_token, 1, tokens.shape[1])
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < counts[:, None]
        means = (tokens * mask[..., None].to(tokens.dtype)).sum(dim=1) / counts[:, None].to(tokens.dtype)
        return means, counts

    def export_plan(self) -> AudioExportPlan:
        return AudioExportPlan(core=Call(self, "embed_snippets"), split="snippets", window=self.segment,
                               min_remainder=self.min_remainder, takes_valid=True, weighted=True)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        snippets, owner, valid = split_snippets(waveform, lengths, self.segment, self.min_remainder)
        means, counts = self.embed_snippets(snippets, valid)
        return average_by_owner(means, owner, waveform.shape[0], weights=counts)
