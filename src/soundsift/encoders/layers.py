"""Pieces several encoders share: transformer blocks, windowing of long audio into snippets and
averaging snippet embeddings per clip, masks and masked pooling over frames or tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from soundsift.errors import ConfigError

# --------------------------------------------------------------------------- transformer blocks


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm ViT layout)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (B, N) bool marks the tokens that may be attended to (None: all)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        p = self.dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """``fc2(dropout(gelu(fc1(x))))``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block (timm layout): ``x + drop(attn(norm1(x)))``, then ``x + drop(mlp(norm2(x)))``.

    PaSST and ATST use it as published (LayerNorm eps 1e-6, no dropout); the patch transformer with
    ``eps=1e-5`` and dropout.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 dropout: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))


def init_vit_weights(module: nn.Module) -> None:
    """timm's ViT init: truncated-normal (std 0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------- snippets of long audio


def split_snippets(
    waveform: torch.Tensor, lengths: torch.Tensor | None, segment: int, min_remainder: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each clip into non-overlapping ``segment``-sample snippets, the last one zero-padded.

    Returns ``(snippets (N, segment), owner (N,) clip index, valid (N,) real samples per snippet)``.
    Samples past a clip's length are zeroed whatever the batch padding held. A clip yields
    ``ceil(length / segment)`` snippets (at least one), minus a trailing one holding fewer than
    ``min_remainder`` samples.
    """
    if waveform.dim() != 2:
        raise ValueError(f"expected waveforms of shape (batch, samples), got {tuple(waveform.shape)}")
    b, t = waveform.shape
    if lengths is None:
        lengths = torch.full((b,), t, dtype=torch.long, device=waveform.device)
    lengths = torch.as_tensor(lengths, device=waveform.device).long()
    if lengths.shape != (b,) or bool((lengths < 1).any()) or bool((lengths > t).any()):
        raise ValueError(f"lengths must be a ({b},) tensor of values in 1..{t}, got {lengths.tolist()}")
    counts = torch.clamp((lengths + segment - 1) // segment, min=1)
    if min_remainder > 0:
        remainder = lengths - (counts - 1) * segment
        counts = torch.where((counts > 1) & (remainder < min_remainder), counts - 1, counts)
    s = int(math.ceil(t / segment))
    x = F.pad(waveform, (0, s * segment - t))
    x = x * (torch.arange(s * segment, device=x.device)[None, :] < lengths[:, None])
    x = x.reshape(b, s, segment)
    keep = torch.arange(s, device=x.device)[None, :] < counts[:, None]
    owner, index = keep.nonzero(as_tuple=True)
    valid = torch.clamp(lengths[owner] - index * segment, 0, segment)
    return x[owner, index], owner, valid


def average_by_owner(values: torch.Tensor, owner: torch.Tensor, n: int, weights: torch.Tensor | None = None):
    """Per-clip (weighted) mean of snippet rows: ``out[i] = mean of values[owner == i]``.

    ``owner`` must be sorted (as ``split_snippets`` returns it). Rows are scattered into a dense
    ``(n, snippets, D)`` tensor and summed, avoiding atomic adds so that GPU results are reproducible.
    """
    w = torch.ones_like(owner, dtype=values.dtype) if weights is None else weights.to(values.dtype)
    counts = torch.bincount(owner, minlength=n)
    position = torch.arange(owner.numel(), device=owner.device) - (torch.cumsum(counts, 0) - counts)[owner]
    width = int(counts.max()) if owner.numel() else 1
    dense = values.new_zeros(n, width, values.shape[1])
    dense[owner, position] = values * w[:, None]
    norm = values.new_zeros(n, width)
    norm[owner, position] = w
    return dense.sum(dim=1) / norm.sum(dim=1).clamp(min=torch.finfo(values.dtype).tiny)[:, None]


# --------------------------------------------------------------------------- masks and pooling


def time_mask(frame_lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(B,) valid frame counts -> (B, n_frames) bool, True on valid frames."""
    return torch.arange(n_frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` (broadcastable) is True."""
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)
