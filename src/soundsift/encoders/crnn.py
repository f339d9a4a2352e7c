"""A small CRNN audio encoder: a conv front over the log-mel, a bidirectional GRU over time, mean pooling.

The conv front (conv3x3 - BatchNorm - ReLU blocks, strided) shrinks the mel and time axes; each remaining
time step's (channels x mel) features go through a bidirectional GRU; the clip embedding is the mean of
the GRU outputs over the clip's valid steps. Clips of different lengths are packed, so the backward GRU
starts at each clip's real end and padding never leaks into the embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from soundsift.encoders.base import AudioEncoder, no_published_weights
from soundsift.encoders.cnn import ConvStack
from soundsift.encoders.frontends.mel import AudioFrontEnd, size_preset
from soundsift.encoders.layers import masked_mean, time_mask
from soundsift.encoders.options import CrnnCfg

SIZES: dict[str, dict] = {
    "tiny": {"channels": (4, 8), "strides": ((2, 2), (4, 2)), "hidden": 8, "layers": 1},
    "small": {"channels": (8, 32, 64), "strides": ((2, 2), (2, 2), (4, 2)), "hidden": 96, "layers": 1},
    "base": {"channels": (32, 64, 128), "strides": ((2, 2), (2, 2), (4, 2)), "hidden": 256, "layers": 2},
}


class CRNNEncoder(AudioEncoder):
    """(B, T) waveforms at ``sample_rate`` -> (B, 2 * hidden).

    ``size`` picks a preset ("tiny", "small" = default, "base"); ``channels``, ``strides`` (per conv
    block, (mel, time)), ``hidden`` (GRU units per direction) and ``layers`` override it.
    """

    Options = CrnnCfg

    def __init__(
        self,
        size: str = "small",
        channels: Sequence[int] | None = None,
        strides: Sequence[tuple[int, int]] | None = None,
        hidden: int | None = None,
        layers: int | None = None,
        sample_rate: int = 16000,
        n_mels: int = 64,
        dropout: float = 0.0,
        frontend: dict | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        no_published_weights("crnn", pretrained)
        preset = size_preset(SIZES, size, "CRNNEncoder")
        channels = tuple(channels or preset["channels"])
        if strides is None:
            strides = preset["strides"] if channels == preset["channels"] else [(2, 2)] * len(channels)
        strides = [tuple(s) for s in strides]
        hidden, layers = hidden or preset["hidden"], layers or preset["layers"]
        self.sample_rate, self.out_dim = sample_rate, 2 * hidden
        self.frontend = AudioFrontEnd(sample_rate=sample_rate, n_mels=n_mels, **(frontend or {}))
        self.convs = ConvStack(channels, strides)
        mel_out = n_mels
        for s in strides:
            mel_out = -(-mel_out // s[0])
        self.gru = nn.GRU(
            channels[-1] * mel_out,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)

    @property
    def batch_invariant(self) -> bool:
        """In eval mode each clip of a zero-padded batch (with ``lengths``) embeds as it would alone."""
        return self.frontend.batch_invariant

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mel, frames = self.frontend(waveform, lengths)
        ragged = bool((frames < mel.shape[-1]).any())
        x, frames = self.convs(mel.unsqueeze(1), frames, ragged)  # (B, C, mel', T')
        x = self.dropout(x.flatten(1, 2).transpose(1, 2))  # (B, T', C * mel')
        if ragged:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, frames.cpu(), batch_first=True, enforce_sorted=False
            )
            out, _ = self.gru(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            out, _ = self.gru(x)
        return masked_mean(out, time_mask(frames, out.shape[1])[..., None], dim=1)
