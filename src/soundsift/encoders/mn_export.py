"""How MN (``encoders/mn.py``) exports to ONNX: one core graph with a dynamic time axis.

MN embeds a clip shorter than a snippet at its own length (salsa's ``split_audio`` passes it whole) and
a longer one as zero-padded snippets whose embeddings are averaged; without ``segment_seconds`` every clip
runs whole. Both are the same computation on one piece: the network on the piece as it is (its front end
reflect-pads the piece's own end), the feature map averaged over frequency and over the time steps of
the piece's real samples (``valid``; ``MobileNetEncoder.embed_clips(..., whole=False)``). So the core graph
is that function with a dynamic time axis, and the runtime feeds it each short clip alone, at its own
length, and long clips' snippets at the snippet length (``export.pieces.own_length_pieces``). A clip
alone is what the torch tower computes for it in any batch: its masked forward of a padded batch
(``MobileNetV3.forward_masked``) exists to give each clip exactly that. Pieces of different lengths
therefore never share a run of the graph (a masked graph would need the front end run per clip anyway).
"""

from __future__ import annotations

import torch
from torch import nn

from soundsift.encoders.export_plan import AudioExportPlan


class PieceCore(nn.Module):
    """``(pieces (N, T), valid (N,))`` -> ``(N, out_dim)``: MN on each piece as it is, averaged over the
    time steps of its ``valid`` samples (the padding of a snippet is seen, as in torch)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.train(encoder.training)  # the exporter restores this mode on the encoder afterwards

    def forward(self, pieces: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed_clips(pieces, valid, whole=False)


def mn_export_plan(encoder: nn.Module) -> AudioExportPlan:
    """The plan of a ``MobileNetEncoder``: snippets (short clips alone) or whole clips, mean-pooled."""
    # KaldiLogMel zero-pads an input shorter than ``min_samples`` by a test on its shape, which a traced
    # graph keeps for the traced length only: the runtime pads such pieces instead.
    min_piece = encoder.mel.min_samples
    if encoder.segment is None:
        return AudioExportPlan(core=PieceCore(encoder), split="clips", takes_valid=True, min_piece=min_piece)
    return AudioExportPlan(core=PieceCore(encoder), split="snippets", window=encoder.segment,
                           min_remainder=encoder.min_remainder, takes_valid=True, short_alone=True,
                           min_piece=min_piece)
