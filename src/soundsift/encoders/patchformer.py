"""A small patch transformer over the log-mel (PaSST-like), trained from scratch (CPU-friendly).

The log-mel is cut into non-overlapping patches (mel x time), embedded linearly, given learned frequency
and time positional embeddings, and run through pre-norm transformer blocks. During training,
structured patchout drops whole frequency rows and time columns of patches (the same ones for the whole
batch, as PaSST does): a regulariser that also makes training steps cheaper. Inputs longer than the
time positional range (``window_s``) are cut into non-overlapping windows whose embeddings are averaged,
as the paper does with PaSST's 10-s snippets.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn import functional as F

from soundsift.encoders.base import AudioEncoder, no_published_weights
from soundsift.encoders.frontends.mel import AudioFrontEnd, size_preset
from soundsift.encoders.layers import TransformerBlock, masked_mean
from soundsift.encoders.options import PatchformerCfg
from soundsift.errors import ConfigError

SIZES: dict[str, dict] = {
    "tiny": {"dim": 16, "depth": 1, "heads": 2},
    "small": {"dim": 96, "depth": 3, "heads": 4},
    "base": {"dim": 192, "depth": 6, "heads": 4},
}


#: Block parameter names before the shared TransformerBlock (files saved then still load).
_OLD_BLOCK_KEYS = ((r"(blocks\.\d+\.)(qkv|proj)\.", r"\1attn.\2."), (r"(blocks\.\d+\.mlp\.)0\.", r"\1fc1."),
                   (r"(blocks\.\d+\.mlp\.)3\.", r"\1fc2."))


def _count(spec: float, n: int) -> int:
    """A patchout spec (int = count, float in (0, 1) = fraction) -> a count of rows/columns."""
    return int(spec) if float(spec) >= 1 or spec == 0 else int(round(spec * n))


class PatchTransformerEncoder(AudioEncoder):
    """(B, T) waveforms at ``sample_rate`` -> (B, dim).

    ``size`` picks a preset ("tiny", "small" = default, "base"); ``dim``/``depth``/``heads`` override it.
    ``patch`` is (mel bins, frames) per patch; ``n_mels`` must be a multiple of ``patch[0]``.
    ``patchout_freq``/``patchout_time``: rows/columns dropped in training (int = count, float < 1 =
    fraction); time columns are only drawn from those valid for every clip of the batch, and at least one
    row and one column always remain. ``window_s``: the positional range; longer inputs are windowed
    (windows after the first that are shorter than ``min_window_s`` are ignored). ``pooling``: "mean"
    (masked mean of patch tokens) or "cls".
    """

    Options = PatchformerCfg

    def __init__(
        self,
        size: str = "small",
        dim: int | None = None,
        depth: int | None = None,
        heads: int | None = None,
        mlp_ratio: float = 4.0,
        patch: tuple[int, int] = (16, 16),
        window_s: float = 10.0,
        min_window_s: float = 1.0,
        patchout_freq: float = 1,
        patchout_time: float = 0.25,
        pooling: str = "mean",
        dropout: float = 0.0,
        sample_rate: int = 16000,
        n_mels: int = 64,
        frontend: dict | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        no_published_weights("patchformer", pretrained)
        preset = size_preset(SIZES, size, "PatchTransformerEncoder")
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"PatchTransformerEncoder: unknown pooling {pooling!r}; use 'mean' or 'cls'")
        dim, depth, heads = dim or preset["dim"], depth or preset["depth"], heads or preset["heads"]
        self.patch = (int(patch[0]), int(patch[1]))
        if n_mels % self.patch[0]:
            raise ConfigError(
                f"PatchTransformerEncoder: n_mels {n_mels} is not a multiple of patch {self.patch[0]}"
            )
        self.sample_rate, self.out_dim, self.pooling = sample_rate, dim, pooling
        self.patchout_freq, self.patchout_time = patchout_freq, patchout_time
        self.frontend = AudioFrontEnd(sample_rate=sample_rate, n_mels=n_mels, **(frontend or {}))
        self.window_samples = max(1, round(window_s * sample_rate))
        self.min_window_samples = min(self.window_samples, max(1, round(min_window_s * sample_rate)))
        n_freq = n_mels // self.patch[0]
        n_time = math.ceil(int(self.frontend.frames_for(self.window_samples)) / self.patch[1])
        self.embed = nn.Conv2d(1, dim, self.patch, stride=self.patch)
        self.freq_pos = nn.Parameter(torch.randn(1, dim, n_freq, 1) * 0.02)
        self.time_pos = nn.Parameter(torch.randn(1, dim, 1, n_time) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if pooling == "cls" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, dropout=dropout, eps=1e-5) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def batch_invariant(self) -> bool:
        """In eval mode each clip of a zero-padded batch (with ``lengths``) embeds as it would alone."""
        return self.frontend.batch_invariant

    @staticmethod
    def upgrade_state_dict(state_dict: dict, prefix: str = "") -> dict:
        """Rename the block keys of files saved before the shared TransformerBlock (DualEncoder calls it)."""
        out = {}
        for key, value in state_dict.items():
            if key.startswith(prefix):
                rest = key[len(prefix):]
                for pattern, replacement in _OLD_BLOCK_KEYS:
                    rest = re.sub(pattern, replacement, rest, count=1)
                key = prefix + rest
            out[key] = value
        return out

    def patch_tokens(self, mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel (B, n_mels, F) -> patch grid (B, dim, n_freq, n_time) with positions, valid columns (B, n_time)."""
        pt = self.patch[1]
        pad = -mel.shape[-1] % pt
        x = self.embed(F.pad(mel, (0, pad)).unsqueeze(1))
        n_time = x.shape[-1]
        if n_time > self.time_pos.shape[-1]:
            raise ValueError(f"{n_time} time patches exceed the positional range {self.time_pos.shape[-1]}")
        x = x + self.freq_pos + self.time_pos[..., :n_time]
        cols = torch.div(frames + pt - 1, pt, rounding_mode="floor")
        return x, torch.arange(n_time, device=x.device)[None, :] < cols[:, None]

    def patchout(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Structured patchout (training only): drop whole frequency rows and time columns of the grid."""
        if not self.training:
            return x, valid
        n_freq, n_time = x.shape[2], x.shape[3]
        drop_f = min(_count(self.patchout_freq, n_freq), n_freq - 1)
        if drop_f > 0:
            rows = torch.randperm(n_freq)[: n_freq - drop_f].sort().values.to(x.device)
            x = x.index_select(2, rows)
        common = int(valid.sum(1).min())  # columns valid for every clip of the batch
        drop_t = min(_count(self.patchout_time, common), common - 1)
        if drop_t > 0:
            keep = torch.ones(n_time, dtype=torch.bool)
            keep[torch.randperm(common)[:drop_t]] = False
            cols = keep.nonzero().squeeze(1).to(x.device)
            x, valid = x.index_select(3, cols), valid.index_select(1, cols)
        return x, valid

    def _encode(self, waveform: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Embed clips that fit the positional range."""
        mel, frames = self.frontend(waveform, lengths)
        x, valid = self.patchout(*self.patch_tokens(mel, frames))
        b, d, n_freq, n_time = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, n_freq * n_time, dim), row-major over (freq, time)
        mask = valid[:, None, :].expand(b, n_freq, n_time).reshape(b, -1)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(b, -1, -1), tokens], 1)
            mask = F.pad(mask, (1, 0), value=True)
        attn_mask = None if bool(mask.all()) else mask
        for block in self.blocks:
            tokens = block(tokens, attn_mask)
        tokens = self.norm(tokens)
        return tokens[:, 0] if self.cls is not None else masked_mean(tokens, mask[..., None], dim=1)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, total = waveform.shape
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.long, device=waveform.device)
        lengths = torch.as_tensor(lengths, device=waveform.device).long().clamp(1, total)
        win = self.window_samples
        if total <= win:
            return self._encode(waveform, lengths)
        n_win = math.ceil(total / win)
        windows = F.pad(waveform, (0, n_win * win - total)).reshape(batch * n_win, win)
        starts = torch.arange(n_win, device=waveform.device) * win
        win_len = (lengths[:, None] - starts[None, :]).clamp(0, win)  # (B, n_win)
        keep = win_len >= self.min_window_samples
        keep[:, 0] = True
        keep = keep.reshape(-1)
        emb = self._encode(windows[keep], win_len.reshape(-1)[keep])
        owner = torch.arange(batch, device=waveform.device).repeat_interleave(n_win)[keep]
        total_emb = emb.new_zeros(batch, emb.shape[1]).index_add_(0, owner, emb)
        counts = torch.bincount(owner, minlength=batch).to(emb.dtype)
        return total_emb / counts[:, None]
