"""A small 2-D CNN audio encoder over the log-mel, trained from scratch (CPU-friendly).

Each block is conv3x3 - BatchNorm - ReLU with a stride that halves the mel and time axes (a strided
convolution pools more cheaply than a convolution followed by a pooling layer); the clip embedding is
the mean over mel bins, then the mean over the clip's valid frames. Frames past a clip's length are
zeroed after every block, so in eval mode a clip's embedding does not depend on how much zero padding
follows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from soundsift.encoders.base import AudioEncoder, no_published_weights
from soundsift.encoders.frontends.mel import AudioFrontEnd, size_preset
from soundsift.encoders.layers import masked_mean, time_mask
from soundsift.encoders.options import CnnCfg
from soundsift.errors import ConfigError

SIZES: dict[str, dict] = {
    "tiny": {"channels": (4, 8, 16)},
    "small": {"channels": (16, 24, 48, 96, 192)},
    "base": {"channels": (32, 64, 128, 256, 512)},
}


def _ceil_div(x: torch.Tensor, d: int) -> torch.Tensor:
    return torch.div(x + d - 1, d, rounding_mode="floor")


class ConvStack(nn.Module):
    """conv3x3 - BatchNorm - ReLU blocks over (B, C, mel, time) that zero frames behind each clip's end."""

    def __init__(
        self, channels: Sequence[int], strides: Sequence[tuple[int, int]], in_channels: int = 1
    ) -> None:
        super().__init__()
        if len(strides) != len(channels):
            raise ConfigError(f"ConvStack: {len(channels)} channels but {len(strides)} strides")
        blocks, c_in = [], in_channels
        for c_out, stride in zip(channels, strides):
            conv = nn.Conv2d(c_in, c_out, 3, stride=tuple(stride), padding=1, bias=False)
            blocks.append(nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.time_strides = [int(s[1]) for s in strides]
        self.to(memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN)

    def forward(
        self, x: torch.Tensor, frames: torch.Tensor, ragged: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        for block, stride in zip(self.blocks, self.time_strides):
            x = block(x)
            frames = _ceil_div(frames, stride)
            if ragged:  # zero the frames behind each clip, as the convolution's padding does at a clip's end
                x = x * time_mask(frames, x.shape[-1])[:, None, None, :].to(x.dtype)
        return x, frames


class CNNEncoder(AudioEncoder):
    """(B, T) waveforms at ``sample_rate`` -> (B, out_dim) with ``out_dim = channels[-1]``.

    ``size`` picks a preset ("tiny", "small" = default, "base"); ``channels`` (one entry per block)
    overrides it. ``strides`` gives each block's (mel, time) stride, default 2 x 2 everywhere.
    ``frontend`` holds keyword arguments for ``AudioFrontEnd`` (norm, spec_augment, ...).
    """

    Options = CnnCfg

    def __init__(
        self,
        size: str = "small",
        channels: Sequence[int] | None = None,
        strides: Sequence[tuple[int, int]] | None = None,
        sample_rate: int = 16000,
        n_mels: int = 64,
        dropout: float = 0.0,
        frontend: dict | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        no_published_weights("cnn", pretrained)
        channels = tuple(channels or size_preset(SIZES, size, "CNNEncoder")["channels"])
        strides = strides if strides is not None else [(2, 2)] * len(channels)
        self.sample_rate = sample_rate
        self.out_dim = channels[-1]
        self.frontend = AudioFrontEnd(sample_rate=sample_rate, n_mels=n_mels, **(frontend or {}))
        self.convs = ConvStack(channels, strides)
        self.dropout = nn.Dropout(dropout)

    @property
    def batch_invariant(self) -> bool:
        """In eval mode each clip of a zero-padded batch (with ``lengths``) embeds as it would alone."""
        return self.frontend.batch_invariant

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mel, frames = self.frontend(waveform, lengths)
        ragged = bool((frames < mel.shape[-1]).any())
        x, frames = self.convs(mel.unsqueeze(1), frames, ragged)  # (B, C, mel', F')
        x = self.dropout(x.mean(2))
        return masked_mean(x, time_mask(frames, x.shape[-1])[:, None, :], dim=-1)
