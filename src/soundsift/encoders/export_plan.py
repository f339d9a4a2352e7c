"""How an encoder exports to ONNX: what part of it becomes a graph and what stays beside it.

An audio tower is cut where its shapes stop depending on the input: the waveform is split into fixed
pieces beside the graph (``split``: the 10-s snippets of PaSST and ATST, YAMNet's 0.96-s patches), the
``core`` graph embeds pieces of a fixed size (front end included), the pieces are pooled per clip beside
it (``pool``), and the ``head`` graph maps the pooled vector to the tower's output. A tower whose graph
does not depend on the input length (``split="whole"``) is exported whole. A tower that embeds a clip
shorter than a piece at its own length (MN) runs pieces of their own length through a core graph with a
dynamic time axis (``split="clips"``, or ``short_alone``). ``soundsift.export`` checks
every export against torch on waveforms of several lengths and refuses one that differs.

A text tower exports as ``core(input_ids, attention_mask)``; its tokenizer (a ``tokenizers`` JSON file)
and the caption normalisation run beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

SPLITS = ("whole", "snippets", "patches", "clips")
POOLS = ("mean", "max", "topk")


@dataclass
class AudioExportPlan:
    """``core``: ``pieces (N, window)`` [, ``valid (N,)`` samples when ``takes_valid``] -> ``(N, F)`` [,
    per-piece weights ``(N,)`` when ``weighted``]; for ``split="whole"``: ``(waveform (B, T), lengths
    (B,))`` -> ``(B, F)``. ``head``: ``(B, F)`` pooled -> ``(B, out_dim)`` (None: the identity).

    ``split="snippets"``: non-overlapping ``window``-sample pieces, the last zero-padded, a trailing one
    under ``min_remainder`` samples dropped (``layers.split_snippets``). ``split="patches"``: pieces of
    ``window`` samples every ``hop``, the clip zero-padded to at least one piece and a whole number of
    hops (YAMNet). ``pool``: ``mean`` (weighted by the core's weights when ``weighted``), ``max``, or
    ``topk`` (mean of the ``pool_k`` largest per feature). ``model_rate`` (0: none): the rate pieces are
    cut at, when the tower resamples its input (soxr, whole clips) before cutting it.

    ``split="clips"``: each clip is one piece of its own length; ``short_alone`` (with ``"snippets"``): a
    clip shorter than ``window`` is one piece of its own length, not zero-padded to the window. Either way
    the core takes pieces of any length (equal within a run) with ``valid``, and a piece shorter than
    ``min_piece`` samples is zero-padded to it first, ``valid`` keeping its length (what the torch front end
    does by a shape test that a traced graph cannot keep)."""

    core: nn.Module
    split: str = "whole"
    window: int = 0
    hop: int = 0
    min_remainder: int = 0
    pool: str = "mean"
    pool_k: int = 1
    takes_valid: bool = False
    weighted: bool = False
    head: nn.Module | None = None
    short_alone: bool = False
    min_piece: int = 0
    model_rate: int = 0


@dataclass
class TextExportPlan:
    """``core``: ``(input_ids (B, L) int64, attention_mask (B, L) int64)`` -> ``(B, out_dim)``;
    ``tokenizer``: a transformers fast tokenizer (its ``backend_tokenizer`` is saved); captions are
    normalised (``lowercase``, ``strip_punctuation``) and cut to ``max_tokens`` tokens beside the graph."""

    core: nn.Module
    tokenizer: Any
    max_tokens: int
    lowercase: bool = True
    strip_punctuation: bool = True


class Call(nn.Module):
    """A module that calls one method of another (so a part of an encoder exports as its own graph)."""

    def __init__(self, owner: nn.Module, method: str) -> None:
        super().__init__()
        self.owner, self.method = owner, method
        self.train(owner.training)  # the exporter restores this mode on the owner afterwards

    def forward(self, *args):
        return getattr(self.owner, self.method)(*args)
